// LoRA's graph pass: a method's graph, inlined, with the adapters in activation space. Each
// `aten::linear(x, W0, b)` whose weight is an adapted submodule's becomes
//   linear(x, W0, b) + scaling * linear(linear(dropout(x), A), B)
// as in PEFT's lora.Linear.forward ("activation space"): the backward pass then costs
// O(N * r * (in + out)) for A and B, where differentiating W0 + s * B @ A would first form the
// full [out, in] gradient (2 * N * in * out FLOPs per adapted matrix, ~7% of a bert-base LoRA
// step). An adapted weight the graph uses in any other way (not as linear's weight, or by a
// graph this analysis cannot follow) is left to weight space (module/lora_state.h,
// LoraWeights).
//
// A TorchScript graph pass (a Graph in, a Graph out), like graph/token_pruning.h and apart
// from it: module/method_call.cc runs the result, pruned or not, and owns the cache. Nothing
// here knows LoRA's state or N-API class (module/lora_adapters.h).
#pragma once

#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <memory>
#include <vector>

namespace torch_bert {

// What RewriteForAdapters made of one method.
struct AdapterRewrite {
  // The method's graph, inlined, with the adapted linears rewritten; its inputs are the
  // method's (self first), then per module in `activation`: A, B, and whether to apply dropout.
  // Null when the graph cannot be followed: every adapter then works in weight space.
  std::shared_ptr<torch::jit::Graph> graph;
  std::vector<size_t> activation;   // indices into `adapted` rewritten in the graph
  std::vector<size_t> weightSpace;  // indices whose weight the graph uses otherwise
};

// Rewrites `method` of `module` for the adapted submodules `adapted` (handles on objects of
// `module`), with adapter dropout `dropout` (the graph's dropout flag inputs decide whether it
// draws) and the adapters' scaling alpha / r. TORCH_BERT_LORA_WEIGHT_SPACE=1 puts every
// adapter in weight space (for comparison, or should a graph defeat the rewrite).
AdapterRewrite RewriteForAdapters(const torch::jit::Module& module, const torch::jit::Method& method,
                                  const std::vector<torch::jit::Module>& adapted, double dropout, double scaling);

}  // namespace torch_bert
