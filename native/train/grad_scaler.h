// Dynamic loss scaling for fp16 training, as torch.amp.GradScaler: the loss is multiplied by
// `scale` before backward so small fp16 gradients do not flush to zero; before clipping, the
// gradients are divided by it again. When they hold an Inf/NaN (an overflow), the optimizer
// step is skipped and the scale is multiplied by `backoffFactor`; after `growthInterval`
// steps in a row without one, it is multiplied by `growthFactor`.
//
// The state lives with the optimizer (OptimizerState::scaler) and is saved and loaded with it
// (AdamW.save/load), so a resumed fp16 run continues with the scale it had.
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace torch_bert {

// The fields AdamW.setGradScaler's `options` give (scale, growthFactor, backoffFactor,
// growthInterval, growthTracker), validated; absent ones stay unset. Main thread, before the
// optimizer's lock is taken: reading runs the options' getters, JS that may use the optimizer
// (its lock, taken again on this thread, would never be released) or dispose it.
struct GradScalerSettings {
  std::optional<double> scale;
  std::optional<double> growthFactor;
  std::optional<double> backoffFactor;
  std::optional<int64_t> growthInterval;
  std::optional<int64_t> growthTracker;
};
GradScalerSettings ReadGradScalerSettings(const Napi::Object& options, const std::string& what);

struct GradScaler {
  // torch.amp.GradScaler's defaults.
  double scale = 65536.0;
  double growthFactor = 2.0;
  double backoffFactor = 0.5;
  int64_t growthInterval = 2000;
  // Steps in a row without Inf/NaN gradients since the scale last changed.
  int64_t growthTracker = 0;

  // Divides the gradients of `params` by the scale, in place. Returns true when any of them
  // holds an Inf or NaN (after which the gradients are garbage: skip the step).
  bool Unscale(const std::vector<torch::Tensor>& params) const;
  // After a window's end: back off on overflow, else count towards growth.
  void Update(bool foundInf);

  // Under the keys `torch_bert_grad_scaler.*` of an optimizer archive; Load keeps the defaults
  // when the archive has none (an optimizer saved before fp16 existed).
  void Save(torch::serialize::OutputArchive& archive) const;
  void Load(torch::serialize::InputArchive& archive);

  Napi::Object ToJs(Napi::Env env) const;
  // Sets the fields given (ReadGradScalerSettings).
  void Configure(const GradScalerSettings& settings);
};

}  // namespace torch_bert
