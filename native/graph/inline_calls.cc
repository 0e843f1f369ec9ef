#include "graph/inline_calls.h"

#include <torch/csrc/jit/passes/inliner.h>

#include <utility>

namespace torch_bert {

namespace {

using torch::jit::Node;
namespace prim = c10::prim;

// Calls (prim::CallMethod, prim::CallFunction) and all nodes in the block, nested ones included.
std::pair<size_t, size_t> CountNodes(torch::jit::Block* block) {
  std::pair<size_t, size_t> n{0, 0};
  for (Node* node : block->nodes()) {
    if (node->kind() == prim::CallMethod || node->kind() == prim::CallFunction) ++n.first;
    ++n.second;
    for (torch::jit::Block* sub : node->blocks()) {
      auto [calls, nodes] = CountNodes(sub);
      n.first += calls;
      n.second += nodes;
    }
  }
  return n;
}

}  // namespace

void InlineAll(torch::jit::Graph& graph) {
  auto before = CountNodes(graph.block());
  for (int depth = 0; before.first > 0 && depth < 1000; ++depth) {
    torch::jit::Inline(graph);
    const auto after = CountNodes(graph.block());
    if (after == before) break;
    before = after;
  }
}

}  // namespace torch_bert
