// The forward and backward half of a training batch (and the forward of an evaluation batch):
// the classifier on a batch input, checked, as float32 log-probabilities; the loss (NLL, or
// cross-entropy with class weights and label smoothing, as nn.CrossEntropyLoss); backward with
// the loss multiplied by the accumulation weight and the grad scaler's scale (train/batch.h
// names them). What happens to the gradients then is train/update.h. Worker thread, model's
// mutex held. Mirrors the body of a PyTorch training loop before optimizer.step().
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <string>

#include "module/lora_state.h"
#include "module/module_state.h"
#include "train/batch.h"
#include "train/precision.h"

namespace torch_bert {

// A CPU tensor on `device`. To CUDA: through pinned (page-locked) memory with a non-blocking
// copy, which the caching host allocator keeps alive until the copy has run.
torch::Tensor ToDevice(const torch::Tensor& t, const c10::Device& device);

// The classifier's method `name` ("features", "head_forward"), or an error saying to build the
// model with buildClassifier.
torch::jit::Method ClassifierMethod(const torch::jit::Module& module, const std::string& name);

// Runs the classifier on the input and checks it returned [B, C] log-probabilities, as
// float32 whatever the precision. Adapters (if any) take effect in `mode` for the duration of
// the call only (module/method_call.h).
torch::Tensor Forward(ModuleState& state, const BatchInput& input, const c10::Device& device, LoraMode mode,
                      Precision precision);

// Throws when a label is not a class of a model with `classes` classes.
void CheckLabels(const torch::Tensor& labels, int64_t classes);

// Mean loss over the batch. Plain: NLL of the log-probabilities. With class weights or label
// smoothing: cross_entropy on the log-probabilities, which equals nn.CrossEntropyLoss(weight,
// label_smoothing) on the logits since log_softmax is idempotent.
torch::Tensor ComputeLoss(const torch::Tensor& logp, const torch::Tensor& labels, const LossOptions& options);

// What ForwardBackward computed.
struct ForwardBackwardResult {
  torch::Tensor logp;    // [B, C] float32 log-probabilities
  torch::Tensor labels;  // int64 [B] on the device
  torch::Tensor loss;    // the mean loss, before any multiplier
  // skipNonFinite and the loss is NaN/Inf: no backward ran.
  bool nonFiniteLoss = false;
};

// Forward in kTrain mode (autograd on), labels checked, the loss, and backward of
// loss * `lossMultiplier` (the accumulation weight times the grad scaler's scale; a plain
// backward when it is 1). With `skipNonFinite`, a NaN/Inf loss is reported instead of
// differentiated: it never reaches the gradients.
ForwardBackwardResult ForwardBackward(ModuleState& state, const BatchInput& input, const c10::Device& device,
                                      Precision precision, const LossOptions& loss, double lossMultiplier,
                                      bool skipNonFinite);

}  // namespace torch_bert
