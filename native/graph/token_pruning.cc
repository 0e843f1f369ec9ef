#include "graph/token_pruning.h"

#include <ATen/Context.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/lower_tuples.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>

namespace torch_bert {

namespace {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;
namespace aten = c10::aten;
namespace prim = c10::prim;

std::atomic<bool>& TokenPruningSetting() {
  static std::atomic<bool> on{[] {
    const char* env = std::getenv("TORCH_BERT_TOKEN_PRUNING");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }()};
  return on;
}

// ---- Sizes of every value, from one run ----------------------------------------------------

using Sizes = std::unordered_map<const Value*, std::vector<int64_t>>;

bool IsTensor(const Value* v) {
  return v->type()->kind() == c10::TypeKind::TensorType;
}

// The graph's inputs and top-level node outputs of tensor type, in graph order.
std::vector<Value*> TopLevelTensors(Graph& graph) {
  std::vector<Value*> out;
  for (Value* v : graph.inputs()) {
    if (IsTensor(v)) out.push_back(v);
  }
  for (Node* node : graph.nodes()) {
    for (Value* v : node->outputs()) {
      if (IsTensor(v)) out.push_back(v);
    }
  }
  return out;
}

// Saves the default generators' states of the devices involved and puts them back: the probe
// run must not change what later random ops (dropout) draw.
class RngStateGuard {
 public:
  explicit RngStateGuard(const torch::jit::Stack& inputs) {
    Save(at::detail::getDefaultCPUGenerator());
    for (const c10::IValue& input : inputs) {
      if (input.isTensor() && input.toTensor().defined() && input.toTensor().is_cuda()) {
        Save(at::globalContext().defaultGenerator(input.toTensor().device()));
        break;
      }
    }
  }
  ~RngStateGuard() {
    for (auto& [generator, state] : saved_) {
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(state);
    }
  }

 private:
  void Save(at::Generator generator) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    saved_.emplace_back(generator, generator.get_state());
  }
  std::vector<std::pair<at::Generator, at::Tensor>> saved_;
};

// Runs a copy of `graph` that also returns the sizes of every top-level tensor value.
Sizes ProbeSizes(Graph& graph, const torch::jit::Stack& inputs) {
  std::shared_ptr<Graph> probe = graph.copy();
  const std::vector<Value*> original = TopLevelTensors(graph);
  const std::vector<Value*> copied = TopLevelTensors(*probe);
  if (original.size() != copied.size()) return {};
  std::vector<Value*> sizeLists;
  for (Value* v : copied) {
    Node* after = v->node()->kind() == prim::Param ? probe->block()->param_node() : v->node();
    torch::jit::WithInsertPoint point(after->next());
    sizeLists.push_back(probe->insert(aten::size, {v}));
  }
  // A function has one output: the sizes as a tuple (the method's own result is dropped).
  while (!probe->outputs().empty()) probe->eraseOutput(probe->outputs().size() - 1);
  probe->registerOutput(probe->insertNode(probe->createTuple(sizeLists))->output());
  torch::jit::EliminateDeadCode(probe);
  torch::jit::GraphFunction function("__torch__.torch_bert.size_probe", probe, nullptr);
  torch::jit::Stack stack = inputs;
  {
    torch::NoGradGuard noGrad;
    // Outside autocast: sizes do not depend on it, and autocast caches the casts of weights for
    // the rest of the region; casts made here, without autograd, would then reach the real
    // call and cut its gradients.
    c10::impl::ExcludeDispatchKeyGuard noAutocast(c10::autocast_dispatch_keyset);
    RngStateGuard rng(inputs);
    function.run(stack);
  }
  const auto& elements = stack.back().toTupleRef().elements();
  Sizes sizes;
  for (size_t i = 0; i < original.size(); ++i) sizes.emplace(original[i], elements[i].toIntVector());
  return sizes;
}

// ---- The pass ------------------------------------------------------------------------------

// Not among libtorch 1.13's interned names.
c10::Symbol ScaledDotProductAttention() {
  static const c10::Symbol symbol = c10::Symbol::fromQualString("aten::scaled_dot_product_attention");
  return symbol;
}

std::optional<int64_t> ConstantInt(Value* v) {
  auto ivalue = torch::jit::toIValue(v);
  if (!ivalue || !ivalue->isInt()) return std::nullopt;
  return ivalue->toInt();
}

std::optional<double> ConstantDouble(Value* v) {
  auto ivalue = torch::jit::toIValue(v);
  if (!ivalue || !ivalue->isDouble()) return std::nullopt;
  return ivalue->toDouble();
}

std::optional<bool> ConstantBool(Value* v) {
  auto ivalue = torch::jit::toIValue(v);
  if (!ivalue || !ivalue->isBool()) return std::nullopt;
  return ivalue->toBool();
}

// The elements of an int list: constants, or a prim::ListConstruct of constant ints.
std::optional<std::vector<int64_t>> ConstantInts(Value* v) {
  if (auto ivalue = torch::jit::toIValue(v); ivalue && ivalue->isIntList()) return ivalue->toIntVector();
  if (v->node()->kind() != prim::ListConstruct) return std::nullopt;
  std::vector<int64_t> out;
  for (Value* element : v->node()->inputs()) {
    auto i = ConstantInt(element);
    if (!i) return std::nullopt;
    out.push_back(*i);
  }
  return out;
}

// The number of elements of an int list (a constant or a ListConstruct).
std::optional<size_t> ListLength(Value* v) {
  if (auto ivalue = torch::jit::toIValue(v); ivalue && ivalue->isIntList()) return ivalue->toIntVector().size();
  if (v->node()->kind() == prim::ListConstruct) return v->node()->inputs().size();
  return std::nullopt;
}

// A size as the tracer records it: aten::size(x, k), often wrapped as
// aten::Int(prim::NumToTensor(size)). Returns the value inside the wrapping.
Value* TracedSize(Value* v) {
  while (v->node()->kind() == aten::Int && v->node()->input(0)->node()->kind() == prim::NumToTensor) {
    v = v->node()->input(0)->node()->input(0);
  }
  return v;
}

std::optional<int64_t> NormalizeDim(std::optional<int64_t> dim, int64_t rank) {
  if (!dim || rank <= 0) return std::nullopt;
  const int64_t d = *dim < 0 ? *dim + rank : *dim;
  if (d < 0 || d >= rank) return std::nullopt;
  return d;
}

// How to compute the first row (along one dim) of a node's output from its inputs.
struct Rule {
  std::vector<std::pair<size_t, int64_t>> inputs;  // tensor input index -> the dim to narrow it at
  bool viewSizes = false;                          // view/reshape: the size list (input 1) is rebuilt with 1 at `dim`
};

class TokenPruner {
 public:
  TokenPruner(Graph& graph, Sizes sizes) : graph_(graph), sizes_(std::move(sizes)) {}

