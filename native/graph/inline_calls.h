// Inlining a TorchScript graph completely: the first step of every graph pass here
// (token_pruning.h, lora_rewrite.h), which follow values through one flat graph. Mirrors
// torch::jit::Inline, repeated to a fixed point.
#pragma once

#include <torch/csrc/jit/ir/ir.h>

namespace torch_bert {

// Inlines every call in `graph`, to a fixed point (torch::jit::Inline inlines one level when
// graph optimisation is off, which addon.cc sets).
void InlineAll(torch::jit::Graph& graph);

}  // namespace torch_bert
