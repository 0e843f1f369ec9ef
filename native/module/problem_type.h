// What a classifier's output is, and so which loss trains it: Hugging Face's `problem_type`
// (transformers' BertForSequenceClassification.forward picks its loss by it). Recorded in the
// classifier module as the string attribute `problem_type` (buildClassifier), which the steps
// read; a module without it (saved before it existed, or the MLM model) is single-label.
//   single_label_classification: [B, C] log-probabilities; labels class ids; NLL / cross-entropy.
//   multi_label_classification:  [B, C] logits (a sigmoid per class); labels [B, C] in [0, 1];
//                                BCEWithLogitsLoss.
//   regression:                  [B, C] values; labels [B, C]; MSELoss.
#pragma once

#include <torch/script.h>

#include <string>

namespace torch_bert {

enum class ProblemType { kSingleLabel, kMultiLabel, kRegression };

// transformers' name of `problem`.
const char* ProblemTypeName(ProblemType problem);

// The problem type named `name`, or a std::runtime_error listing the names (`where` says whose).
ProblemType ParseProblemType(const std::string& name, const std::string& where);

// The module's `problem_type` attribute; single-label where it has none.
ProblemType ProblemTypeOf(const torch::jit::Module& module);

}  // namespace torch_bert
