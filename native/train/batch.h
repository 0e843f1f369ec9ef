// What one batch call (trainStep, evalStep, extractFeatures, headTrainStep, headEvalStep) works
// on, as plain C++ data copied out of JS on the main thread: the batch, the classifier input it
// becomes, and the options. Read by train/batch_arguments.h; used on the worker thread by
// train/forward_backward.h, train/update.h and train/train_batch.cc.
//
// Words, one meaning each: a *step* is an optimizer step (AdamW's update), which a training
// batch may or may not end with (accumulateOnly, skips, overflows). Three factors scale
// something and are named apart: the *accumulation weight* (JS `lossScale`: the weight of this
// batch's loss in its window's mean, 1 / window size), the grad scaler's *scale* (fp16's dynamic
// loss scaling, train/grad_scaler.h, as torch.amp.GradScaler) and the *clipping coefficient*
// (clip_grad_norm_'s max_norm / norm, at most 1, train/update.h).
#pragma once

#include <torch/torch.h>

#include <optional>
#include <utility>

#include "train/precision.h"

namespace torch_bert {

// A batch copied out of JS memory on the main thread, so the worker never reads JS-owned
// buffers (which may be detached or overwritten meanwhile).
struct Batch {
  int64_t size = 0;
  int64_t seqLen = 0;
  torch::Tensor inputIds;       // int64 [B, T], CPU
  torch::Tensor attentionMask;  // int64 [B, T], CPU
  // A text pair's segments (0 for the first text, 1 for the second), for an encoder whose forward
  // takes token_type_ids: the classifier's `forward_token_types` / `features_token_types` get them.
  std::optional<torch::Tensor> tokenTypeIds;  // int64 [B, T], CPU
  // Class ids: int64 [B] ([M], one per position, with positions). Multi-label classification and regression
  // (module/problem_type.h): float32 [B * C] targets, row-major, shaped to the output's [B, C].
  std::optional<torch::Tensor> labels;  // CPU
  // The tokens a per-token model predicts, as flat indices into the [B, T] batch (int64 [M],
  // CPU): masked-language modelling's masked tokens (module/mlm_model.h), token classification's
  // labelled words' first tokens (module/classifier.h). The model's forward takes them as a third
  // argument and returns a row per position; labels then hold one class id per position.
  std::optional<torch::Tensor> positions;
};

// What a batch feeds the classifier: a token batch through `forward`, or rows of cached
// features through `head_forward`.
struct BatchInput {
  int64_t size = 0;
  std::optional<Batch> tokens;
  torch::Tensor features;               // [N, H], any device
  torch::Tensor rows;                   // int64 [B], CPU
  std::optional<torch::Tensor> labels;  // as Batch's, CPU
};

inline BatchInput TokenInput(Batch batch) {
  BatchInput input;
  input.size = batch.size;
  input.labels = batch.labels;
  input.tokens = std::move(batch);
  return input;
}

struct LossOptions {
  // Single-label classification's: cross_entropy's weight= and label_smoothing=.
  std::optional<torch::Tensor> classWeights;  // float32 [C], CPU
  double labelSmoothing = 0;
  // Multi-label classification's: binary_cross_entropy_with_logits' pos_weight=.
  std::optional<torch::Tensor> positiveWeights;  // float32 [C], CPU
  bool Plain() const { return !classWeights && labelSmoothing == 0 && !positiveWeights; }
};

// trainStep / headTrainStep options.
struct TrainOptions {
  LossOptions loss;
  double maxGradNorm = 0;
  bool accumulateOnly = false;
  // The accumulation weight (JS `lossScale`, see above): the loss is multiplied by it before
  // backward, so a window's gradients sum to those of its mean loss.
  double accumulationWeight = 1;
  bool skipNonFinite = false;
  // Before updating, list the optimizer's parameters that require a gradient but got none
  // (the trainer asks on its first applied step); any such parameter cancels the update.
  bool checkGradients = false;
  // Data-parallel training (distributed/, JS `averageGradients`): every batch, the ranks agree on
  // a non-finite loss before backward; the window's last batch averages the gradients over the
  // process group while its backward runs (train/forward_backward.h).
  bool averageGradients = false;
  Precision precision = Precision::kFp32;
  // Dynamic loss scaling with the optimizer's GradScaler (JS `gradScaling`); default: on for
  // fp16 only.
  std::optional<bool> gradScaling;
  bool Scaling() const { return gradScaling.value_or(precision == Precision::kFp16); }
};

// evalStep / headEvalStep: loss options and precision.
struct EvalOptions {
  LossOptions loss;
  Precision precision = Precision::kFp32;
};

// extractFeatures: the classifier's method it runs (`features`, or a question-answering model's
// `span_logits`) and the precision.
struct FeatureOptions {
  std::string method = "features";
  Precision precision = Precision::kFp32;
};

}  // namespace torch_bert