  std::vector<std::string> Run() {
    std::vector<Node*> nodes;
    for (Node* node : graph_.nodes()) nodes.push_back(node);
    // Roots: select(x, dim, 0) takes row 0 of x.
    std::vector<std::pair<Node*, int64_t>> roots;
    for (Node* node : nodes) {
      if (node->kind() != aten::select || node->inputs().size() != 3 || !IsTensor(node->input(0))) continue;
      auto dim = NormalizeDim(ConstantInt(node->input(1)), Rank(node->input(0)));
      auto index = ConstantInt(node->input(2));
      if (!dim || !index || *index != 0) continue;
      roots.emplace_back(node, *dim);
      Demand(node->input(0), *dim, node, 0);
    }
    if (roots.empty()) return {};

    // Analysis, last node first: a node is narrowed when every use of its output wants the
    // same row (so its full-size version becomes dead) and a rule says how.
    for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
      Node* node = *it;
      if (node->outputs().size() != 1) continue;
      Value* v = node->output();
      auto demand = demands_.find(v);
      if (demand == demands_.end() || !demand->second.dim || !OnlyNarrowUses(v)) continue;
      std::optional<Rule> rule = RuleFor(node, *demand->second.dim);
      if (!rule) continue;
      rules_.emplace(node, *rule);
      for (const auto& [input, dim] : rule->inputs) Demand(node->input(input), dim, node, input);
      if (rule->viewSizes) sizeLists_.insert(node->input(1)->node());
    }
    if (rules_.empty()) return {};

    // Rewrite, first node first: a narrowed copy of each chosen node next to it.
    std::vector<std::string> narrowed;
    for (Node* node : nodes) {
      auto rule = rules_.find(node);
      if (rule == rules_.end()) continue;
      narrowed.push_back(node->kind().toQualString());
      narrowed_.emplace(node->output(), Clone(node, rule->second));
    }
    for (auto& [root, dim] : roots) root->replaceInput(0, NarrowedValue(root->input(0), dim));
    torch::jit::EliminateDeadCode(graph_.block());
    graph_.lint();
    return narrowed;
  }

