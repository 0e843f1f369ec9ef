// The bottleneck adapters' graph pass (Houlsby et al. 2019, Pfeiffer et al. 2020): a method's
// graph, inlined, with `h + up(act(down(h)))` inserted after the output of chosen linear
// layers (the sub-layers' output projections `attention.output.dense` and `output.dense`, before
// their dropout, residual add and LayerNorm), like graph/lora_rewrite.h without re-tracing.
// Unlike LoRA's, these adapters cannot be merged into a weight: every forward that reaches an
// adapted linear runs this graph, and a saved model carries the adapters in its graph
// (module/bottleneck_save.h turns the adapter inputs into attributes).
//
// A TorchScript graph pass (a Graph in, a Graph out), apart from token pruning, which
// module/method_call.cc applies to the result. Nothing here knows the adapters' state or N-API
// class (module/bottleneck_state.h, module/bottleneck_adapters.h).
#pragma once

#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <memory>
#include <string>
#include <vector>

namespace torch_bert {

// The adapter's non-linearity: relu, gelu (erf) or swish (SiLU), AdapterHub's names.
bool IsBottleneckActivation(const std::string& name);

// What RewriteForBottleneck made of one method.
struct BottleneckRewrite {
  // The method's graph, inlined, with the adapters inserted; its inputs are the method's (self
  // first), then per module in `applied`: down.weight [m, H], down.bias [m], up.weight [H, m],
  // up.bias [H].
  std::shared_ptr<torch::jit::Graph> graph;
  std::vector<size_t> applied;  // indices into `after` of the linears the method uses
};

// Rewrites `method` of `module`, adding an adapter after every aten::linear that takes the
// weight of a module in `after` (handles on objects of `module`). Throws std::runtime_error
// when the graph cannot be followed or uses such a weight other than as a linear's (the adapter
// then has no output to take).
BottleneckRewrite RewriteForBottleneck(const torch::jit::Module& module, const torch::jit::Method& method,
                                       const std::vector<torch::jit::Module>& after,
                                       const std::vector<std::string>& paths, const std::string& activation);

}  // namespace torch_bert
