#include "train/grad_scaler.h"

#include <cmath>
#include <limits>

#include "addon/arguments.h"
#include "addon/errors.h"

namespace torch_bert {

bool GradScaler::Unscale(const std::vector<torch::Tensor>& params) const {
  // As GradScaler.unscale_: multiply by the float32 reciprocal, computed in double.
  const double inverse = static_cast<double>(static_cast<float>(1.0 / scale));
  torch::NoGradGuard noGrad;
  std::vector<torch::Tensor> found;
  found.reserve(params.size());
  for (const auto& p : params) {
    torch::Tensor grad = p.grad();
    if (!grad.defined()) continue;
    grad.mul_(inverse);
    // One flag per tensor, read back once: a single device sync on CUDA.
    found.push_back(grad.isfinite().all().logical_not().reshape({1}));
  }
  if (found.empty()) return false;
  return torch::cat(found).any().item<bool>();
}

void GradScaler::Update(bool foundInf) {
  if (foundInf) {
    scale *= backoffFactor;
    growthTracker = 0;
    return;
  }
  if (++growthTracker >= growthInterval) {
    const double grown = scale * growthFactor;
    // Never grow into Inf (as the fused kernel: the scale stays where it was).
    if (std::isfinite(static_cast<float>(grown))) scale = grown;
    growthTracker = 0;
  }
}

namespace {
const char* const kKey = "torch_bert_grad_scaler";
}

void GradScaler::Save(torch::serialize::OutputArchive& archive) const {
  // One float64 tensor: [scale, growthFactor, backoffFactor, growthInterval, growthTracker].
  torch::Tensor state = torch::tensor(
      {scale, growthFactor, backoffFactor, static_cast<double>(growthInterval), static_cast<double>(growthTracker)},
      torch::kDouble);
  archive.write(kKey, state, /*is_buffer=*/true);
}

void GradScaler::Load(torch::serialize::InputArchive& archive) {
  torch::Tensor state;
  if (!archive.try_read(kKey, state, /*is_buffer=*/true)) return;
  state = state.to(torch::kCPU, torch::kDouble).contiguous();
  if (state.numel() != 5)
    throw std::runtime_error("the gradient scaler's state has " + std::to_string(state.numel()) +
                             " values, expected 5");
  const double* v = state.data_ptr<double>();
  if (!(v[0] > 0) || !std::isfinite(v[0])) throw std::runtime_error("the gradient scaler's saved scale is invalid");
  scale = v[0];
  growthFactor = v[1];
  backoffFactor = v[2];
  growthInterval = static_cast<int64_t>(v[3]);
  growthTracker = static_cast<int64_t>(v[4]);
}

Napi::Object GradScaler::ToJs(Napi::Env env) const {
  Napi::Object out = Napi::Object::New(env);
  out.Set("scale", scale);
  out.Set("growthFactor", growthFactor);
  out.Set("backoffFactor", backoffFactor);
  out.Set("growthInterval", static_cast<double>(growthInterval));
  out.Set("growthTracker", static_cast<double>(growthTracker));
  return out;
}

GradScalerSettings ReadGradScalerSettings(const Napi::Object& options, const std::string& what) {
  Napi::Env env = options.Env();
  GradScalerSettings settings;
  Napi::Value v = options.Get("scale");
  if (!IsMissing(v)) {
    settings.scale = ReadNumber(v, what + ".scale");
    if (!(*settings.scale > 0) || !std::isfinite(static_cast<float>(*settings.scale))) {
      ThrowError(env, what + ".scale must be > 0 and within float32 range");
    }
  }
  v = options.Get("growthFactor");
  if (!IsMissing(v)) {
    settings.growthFactor = ReadNumber(v, what + ".growthFactor");
    if (*settings.growthFactor <= 1) ThrowError(env, what + ".growthFactor must be > 1");
  }
  v = options.Get("backoffFactor");
  if (!IsMissing(v)) {
    settings.backoffFactor = ReadNumber(v, what + ".backoffFactor");
    if (*settings.backoffFactor <= 0 || *settings.backoffFactor >= 1) {
      ThrowError(env, what + ".backoffFactor must be in (0, 1)");
    }
  }
  v = options.Get("growthInterval");
  if (!IsMissing(v)) settings.growthInterval = ReadInteger(v, what + ".growthInterval", 1, int64_t{1} << 40);
  v = options.Get("growthTracker");
  if (!IsMissing(v)) settings.growthTracker = ReadInteger(v, what + ".growthTracker", 0, int64_t{1} << 40);
  return settings;
}

void GradScaler::Configure(const GradScalerSettings& settings) {
  scale = settings.scale.value_or(scale);
  growthFactor = settings.growthFactor.value_or(growthFactor);
  backoffFactor = settings.backoffFactor.value_or(backoffFactor);
  growthInterval = settings.growthInterval.value_or(growthInterval);
  growthTracker = settings.growthTracker.value_or(growthTracker);
}

}  // namespace torch_bert
