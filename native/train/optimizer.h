// The JS `AdamW` class: torch::optim::AdamW with parameter groups.
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <string>

#include "train/grad_scaler.h"

namespace torch_bert {

class GradientReducer;  // distributed/gradient_reducer.h

struct OptimizerState {
  explicit OptimizerState(std::unique_ptr<torch::optim::AdamW> o) : optimizer(std::move(o)) {}
  // Taken after the model's mutex by trainStep; alone by the optimizer's own methods.
  std::mutex mutex;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  // Loss scaling of fp16 steps (used by trainStep when scaling is on); saved with the optimizer.
  GradScaler scaler;
  // Data-parallel training: the reducer over the optimizer's trainable parameters, built on the
  // first averaged step (train/train_batch.cc) and kept for the trainee's life (its hooks stay
  // on those parameters).
  std::shared_ptr<GradientReducer> reducer;
};
using OptimizerStatePtr = std::shared_ptr<OptimizerState>;

// Drops the gradients of all of the optimizer's parameters (set to none, as Python's
// zero_grad() does by default since 2.0), which also frees their memory.
void ClearGradients(torch::optim::Optimizer& optimizer);

class AdamW : public Napi::ObjectWrap<AdamW> {
 public:
  static Napi::Function Define(Napi::Env env);

  // The state behind a JS value. TypeError when not an AdamW, Error when disposed.
  static OptimizerStatePtr Get(const Napi::Value& value, const std::string& what);

  // Shadows ObjectWrap::Unwrap (called on `this` before every method and accessor): a
  // TypeError unless `receiver` was made by this class (wrap_tag.h).
  static AdamW* Unwrap(const Napi::Object& receiver);

  // new AdamW(groups)
  explicit AdamW(const Napi::CallbackInfo& info);

 private:
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value ZeroGrad(const Napi::CallbackInfo& info);
  Napi::Value GetLr(const Napi::CallbackInfo& info);
  Napi::Value SetLr(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value GetGradScaler(const Napi::CallbackInfo& info);
  Napi::Value SetGradScaler(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  const OptimizerStatePtr& Checked(Napi::Env env) const;

  OptimizerStatePtr state_;
};

}  // namespace torch_bert
