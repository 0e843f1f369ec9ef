// trainStep / evalStep: one batch through a classifier on a libuv worker thread.
#pragma once

#include <napi.h>

namespace torch_bert {

// trainStep(model, optimizer, batch, options?) -> Promise<TrainStepResult>
Napi::Value TrainStep(const Napi::CallbackInfo& info);
// evalStep(model, batch) -> Promise<EvalStepResult>
Napi::Value EvalStep(const Napi::CallbackInfo& info);

}  // namespace torch_bert
