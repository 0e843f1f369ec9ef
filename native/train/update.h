// The update half of a training batch, once backward has filled the gradients: unscaling
// (fp16's grad scaler), the gradient norm, clipping and the AdamW step, decided in one place
// (ApplyUpdate), plus the bookkeeping around it (the parameters a step works on, those that
// got no gradient, dropping gradients when a batch ends without keeping them). Worker thread,
// the model's and the optimizer's mutexes held. Mirrors PyTorch's scaler.unscale_(opt);
// clip_grad_norm_(params, max_norm); scaler.step(opt); scaler.update(); zero_grad(), with the
// fused AdamW pass (train/fused_adamw.h) where it applies.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <utility>
#include <vector>

#include "module/module_state.h"
#include "train/grad_scaler.h"

namespace torch_bert {

// What the update works on: the module's parameters and the adapters' tensors that hold a
// gradient.
std::vector<torch::Tensor> ParametersWithGrad(ModuleState& state);

// The global L2 norm of the gradients, computed as clip_grad_norm_ does (NaN/Inf propagate).
torch::Tensor GradNormTensor(const std::vector<torch::Tensor>& params);

// clip_grad_norm_'s clipping coefficient for a total norm, as libtorch computes it (a 0-dim
// tensor in the norm's dtype, at most 1; NaN for a NaN norm).
torch::Tensor ClipCoefficient(const torch::Tensor& norm, double maxNorm);

// The optimizer's parameters that require a gradient, each tensor once (a tied weight in two
// groups, or twice in one, counts once), in the optimizer's order: what data-parallel training
// averages (distributed/gradient_reducer.h).
std::vector<torch::Tensor> TrainableParameters(const torch::optim::Optimizer& optimizer);

struct UpdateOptions {
  double maxGradNorm = 0;      // > 0: clip the gradients to this global norm
  bool skipNonFinite = false;  // a NaN/Inf gradient norm skips the step
};

struct UpdateResult {
  std::optional<double> gradNorm;  // before clipping; none when an overflow left it meaningless
  bool skipped = false;            // skipNonFinite and a non-finite norm: no step
  bool overflow = false;           // the grad scaler found Inf/NaN gradients: no step
};

// The end of a training window: with `scaler` (fp16's dynamic loss scaling; null when off),
// the gradients are unscaled first and an overflow skips the step and backs the scale off.
// Then the one decision: when the step needs the norm first (skipNonFinite decides on it,
// maxGradNorm clips by it, or the fused AdamW pass does not apply), the norm is taken, and the
// step runs with the clipping coefficient (fused: applied as each gradient is read; else the
// gradients are scaled in place first, as clip_grad_norm_ does); otherwise the fused pass
// sums the norm as it steps. The scaler then counts a good step. The gradients are left for
// the caller to drop (GradientReset).
UpdateResult ApplyUpdate(ModuleState& model, torch::optim::AdamW& optimizer, GradScaler* scaler,
                         const UpdateOptions& options);

// [group, index] of each optimizer parameter that requires a gradient but has none after
// backward: the loss does not reach it, so AdamW would silently never train it.
std::vector<std::pair<size_t, size_t>> MissingGradients(const torch::optim::Optimizer& optimizer);

// Drops gradients when a training batch ends, so a failed batch cannot leak stale gradients
// into the next one; an accumulate-only batch that succeeds keeps them (Keep()).
class GradientReset {
 public:
  GradientReset(ModuleState& model, torch::optim::Optimizer& optimizer) : model_(model), optimizer_(optimizer) {}
  void Keep() { keep_ = true; }
  ~GradientReset();
  GradientReset(const GradientReset&) = delete;
  GradientReset& operator=(const GradientReset&) = delete;

 private:
  ModuleState& model_;
  torch::optim::Optimizer& optimizer_;
  bool keep_ = false;
};

}  // namespace torch_bert
