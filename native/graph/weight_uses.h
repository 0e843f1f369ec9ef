// Which `aten::linear` nodes of an inlined method graph take the `weight` of given submodules:
// the analysis both adapter rewrites start from (graph/lora_rewrite.h puts LoRA's low-rank path
// next to those linears, graph/bottleneck_rewrite.h a bottleneck adapter after them). It follows
// the module objects from `self` through prim::GetAttr, so it finds a submodule by identity,
// whatever its path or the shape of the graph that reaches it.
#pragma once

#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <unordered_map>
#include <vector>

namespace torch_bert {

class WeightUses {
 public:
  // `modules`: handles on objects of the module whose graph is traced.
  explicit WeightUses(const std::vector<torch::jit::Module>& modules);

  // Follows `graph` (inlined, `self` its first input). False when a module object flows anywhere
  // but into prim::GetAttr (then the graph could reach a weight in a way this analysis does not
  // see) or another input is an object.
  bool Trace(torch::jit::Graph& graph, const c10::intrusive_ptr<c10::ivalue::Object>& self);

  std::vector<std::vector<torch::jit::Node*>> linears;  // per module: the linear nodes taking its weight
  std::vector<bool> other;                              // per module: its weight has another use

 private:
  bool Block(torch::jit::Block* block);
  bool GetAttr(torch::jit::Node* node, const c10::intrusive_ptr<c10::ivalue::Object>& object);

  std::unordered_map<const c10::ivalue::Object*, size_t> modules_;
  std::unordered_map<const torch::jit::Value*, c10::intrusive_ptr<c10::ivalue::Object>> objects_;
};

}  // namespace torch_bert
