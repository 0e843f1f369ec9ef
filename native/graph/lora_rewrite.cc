#include "graph/lora_rewrite.h"

#include <torch/csrc/jit/api/function_impl.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "graph/inline_calls.h"
#include "graph/weight_uses.h"

namespace torch_bert {

using torch::jit::Node;
using torch::jit::Value;

AdapterRewrite RewriteForAdapters(const torch::jit::Module& module, const torch::jit::Method& method,
                                  const std::vector<torch::jit::Module>& adapted, double dropout, double scaling) {
  AdapterRewrite out;
  const size_t count = adapted.size();
  // TORCH_BERT_LORA_WEIGHT_SPACE=1: every adapter in weight space (for comparison, or should
  // a graph defeat the rewrite).
  const char* weightSpaceOnly = std::getenv("TORCH_BERT_LORA_WEIGHT_SPACE");
  if (weightSpaceOnly != nullptr && std::strcmp(weightSpaceOnly, "1") == 0) {
    for (size_t i = 0; i < count; ++i) out.weightSpace.push_back(i);
    return out;
  }
  std::shared_ptr<torch::jit::Graph> graph = torch::jit::toGraphFunction(method.function()).graph()->copy();
  InlineAll(*graph);
  WeightUses uses(adapted);
  if (!uses.Trace(*graph, module._ivalue())) {
    for (size_t i = 0; i < count; ++i) out.weightSpace.push_back(i);
    return out;
  }
  const c10::IValue none;
  for (size_t i = 0; i < count; ++i) {
    if (uses.other[i]) {
      out.weightSpace.push_back(i);
      continue;
    }
    if (uses.linears[i].empty()) continue;  // not used by this method
    out.activation.push_back(i);
    const std::string tag = "lora_" + std::to_string(i);
    Value* a = graph->addInput(tag + "_A")->setType(c10::TensorType::get());
    Value* b = graph->addInput(tag + "_B")->setType(c10::TensorType::get());
    Value* dropping = graph->addInput(tag + "_dropout")->setType(c10::BoolType::get());
    for (Node* linear : uses.linears[i]) {
      torch::jit::WithInsertPoint after(linear->next());
      Value* y = linear->output();
      Value* x = linear->input(0);
      if (dropout > 0) x = graph->insert(c10::aten::dropout, {x, dropout, dropping});
      Value* low = graph->insert(c10::aten::linear, {x, a, none});
      Value* delta = graph->insert(c10::aten::linear, {low, b, none});
      // y + scaling * delta, then every former use of y takes the sum.
      // (alpha is keyword-only in add.Tensor; positionally it would match add.Scalar.)
      Value* sum = graph->insert(c10::aten::add, {y, delta}, {torch::jit::NamedValue("alpha", scaling)});
      y->replaceAllUsesAfterNodeWith(sum->node(), sum);
    }
  }
  graph->lint();
  out.graph = std::move(graph);
  return out;
}

}  // namespace torch_bert