 private:
  struct DemandInfo {
    std::optional<int64_t> dim;                  // empty: two uses want different dims
    std::vector<std::pair<Node*, size_t>> uses;  // (user, input index) wanting the narrowed value
  };

  int64_t Rank(const Value* v) const {
    auto it = sizes_.find(v);
    return it == sizes_.end() ? -1 : static_cast<int64_t>(it->second.size());
  }

  void Demand(Value* v, int64_t dim, Node* user, size_t offset) {
    auto [it, inserted] = demands_.try_emplace(v);
    if (inserted) {
      it->second.dim = dim;
    } else if (it->second.dim && *it->second.dim != dim) {
      it->second.dim.reset();
    }
    it->second.uses.emplace_back(user, offset);
  }

  // Every use of v takes its narrowed version, or is an aten::size whose result only feeds
  // size lists that the rewrite rebuilds from the narrowed value.
  bool OnlyNarrowUses(Value* v) const {
    const auto& wanting = demands_.at(v).uses;
    for (const torch::jit::Use& use : v->uses()) {
      if (std::find(wanting.begin(), wanting.end(), std::make_pair(use.user, use.offset)) != wanting.end()) continue;
      if (use.user->kind() == aten::size && use.user->inputs().size() == 2 && SizeOnlyFeedsRebuiltLists(use.user, v)) {
        continue;
      }
      return false;
    }
    return true;
  }

  // Whether a size of v (or a trace's copy of it: prim::NumToTensor, aten::Int) only feeds
  // size lists that the rewrite rebuilds for a narrowed view of v.
  bool SizeOnlyFeedsRebuiltLists(Node* size, Value* v) const {
    for (const torch::jit::Use& use : size->output()->uses()) {
      Node* user = use.user;
      if (user->kind() == prim::NumToTensor || user->kind() == aten::Int) {
        if (!SizeOnlyFeedsRebuiltLists(user, v)) return false;
        continue;
      }
      if (!sizeLists_.count(user)) return false;
      for (const torch::jit::Use& listUse : user->output()->uses()) {
        if (!rules_.count(listUse.user) || listUse.user->input(0) != v) return false;
      }
    }
    return true;
  }

  // Whether input `index` is the node's only tensor input (unary ops with scalar arguments).
  bool OnlyTensorInput(Node* node, size_t index) const {
    for (size_t i = 0; i < node->inputs().size(); ++i) {
      if (i != index && IsTensor(node->input(i))) return false;
    }
    return IsTensor(node->input(index));
  }

