// The batch calls of the binding: trainStep / evalStep and the frozen-encoder technique
// (extractFeatures, headTrainStep, headEvalStep), each one batch through a classifier on a
// libuv worker thread (train/batch_worker.h). The JS names keep "step"; in C++ a step is an
// optimizer step only, which a training batch ends with unless it accumulates, skips or
// overflows (train/batch.h). Arguments: train/batch_arguments.h; the work:
// train/forward_backward.h, then train/update.h.
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
