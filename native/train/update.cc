#include "train/update.h"

#include <cmath>
#include <unordered_set>

#include "module/bottleneck_state.h"
#include "module/lora_state.h"
#include "train/fused_adamw.h"
#include "train/optimizer.h"

namespace torch_bert {

namespace {

// Clipping (if maxNorm > 0) and the AdamW step, for a norm already taken. The fused step
// applies the clipping coefficient as it reads each gradient; otherwise the gradients are
// scaled in place first, as clip_grad_norm_ does.
void ClipAndStep(torch::optim::AdamW& optimizer, bool fused, const std::vector<torch::Tensor>& params,
                 const torch::Tensor& norm, double maxNorm) {
  if (fused) {
    FusedAdamWStep(optimizer, maxNorm > 0 ? ClipCoefficient(norm, maxNorm).item<float>() : 1.0f, false);
    return;
  }
  if (maxNorm > 0) {
    torch::NoGradGuard noGrad;
    const torch::Tensor coefficient = ClipCoefficient(norm, maxNorm);
    for (const auto& p : params) p.grad().mul_(coefficient);
  }
  optimizer.step();
}

}  // namespace

std::vector<torch::Tensor> ParametersWithGrad(ModuleState& state) {
  std::vector<torch::Tensor> params;
  for (const auto& p : Parameters(state)) {
    if (p.grad().defined()) params.push_back(p);
  }
  for (const auto& p : LoraParameters(state)) {
    if (p.grad().defined()) params.push_back(p);
  }
  for (const auto& p : BottleneckParameters(state)) {
    if (p.grad().defined()) params.push_back(p);
  }
  return params;
}

std::vector<torch::Tensor> TrainableParameters(const torch::optim::Optimizer& optimizer) {
  std::vector<torch::Tensor> params;
  std::unordered_set<const c10::TensorImpl*> seen;
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& p : group.params()) {
      if (p.requires_grad() && seen.insert(p.unsafeGetTensorImpl()).second) params.push_back(p);
    }
  }
  return params;
}

torch::Tensor GradNormTensor(const std::vector<torch::Tensor>& params) {
  if (params.empty()) return torch::zeros({});
  std::vector<torch::Tensor> norms;
  norms.reserve(params.size());
  for (const auto& p : params) norms.push_back(p.grad().detach().norm(2));
  return norms.size() == 1 ? norms[0] : torch::stack(norms).norm(2);
}

torch::Tensor ClipCoefficient(const torch::Tensor& norm, double maxNorm) {
  return torch::clamp(maxNorm / (norm + 1e-6), c10::nullopt, 1.0);
}

UpdateResult ApplyUpdate(ModuleState& model, torch::optim::AdamW& optimizer, GradScaler* scaler,
                         const UpdateOptions& options) {
  UpdateResult out;
  // Data-parallel: backward left the group's mean gradient on every rank (train/forward_backward.h),
  // so unscaling, the norm, clipping and the skip decision below are the same on every rank.
  std::vector<torch::Tensor> params = ParametersWithGrad(model);
  if (scaler && scaler->Unscale(params)) {
    // Overflow: no step, the caller's GradientReset drops the gradients, and the scale backs
    // off. The loss itself is fine (reported), the gradient norm is meaningless (none).
    out.overflow = true;
    scaler->Update(true);
    return out;
  }
  // The norm before clipping; NaN or Inf are reported, not thrown (clipping then scales by
  // NaN, as PyTorch's clip_grad_norm_ does with error_if_nonfinite=False).
  const bool fused = FusedAdamWApplies(optimizer);
  if (options.skipNonFinite || options.maxGradNorm > 0 || !fused) {
    // The norm comes first: it decides whether to step, or how much to clip.
    const torch::Tensor norm = GradNormTensor(params);
    out.gradNorm = norm.item<double>();
    if (options.skipNonFinite && !std::isfinite(*out.gradNorm)) {
      out.skipped = true;  // no step; the caller's GradientReset drops the poisoned gradients
    } else {
      ClipAndStep(optimizer, fused, params, norm, options.maxGradNorm);
    }
  } else {
    // Nothing to clip: the norm is summed in the optimizer's own pass over the gradients.
    out.gradNorm = FusedAdamWStep(optimizer, 1.0f, true);
  }
  if (scaler) scaler->Update(false);
  return out;
}

std::vector<std::pair<size_t, size_t>> MissingGradients(const torch::optim::Optimizer& optimizer) {
  std::vector<std::pair<size_t, size_t>> missing;
  const auto& groups = optimizer.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& params = groups[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].requires_grad() && !params[i].grad().defined()) missing.emplace_back(g, i);
    }
  }
  return missing;
}

GradientReset::~GradientReset() {
  if (keep_) return;
  try {
    ClearGradients(optimizer_);
    // Parameters that require grad but are not in the optimizer would otherwise
    // accumulate gradients forever.
    for (const auto& p : Parameters(model_)) {
      if (p.grad().defined()) {
        torch::Tensor param = p;
        param.mutable_grad() = torch::Tensor();
      }
    }
    for (auto& p : LoraParameters(model_)) {
      if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
    }
    for (auto& p : BottleneckParameters(model_)) {
      if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
    }
  } catch (...) {
  }
}

}  // namespace torch_bert