  std::optional<Rule> RuleFor(Node* node, int64_t d) const {
    const c10::Symbol kind = node->kind();
    const int64_t rank = Rank(node->output());
    if (rank <= d) return std::nullopt;
    Rule rule;
    if (kind == aten::gelu || kind == aten::relu || kind == aten::tanh || kind == aten::sigmoid || kind == aten::silu ||
        kind == aten::contiguous || kind == aten::clone || kind == aten::to) {
      if (!OnlyTensorInput(node, 0)) return std::nullopt;
      rule.inputs.emplace_back(0, d);
      return rule;
    }
    if (kind == aten::dropout) {
      // Only a dropout that draws nothing: p == 0 or not training (the flag a constant).
      auto p = ConstantDouble(node->input(1));
      auto train = ConstantBool(node->input(2));
      if (!((p && *p == 0) || (train && !*train))) return std::nullopt;
      rule.inputs.emplace_back(0, d);
      return rule;
    }
    if (kind == aten::add || kind == aten::sub || kind == aten::mul || kind == aten::div || kind == aten::rsub ||
        kind == aten::masked_fill || kind == aten::where) {
      // Broadcasting aligns dims from the right; an operand without the dim is taken whole.
      for (size_t i = 0; i < node->inputs().size(); ++i) {
        if (!IsTensor(node->input(i))) continue;
        const int64_t r = Rank(node->input(i));
        if (r < 0 || r > rank) return std::nullopt;
        const int64_t di = d - (rank - r);
        if (di >= 0) rule.inputs.emplace_back(i, di);
      }
      if (rule.inputs.empty()) return std::nullopt;
      return rule;
    }
    if (kind == aten::layer_norm) {
      auto normalized = ListLength(node->input(1));
      if (!normalized || d >= rank - static_cast<int64_t>(*normalized)) return std::nullopt;
      rule.inputs.emplace_back(0, d);
      return rule;
    }
    if (kind == aten::softmax || kind == aten::log_softmax) {
      auto dim = NormalizeDim(ConstantInt(node->input(1)), rank);
      if (!dim || *dim == d) return std::nullopt;
      rule.inputs.emplace_back(0, d);
      return rule;
    }
    if (kind == aten::linear) {
      if (d >= rank - 1) return std::nullopt;
      rule.inputs.emplace_back(0, d);
      return rule;
    }
    if (kind == aten::matmul || kind == aten::bmm) {
      const int64_t ra = Rank(node->input(0));
      const int64_t rb = Rank(node->input(1));
      if (ra < 2 || rb < 2 || rank != std::max(ra, rb)) return std::nullopt;
      if (d == rank - 2) {
        rule.inputs.emplace_back(0, ra - 2);  // rows of the left operand
      } else if (d == rank - 1) {
        rule.inputs.emplace_back(1, rb - 1);  // columns of the right operand
      } else {
        // A batch dim (either operand may broadcast).
        if (d - (rank - ra) >= 0) rule.inputs.emplace_back(0, d - (rank - ra));
        if (d - (rank - rb) >= 0) rule.inputs.emplace_back(1, d - (rank - rb));
      }
      return rule;
    }
    if (kind == aten::permute) {
      auto dims = ConstantInts(node->input(1));
      if (!dims || static_cast<int64_t>(dims->size()) != rank) return std::nullopt;
      auto source = NormalizeDim((*dims)[d], rank);
      if (!source) return std::nullopt;
      rule.inputs.emplace_back(0, *source);
      return rule;
    }
    if (kind == aten::transpose) {
      auto a = NormalizeDim(ConstantInt(node->input(1)), rank);
      auto b = NormalizeDim(ConstantInt(node->input(2)), rank);
      if (!a || !b) return std::nullopt;
      rule.inputs.emplace_back(0, d == *a ? *b : d == *b ? *a : d);
      return rule;
    }
    if (kind == aten::slice) {
      auto dim = NormalizeDim(ConstantInt(node->input(1)), rank);
      if (!dim || *dim == d) return std::nullopt;
      rule.inputs.emplace_back(0, d);
      return rule;
    }
    if (kind == aten::select) {
      auto dim = NormalizeDim(ConstantInt(node->input(1)), rank + 1);
      if (!dim) return std::nullopt;
      rule.inputs.emplace_back(0, d < *dim ? d : d + 1);
      return rule;
    }
    if (kind == aten::view || kind == aten::reshape) {
      // Only a view that keeps dims 0..d as they are (it splits or merges later dims, as the
      // attention heads' [B, T, H] <-> [B, T, heads, H / heads]), with dim d's size taken from
      // the input: then row 0 of the output is the view of row 0 of the input.
      Value* input = node->input(0);
      Value* list = node->input(1);
      const auto& in = sizes_.find(input);
      const auto& out = sizes_.find(node->output());
      if (in == sizes_.end() || out == sizes_.end() || static_cast<int64_t>(in->second.size()) <= d)
        return std::nullopt;
      if (list->node()->kind() != prim::ListConstruct || static_cast<int64_t>(list->node()->inputs().size()) != rank) {
        return std::nullopt;
      }
      for (int64_t k = 0; k <= d; ++k) {
        if (in->second[k] != out->second[k]) return std::nullopt;
      }
      Value* element = TracedSize(list->node()->input(d));
      const bool fromInput = element->node()->kind() == aten::size && element->node()->input(0) == input &&
                             NormalizeDim(ConstantInt(element->node()->input(1)), Rank(input)) == d;
      const bool inferred = ConstantInt(element) == -1;
      if (!fromInput && !inferred) return std::nullopt;
      rule.inputs.emplace_back(0, d);
      rule.viewSizes = true;
      return rule;
    }
    if (kind == ScaledDotProductAttention()) {
      // PyTorch 2's fused attention (a Hugging Face BERT traced with SDPA attention): a row of
      // the output is that query row against all keys, when nothing random or causal is in it.
      if (node->inputs().size() < 6 || d != rank - 2) return std::nullopt;
      auto p = ConstantDouble(node->input(4));
      auto causal = ConstantBool(node->input(5));
      if (!p || *p != 0 || !causal || *causal) return std::nullopt;
      const int64_t rq = Rank(node->input(0));
      if (rq != rank) return std::nullopt;
      rule.inputs.emplace_back(0, rq - 2);
      if (IsTensor(node->input(3))) {
        const int64_t rm = Rank(node->input(3));
        if (rm < 0 || rm > rank) return std::nullopt;
        if (d - (rank - rm) >= 0) rule.inputs.emplace_back(3, d - (rank - rm));
      }
      return rule;
    }
    if (kind == aten::embedding) {
      const int64_t r = Rank(node->input(1));
      if (d >= r) return std::nullopt;
      rule.inputs.emplace_back(1, d);
      return rule;
    }
    return std::nullopt;
  }

