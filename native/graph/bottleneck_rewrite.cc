#include "graph/bottleneck_rewrite.h"

#include <torch/csrc/jit/api/function_impl.h>

#include <stdexcept>
#include <utility>

#include "graph/inline_calls.h"
#include "graph/weight_uses.h"

namespace torch_bert {

using torch::jit::Node;
using torch::jit::Value;

bool IsBottleneckActivation(const std::string& name) {
  return name == "relu" || name == "gelu" || name == "swish";
}

BottleneckRewrite RewriteForBottleneck(const torch::jit::Module& module, const torch::jit::Method& method,
                                       const std::vector<torch::jit::Module>& after,
                                       const std::vector<std::string>& paths, const std::string& activation) {
  if (!IsBottleneckActivation(activation))
    throw std::invalid_argument("unknown adapter activation '" + activation + "'");
  std::shared_ptr<torch::jit::Graph> graph = torch::jit::toGraphFunction(method.function()).graph()->copy();
  InlineAll(*graph);
  WeightUses uses(after);
  if (!uses.Trace(*graph, module._ivalue())) {
    throw std::runtime_error("bottleneck adapters: the graph of method '" + method.name() +
                             "' passes module objects where they cannot be followed, so the adapted layers' "
                             "outputs cannot be found in it");
  }
  BottleneckRewrite out;
  for (size_t i = 0; i < after.size(); ++i) {
    if (uses.other[i]) {
      throw std::runtime_error("bottleneck adapters: method '" + method.name() + "' uses the weight of '" +
                               paths.at(i) + "' other than as a linear layer's, so an adapter cannot take its output");
    }
    if (uses.linears[i].empty()) continue;  // not used by this method
    out.applied.push_back(i);
    const std::string tag = "adapter_" + std::to_string(i);
    Value* downWeight = graph->addInput(tag + "_down_weight")->setType(c10::TensorType::get());
    Value* downBias = graph->addInput(tag + "_down_bias")->setType(c10::TensorType::get());
    Value* upWeight = graph->addInput(tag + "_up_weight")->setType(c10::TensorType::get());
    Value* upBias = graph->addInput(tag + "_up_bias")->setType(c10::TensorType::get());
    for (Node* linear : uses.linears[i]) {
      torch::jit::WithInsertPoint insertAfter(linear->next());
      Value* h = linear->output();
      Value* down = graph->insert(c10::aten::linear, {h, downWeight, downBias});
      Value* act = activation == "relu"   ? graph->insert(c10::aten::relu, {down})
                   : activation == "gelu" ? graph->insert(c10::aten::gelu, {down})
                                          : graph->insert(c10::aten::silu, {down});
      Value* up = graph->insert(c10::aten::linear, {act, upWeight, upBias});
      // h + up, then every former use of h takes the sum (the residual inside the adapter).
      Value* sum = graph->insert(c10::aten::add, {h, up});
      h->replaceAllUsesAfterNodeWith(sum->node(), sum);
    }
  }
  graph->lint();
  out.graph = std::move(graph);
  return out;
}

}  // namespace torch_bert
