// The forward and backward half of a training batch (and the forward of an evaluation batch):
// the classifier on a batch input, checked, as float32 log-probabilities; the loss (NLL, or
// cross-entropy with class weights and label smoothing, as nn.CrossEntropyLoss); backward with
// the loss multiplied by the accumulation weight and the grad scaler's scale (train/batch.h
// names them). What happens to the gradients then is train/update.h. Worker thread, model's
// mutex held. Mirrors the body of a PyTorch training loop before optimizer.step().
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "distributed/gradient_reducer.h"
#include "module/lora_state.h"
#include "module/module_state.h"
#include "module/problem_type.h"
#include "train/batch.h"
#include "train/precision.h"

namespace torch_bert {

// A CPU tensor on `device`. To CUDA: through pinned (page-locked) memory with a non-blocking
// copy, which the caching host allocator keeps alive until the copy has run.
torch::Tensor ToDevice(const torch::Tensor& t, const c10::Device& device);

// The classifier's method `name` ("features", "head_forward"), or an error saying to build the
// model with buildClassifier.
torch::jit::Method ClassifierMethod(const torch::jit::Module& module, const std::string& name);

// A token batch's call of the classifier's method `name` ("forward", "features"): the method and
// its inputs on `device`. A batch with token type ids (text pairs) calls the method's
// `_token_types` variant, which the classifier has when its encoder takes token_type_ids
// (module/classifier.h); an error says so when it has none.
struct TokenCall {
  torch::jit::Method method;
  std::vector<c10::IValue> inputs;
};
TokenCall TokenMethodCall(const torch::jit::Module& module, const std::string& name, const Batch& batch,
                          const c10::Device& device);

// Runs the classifier on the input and checks it returned [B, C] outputs (log-probabilities,
// logits or values: module/problem_type.h), as float32 whatever the precision. Adapters (if any)
// take effect in `mode` for the duration of the call only (module/method_call.h).
torch::Tensor Forward(ModuleState& state, const BatchInput& input, const c10::Device& device, LoraMode mode,
                      Precision precision);

// The labels as the loss of `problem` takes them, checked against the [B, C] `outputs`: class ids
// below C (single-label), or float targets shaped [B, C] (multi-label: each in [0, 1]; regression).
// Throws when they are not the problem's kind, or do not fit.
torch::Tensor LossTargets(const torch::Tensor& labels, const torch::Tensor& outputs, ProblemType problem);

// Mean loss over the batch, as transformers' sequence classifiers compute it for `problem`.
// Single-label: NLL of the log-probabilities; with class weights or label smoothing,
// cross_entropy on the log-probabilities, which equals nn.CrossEntropyLoss(weight,
// label_smoothing) on the logits since log_softmax is idempotent. Multi-label:
// BCEWithLogitsLoss (mean over every row and class; positive weights are its pos_weight, each
// class's positive targets weighed by its own). Regression: MSELoss. Class weights and label
// smoothing are single-label's alone, positive weights multi-label's.
torch::Tensor ComputeLoss(const torch::Tensor& outputs, const torch::Tensor& targets, const LossOptions& options,
                          ProblemType problem);

// Data-parallel training (distributed/): how a micro-batch's backward takes part in the group.
struct DataParallelStep {
  // Every micro-batch: before backward, the ranks agree whether any rank's loss is non-finite
  // (the global batch's loss then is), so every rank decides to skip, or stop, at the same batch.
  bool agree = false;
  // The window's last micro-batch: backward runs through the reducer, which all-reduces the
  // gradients while backward runs and leaves the group's mean in .grad.
  GradientReducer* reducer = nullptr;
};

// What ForwardBackward computed.
struct ForwardBackwardResult {
  ProblemType problem;    // the model's (module/problem_type.h)
  torch::Tensor outputs;  // [B, C] float32: log-probabilities, logits or values, by `problem`
  torch::Tensor targets;  // LossTargets' labels, on the device
  torch::Tensor loss;     // the mean loss, before any multiplier
  // skipNonFinite and the loss (data-parallel: any rank's) is NaN/Inf: no backward ran.
  bool nonFiniteLoss = false;
  // Data-parallel: some rank's loss was non-finite; the group's value (NaN or ±Inf), which every
  // rank reports in place of its own.
  std::optional<double> groupLoss;
  // Data-parallel, the window's last batch: false when backward left a parameter without a
  // gradient, so the averaging could not finish (the reducer is spent).
  bool averaged = true;
};

// Forward in kTrain mode (autograd on), labels checked, the loss, and backward of
// loss * `lossMultiplier` (the accumulation weight times the grad scaler's scale; a plain
// backward when it is 1). With `skipNonFinite`, a NaN/Inf loss is reported instead of
// differentiated: it never reaches the gradients. Data-parallel (`parallel`): the decision is
// the group's, and the window's last backward averages the gradients as it runs.
ForwardBackwardResult ForwardBackward(ModuleState& state, const BatchInput& input, const c10::Device& device,
                                      Precision precision, const LossOptions& loss, double lossMultiplier,
                                      bool skipNonFinite, const DataParallelStep& parallel = {});

}  // namespace torch_bert