  // The narrowed version of v: the copy made for its node, or a slice of the full value.
  Value* NarrowedValue(Value* v, int64_t dim) {
    auto done = narrowed_.find(v);
    if (done != narrowed_.end()) return done->second;
    auto sliced = slices_.find({v, dim});
    if (sliced != slices_.end()) return sliced->second;
    Node* after = v->node()->kind() == prim::Param ? graph_.block()->param_node() : v->node();
    torch::jit::WithInsertPoint point(after->next());
    Value* slice = graph_.insert(aten::slice, {v, dim, int64_t{0}, int64_t{1}, int64_t{1}});
    slices_.emplace(std::make_pair(v, dim), slice);
    return slice;
  }

  Value* Clone(Node* node, const Rule& rule) {
    std::unordered_map<size_t, Value*> replaced;
    for (const auto& [input, dim] : rule.inputs) replaced[input] = NarrowedValue(node->input(input), dim);
    torch::jit::WithInsertPoint point(node->next());
    if (rule.viewSizes) {
      // The size list again, with 1 for the narrowed dim and the other sizes read from the
      // narrowed input (so the full-size input is not kept alive for its sizes).
      Value* input = node->input(0);
      Value* narrowedInput = replaced.at(0);
      const int64_t d = rule.inputs.front().second;
      Node* list = node->input(1)->node();
      std::vector<Value*> elements;
      for (size_t k = 0; k < list->inputs().size(); ++k) {
        Value* element = list->input(k);
        Value* size = TracedSize(element);
        if (static_cast<int64_t>(k) == d) {
          element = graph_.insertConstant(ConstantInt(size) == -1 ? int64_t{-1} : int64_t{1});
        } else if (size->node()->kind() == aten::size && size->node()->inputs().size() == 2 &&
                   size->node()->input(0) == input) {
          element = graph_.insert(aten::size, {narrowedInput, size->node()->input(1)});
        }
        elements.push_back(element);
      }
      Node* rebuilt = graph_.insertNode(graph_.createList(c10::IntType::get(), elements));
      replaced[1] = rebuilt->output();
    }
    Node* copy = graph_.createClone(node, [&](Value* v) { return v; });
    for (const auto& [input, value] : replaced) copy->replaceInput(input, value);
    graph_.insertNode(copy);
    return copy->output();
  }

  Graph& graph_;
  Sizes sizes_;
  std::unordered_map<const Value*, DemandInfo> demands_;
  std::unordered_map<Node*, Rule> rules_;
  std::unordered_set<Node*> sizeLists_;
  std::unordered_map<Value*, Value*> narrowed_;
  struct PairHash {
    size_t operator()(const std::pair<Value*, int64_t>& p) const {
      return std::hash<Value*>()(p.first) ^ (std::hash<int64_t>()(p.second) << 1);
    }
  };
  std::unordered_map<std::pair<Value*, int64_t>, Value*, PairHash> slices_;
};

// Graphs the pass leaves alone: anything that changes state (in-place ops, attribute writes)
// or calls what was not inlined (the pass runs the graph once to learn sizes); control flow
// and squeeze, whose ranks may depend on the sizes of a call (the pass plans with the ranks of
// one call: traced encoders have neither).
bool Unsupported(torch::jit::Block* block) {
  for (Node* node : block->nodes()) {
    const c10::Symbol kind = node->kind();
    if (kind == prim::SetAttr || kind == prim::CallMethod || kind == prim::CallFunction || kind == prim::If ||
        kind == prim::Loop || kind == aten::squeeze) {
      return true;
    }
    if (const c10::FunctionSchema* schema = node->maybeSchema(); schema && schema->is_mutable()) return true;
    for (torch::jit::Block* sub : node->blocks()) {
      if (Unsupported(sub)) return true;
    }
  }
  return false;
}

