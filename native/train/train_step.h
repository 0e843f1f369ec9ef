// trainStep / evalStep and the frozen-encoder technique (extractFeatures, headTrainStep,
// headEvalStep): one batch through a classifier on a libuv worker thread.
#pragma once

#include <napi.h>

namespace torch_bert {

// trainStep(model, optimizer, batch, options?) -> Promise<TrainStepResult>
Napi::Value TrainStep(const Napi::CallbackInfo& info);
// evalStep(model, batch, loss?) -> Promise<EvalStepResult>
Napi::Value EvalStep(const Napi::CallbackInfo& info);
// extractFeatures(model, batch) -> Promise<Tensor [B, H]>
Napi::Value ExtractFeatures(const Napi::CallbackInfo& info);
// headTrainStep(model, optimizer, features, rows, labels, options?) -> Promise<TrainStepResult>
Napi::Value HeadTrainStep(const Napi::CallbackInfo& info);
// headEvalStep(model, features, rows, labels | null, loss?) -> Promise<EvalStepResult>
Napi::Value HeadEvalStep(const Napi::CallbackInfo& info);

}  // namespace torch_bert
