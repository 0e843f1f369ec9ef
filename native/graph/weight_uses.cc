#include "graph/weight_uses.h"

#include <string>

namespace torch_bert {

using torch::jit::Node;
using torch::jit::Value;
using ObjectPtr = c10::intrusive_ptr<c10::ivalue::Object>;

WeightUses::WeightUses(const std::vector<torch::jit::Module>& modules)
    : linears(modules.size()), other(modules.size(), false) {
  for (size_t i = 0; i < modules.size(); ++i) modules_.emplace(modules[i]._ivalue().get(), i);
}

bool WeightUses::Trace(torch::jit::Graph& graph, const ObjectPtr& self) {
  if (graph.inputs().empty()) return false;
  objects_.emplace(graph.inputs()[0], self);
  for (size_t i = 1; i < graph.inputs().size(); ++i) {
    const c10::TypeKind kind = graph.inputs()[i]->type()->kind();
    if (kind == c10::TypeKind::ClassType || kind == c10::TypeKind::InterfaceType) return false;
  }
  return Block(graph.block());
}

bool WeightUses::Block(torch::jit::Block* block) {
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

bool WeightUses::GetAttr(Node* node, const ObjectPtr& object) {
  const std::string& name = node->s(c10::attr::name);
  auto slot = object->type()->findAttributeSlot(name);
  if (!slot) return false;
  c10::IValue value = object->getSlot(*slot);
  if (value.isObject()) {
    objects_.emplace(node->output(), value.toObject());
    return true;
  }
  if (name != "weight") return true;
  auto module = modules_.find(object.get());
  if (module == modules_.end()) return true;
  const size_t i = module->second;
  for (const torch::jit::Use& use : node->output()->uses()) {
    if (use.user->kind() == c10::aten::linear && use.offset == 1) {
      linears[i].push_back(use.user);
    } else {
      other[i] = true;
    }
  }
  return true;
}

}  // namespace torch_bert