// out["last_hidden_state"] on a dict built in the same graph (an encoder returning a dict,
// inlined) becomes the value itself, as LowerSimpleTuples does for tuples.
void FoldDictLookups(Graph& graph) {
  for (Node* node : graph.nodes()) {
    if (node->kind() != aten::__getitem__ || node->inputs().size() != 2) continue;
    Node* dict = node->input(0)->node();
    auto key = torch::jit::toIValue(node->input(1));
    if (dict->kind() != prim::DictConstruct || !key || !key->isString()) continue;
    for (size_t i = 0; i + 1 < dict->inputs().size(); i += 2) {
      auto k = torch::jit::toIValue(dict->input(i));
      if (k && k->isString() && k->toStringRef() == key->toStringRef()) {
        node->output()->replaceAllUsesWith(dict->input(i + 1));
        break;
      }
    }
  }
}

bool HasRootCandidate(Graph& graph) {
  for (Node* node : graph.nodes()) {
    if (node->kind() == aten::select && node->inputs().size() == 3 && ConstantInt(node->input(2)) == 0) return true;
  }
  return false;
}

}  // namespace

bool TokenPruningEnabled() {
  return TokenPruningSetting().load();
}

void SetTokenPruning(bool on) {
  TokenPruningSetting().store(on);
}

namespace {

// The call's inputs with the method's own tensor inputs (the `batchInputs` after self) cut to
// their first example, when they all have the same number of examples: ranks (what the pass
// needs) do not depend on it in the graphs it accepts, and the probe then costs one example's
// forward instead of the batch's.
torch::jit::Stack FirstExample(const torch::jit::Stack& inputs, size_t batchInputs) {
  std::optional<int64_t> examples;
  for (size_t i = 1; i <= batchInputs && i < inputs.size(); ++i) {
    if (!inputs[i].isTensor()) continue;
    const torch::Tensor& t = inputs[i].toTensor();
    if (!t.defined() || t.dim() == 0 || (examples && *examples != t.size(0))) return inputs;
    examples = t.size(0);
  }
  if (!examples || *examples <= 1) return inputs;
  torch::jit::Stack out = inputs;
  for (size_t i = 1; i <= batchInputs && i < out.size(); ++i) {
    if (out[i].isTensor()) out[i] = out[i].toTensor().narrow(0, 0, 1);
  }
  return out;
}

}  // namespace

std::optional<std::vector<std::string>> PruneTokens(std::shared_ptr<Graph>& graph, const torch::jit::Stack& inputs,
                                                    size_t batchInputs) {
  if (!HasRootCandidate(*graph) || Unsupported(graph->block())) return std::vector<std::string>{};
  // The encoder's output tuple is built and indexed in the inlined graph: fold that, so that a
  // tuple does not keep the full last layer alive.
  std::shared_ptr<Graph> work = graph->copy();
  torch::jit::LowerSimpleTuples(work);
  FoldDictLookups(*work);
  torch::jit::EliminateDeadCode(work);
  Sizes sizes;
  try {
    sizes = ProbeSizes(*work, FirstExample(inputs, batchInputs));
  } catch (const std::exception&) {
    return std::nullopt;  // bad inputs (the call itself will say), or a graph the probe cannot run
  }
  std::vector<std::string> narrowed;
  try {
    narrowed = TokenPruner(*work, std::move(sizes)).Run();
  } catch (const std::exception&) {
    // A graph the rewrite cannot handle (the IR check failed): run it unpruned rather than
    // fail the user's call. The tests pin what the pass does to BERT graphs.
    return std::vector<std::string>{};
  }
  // Worth it only when some arithmetic now runs on one row (not just views of it).
  static const std::unordered_set<std::string> views = {"aten::slice",      "aten::select",  "aten::view",
                                                        "aten::reshape",    "aten::permute", "aten::transpose",
                                                        "aten::contiguous", "aten::to",      "aten::clone"};
  if (std::all_of(narrowed.begin(), narrowed.end(), [](const std::string& op) { return views.count(op) > 0; })) {
    return std::vector<std::string>{};
  }
  graph = std::move(work);
  return narrowed;
}

