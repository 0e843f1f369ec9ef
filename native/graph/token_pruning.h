// Token pruning: a graph pass that rewrites a method's inlined graph so that it computes only
// the token rows its result depends on, and PrunedFunction, the pruned graph a method runs as.
// A TorchScript graph pass in the manner of torch/csrc/jit/passes/ (a Graph in, a Graph out);
// it knows nothing of modules, adapters or N-API: module/method_call.h decides which graph it
// prunes (the method's own, or LoRA's rewritten one, graph/lora_rewrite.h).
//
// Why: a classifier with [CLS] pooling reads one row of the encoder's last hidden
// state (`h[:, 0]`), yet the traced encoder computes every row of its last layer. Only the
// keys and values of that layer need all tokens; its query projection, attention rows,
// output projection, LayerNorms and feed-forward block matter for token 0 alone. The pass
// starts at each `aten::select(x, dim, 0)` and pushes the narrowing `x[..., 0:1, ...]` up
// through the ops that compute x, as far as every use of a value wants only its first row:
// per-row ops (linear, layer_norm over the last dims, element-wise ops with broadcasting,
// softmax over another dim, GELU), batched matmul (rows of the left operand), and views and
// permutations that keep the dim. Where the full value is needed anyway (the layer's input
// feeds the keys and values) it takes a slice of it. The rewritten graph computes the same
// function, so the same loss and the same gradients, with less work: for a 2-layer encoder
// ~40% fewer FLOPs per step, for 12 layers ~6%.
//
// The pass does not push through anything random (dropout in training mode): those ops see
// the same tensors and draw the same random numbers as before, so a seeded run keeps its
// numbers. It needs each value's rank, which a traced graph does not record: the first call
// of the method runs an instrumented copy once on its first example (no autograd, outside
// autocast, random-number state restored) to learn the sizes, then the pruned graph runs,
// that call included.
// TORCH_BERT_TOKEN_PRUNING=0 (or setTokenPruning(false)) turns it off.
#pragma once

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace torch_bert {

// Whether the pass runs: TORCH_BERT_TOKEN_PRUNING at load (on unless "0"), then
// setTokenPruning(on) (module/script_module.h registers it). Process-wide.
bool TokenPruningEnabled();
void SetTokenPruning(bool on);

// Replaces `graph` (inlined; its inputs as `inputs`, self first) by one that computes only the
// token rows its result depends on. Runs the graph once on `inputs` to learn sizes, with the
// `batchInputs` inputs after self (the method's own) cut to their first example. Returns the
// kinds of the nodes that now run on one row ("aten::linear", ...), empty when nothing could
// be pruned (`graph` is then left as it was); nullopt when that run failed.
std::optional<std::vector<std::string>> PruneTokens(std::shared_ptr<torch::jit::Graph>& graph,
                                                    const torch::jit::Stack& inputs, size_t batchInputs);

// A method's graph with token pruning, built on the first call while pruning is on. Used for
// models without adapters (ModuleState::pruned) and for LoRA's rewritten graphs
// (module/method_call.cc).
class PrunedFunction {
 public:
  // Runs `stack` (the graph's inputs, self first) through the pruned graph when pruning is on
  // and applies, else through `unpruned`; the result is left on the stack. `batchInputs`: how
  // many inputs after self are the method's own (PruneTokens). `graph` makes the inlined graph
  // to prune (called once per setting of the training flags it reads); `name` names the pruned
  // function. The graph is planned per setting of the modules' `training` attributes it reads
  // (a scripted module's dropout(x, p, self.training)), with each read replaced by its value: in
  // eval mode such a dropout is a no-op the pass narrows through, in train mode it draws and the
  // pass stops there. Switching modes reuses each setting's plan.
  void Run(torch::jit::Stack& stack, size_t batchInputs,
           const std::function<std::shared_ptr<torch::jit::Graph>()>& graph,
           const std::function<void(torch::jit::Stack&)>& unpruned, const std::string& name);

  // The kinds of the nodes narrowed to one row ({} when nothing could be) in the plan of the
  // last call; null before the first.
  const std::vector<std::string>* narrowed() const { return last_ ? &last_->narrowed : nullptr; }

  // A module's `training` attribute that the graph reads (an object and its slot).
  struct FlagSlot {
    c10::intrusive_ptr<c10::ivalue::Object> object;
    size_t slot;
  };

 private:
  // The pruned graph for one setting of the training flags.
  struct Variant {
    std::unique_ptr<torch::jit::GraphFunction> function;  // null: run unpruned
    std::vector<std::string> narrowed;
    std::vector<int64_t> inputRanks;  // of the call the pass was planned on
  };
  std::vector<bool> Flags() const;

  bool flagSlotsKnown_ = false;
  std::vector<FlagSlot> flagSlots_;  // the graph's reads of `training`, found on the first call
  std::map<std::vector<bool>, Variant> variants_;
  const Variant* last_ = nullptr;
};

}  // namespace torch_bert
