#include "graph/lora_rewrite.h"

#include <torch/csrc/jit/api/function_impl.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>

#include "graph/inline_calls.h"

namespace torch_bert {

namespace {

using torch::jit::Node;
using torch::jit::Value;
using ObjectPtr = c10::intrusive_ptr<c10::ivalue::Object>;

// Follows the module objects through the inlined graph (from `self` via prim::GetAttr) and
// finds, for each adapted module, the aten::linear nodes that take its weight. Fails (returns
// false) when a module object flows anywhere but into prim::GetAttr: then the graph could
// reach a weight in a way this analysis does not see.
class AdapterUses {
 public:
  explicit AdapterUses(const std::vector<torch::jit::Module>& adapted)
      : linears(adapted.size()), other(adapted.size(), false) {
    for (size_t i = 0; i < adapted.size(); ++i) adapted_.emplace(adapted[i]._ivalue().get(), i);
  }

  bool Trace(torch::jit::Graph& graph, const ObjectPtr& self) {
    if (graph.inputs().empty()) return false;
    objects_.emplace(graph.inputs()[0], self);
    for (size_t i = 1; i < graph.inputs().size(); ++i) {
      const c10::TypeKind kind = graph.inputs()[i]->type()->kind();
      if (kind == c10::TypeKind::ClassType || kind == c10::TypeKind::InterfaceType) return false;
    }
    return Block(graph.block());
  }

  std::vector<std::vector<Node*>> linears;  // per adapted module: the linear nodes using its weight
  std::vector<bool> other;                  // per adapted module: its weight has another use

 private:
  bool Block(torch::jit::Block* block) {
    for (Node* node : block->nodes()) {
      if (node->kind() == c10::prim::GetAttr) {
        auto known = objects_.find(node->input(0));
        if (known != objects_.end() && !GetAttr(node, known->second)) return false;
      } else {
        for (Value* input : node->inputs()) {
          if (objects_.count(input)) return false;  // a module passed to something else
        }
      }
      for (torch::jit::Block* sub : node->blocks()) {
        if (!Block(sub)) return false;
      }
    }
    for (Value* output : block->return_node()->inputs()) {
      if (objects_.count(output)) return false;
    }
    return true;
  }

  bool GetAttr(Node* node, const ObjectPtr& object) {
    const std::string& name = node->s(c10::attr::name);
    auto slot = object->type()->findAttributeSlot(name);
    if (!slot) return false;
    c10::IValue value = object->getSlot(*slot);
    if (value.isObject()) {
      objects_.emplace(node->output(), value.toObject());
      return true;
    }
    if (name != "weight") return true;
    auto adapted = adapted_.find(object.get());
    if (adapted == adapted_.end()) return true;
    const size_t i = adapted->second;
    for (const torch::jit::Use& use : node->output()->uses()) {
      if (use.user->kind() == c10::aten::linear && use.offset == 1) {
        linears[i].push_back(use.user);
      } else {
        other[i] = true;
      }
    }
    return true;
  }

  std::unordered_map<const c10::ivalue::Object*, size_t> adapted_;
  std::unordered_map<const Value*, ObjectPtr> objects_;
};

}  // namespace

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
  AdapterUses uses(adapted);
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