namespace {

// The rank of each tensor input (-1 for other inputs).
std::vector<int64_t> InputRanks(const torch::jit::Stack& stack) {
  std::vector<int64_t> ranks;
  for (const c10::IValue& v : stack) ranks.push_back(v.isTensor() ? v.toTensor().dim() : -1);
  return ranks;
}

}  // namespace

namespace {

// The `training` attributes the graph reads: prim::GetAttr[name="training"] on a module object
// reached from self (graph input 0) through prim::GetAttr, with the object and the slot read.
// Scripted modules read their flag at run time (dropout(x, p, self.training)); traced ones
// have it baked in as a constant.
std::vector<std::pair<Node*, PrunedFunction::FlagSlot>> TrainingReads(Graph& graph, const c10::IValue& self) {
  std::vector<std::pair<Node*, PrunedFunction::FlagSlot>> out;
  if (graph.inputs().empty() || !self.isObject()) return out;
  std::unordered_map<const Value*, c10::intrusive_ptr<c10::ivalue::Object>> objects;
  objects.emplace(graph.inputs()[0], self.toObject());
  for (Node* node : graph.nodes()) {
    if (node->kind() != prim::GetAttr) continue;
    auto known = objects.find(node->input(0));
    if (known == objects.end()) continue;
    const std::string& name = node->s(c10::attr::name);
    auto slot = known->second->type()->findAttributeSlot(name);
    if (!slot) continue;
    const c10::IValue& value = known->second->getSlot(*slot);
    if (value.isObject()) {
      objects.emplace(node->output(), value.toObject());
    } else if (name == "training" && value.isBool()) {
      out.emplace_back(node, PrunedFunction::FlagSlot{known->second, *slot});
    }
  }
  return out;
}

}  // namespace

std::vector<bool> PrunedFunction::Flags() const {
  std::vector<bool> flags;
  flags.reserve(flagSlots_.size());
  for (const FlagSlot& f : flagSlots_) flags.push_back(f.object->getSlot(f.slot).toBool());
  return flags;
}

void PrunedFunction::Run(torch::jit::Stack& stack, size_t batchInputs,
                         const std::function<std::shared_ptr<Graph>()>& graph,
                         const std::function<void(torch::jit::Stack&)>& unpruned, const std::string& name) {
  if (!TokenPruningEnabled()) return unpruned(stack);
  std::vector<bool> flags = flagSlotsKnown_ ? Flags() : std::vector<bool>{};
  auto found = flagSlotsKnown_ ? variants_.find(flags) : variants_.end();
  if (found == variants_.end()) {
    // A plan for this setting of the training flags: each read of one becomes the constant it
    // is now, so that a dropout that is off in this mode is a no-op the pass can push through
    // (it never pushes through one that draws). Planned once per setting (train, eval).
    std::shared_ptr<Graph> g = graph();
    auto reads = TrainingReads(*g, stack.empty() ? c10::IValue() : stack.front());
    if (!flagSlotsKnown_) {
      for (const auto& read : reads) flagSlots_.push_back(read.second);
      flagSlotsKnown_ = true;
      flags = Flags();
    }
    for (const auto& [node, slot] : reads) {
      torch::jit::WithInsertPoint point(node);
      node->output()->replaceAllUsesWith(g->insertConstant(slot.object->getSlot(slot.slot).toBool()));
    }
    Variant variant;
    std::optional<std::vector<std::string>> narrowed = PruneTokens(g, stack, batchInputs);
    if (!narrowed) {
      // The probe failed. Run the call as it is: bad inputs fail there with the user's error
      // (and the next call tries again); if it runs, the graph is one the probe cannot handle.
      unpruned(stack);
      last_ = &variants_.emplace(flags, std::move(variant)).first->second;
      return;
    }
    variant.narrowed = std::move(*narrowed);
    if (!variant.narrowed.empty()) {
      variant.function = std::make_unique<torch::jit::GraphFunction>(
          c10::QualifiedName("__torch__.torch_bert.pruned." + name), g, nullptr);
      variant.inputRanks = InputRanks(stack);
    }
    found = variants_.emplace(flags, std::move(variant)).first;
  }
  last_ = &found->second;
  // The ranks the pass was planned for (it narrows dims by position).
  if (last_->function && InputRanks(stack) == last_->inputRanks) return last_->function->run(stack);
  unpruned(stack);
}

}  // namespace torch_bert
