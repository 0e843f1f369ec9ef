#include "module/problem_type.h"

#include <stdexcept>

namespace torch_bert {

const char* ProblemTypeName(ProblemType problem) {
  switch (problem) {
    case ProblemType::kMultiLabel:
      return "multi_label_classification";
    case ProblemType::kRegression:
      return "regression";
    case ProblemType::kSingleLabel:
      break;
  }
  return "single_label_classification";
}

ProblemType ParseProblemType(const std::string& name, const std::string& where) {
  for (ProblemType p : {ProblemType::kSingleLabel, ProblemType::kMultiLabel, ProblemType::kRegression}) {
    if (name == ProblemTypeName(p)) return p;
  }
  throw std::runtime_error(where +
                           " must be 'single_label_classification', 'multi_label_classification' or 'regression', "
                           "got '" +
                           name + "'");
}

ProblemType ProblemTypeOf(const torch::jit::Module& module) {
  if (!module.hasattr("problem_type")) return ProblemType::kSingleLabel;
  const c10::IValue value = module.attr("problem_type");
  if (!value.isString()) throw std::runtime_error("the model's problem_type attribute is not a string");
  return ParseProblemType(value.toStringRef(), "the model's problem_type attribute");
}

}  // namespace torch_bert
