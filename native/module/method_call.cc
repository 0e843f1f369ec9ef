#include "module/method_call.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>

#include <memory>
#include <optional>
#include <stdexcept>

#include "graph/bottleneck_rewrite.h"
#include "graph/inline_calls.h"
#include "graph/lora_rewrite.h"
#include "graph/token_pruning.h"

namespace torch_bert {

// One method of an adapted model, as CallWithAdapters runs it (LoraState::methods).
struct LoraMethod {
  // The method's graph with the adapters in activation space (graph/lora_rewrite.h); its
  // inputs are the method's (self first), then per module in `activation`: A, B, and whether
  // to apply dropout. Null when the graph cannot be followed: every adapter then works in
  // weight space.
  std::unique_ptr<torch::jit::GraphFunction> function;
  std::vector<size_t> activation;   // LoraState::modules indices rewritten in the graph
  std::vector<size_t> weightSpace;  // indices whose weight the graph uses otherwise
  // `function` with token pruning (graph/token_pruning.h).
  PrunedFunction pruned;
};

// One method of a model with bottleneck adapters, as CallWithBottleneck runs it
// (BottleneckState::methods).
struct BottleneckMethod {
  // The method's graph with the adapters inserted (graph/bottleneck_rewrite.h); its inputs are
  // the method's (self first), then the four tensors of each module in `applied`.
  std::unique_ptr<torch::jit::GraphFunction> function;
  std::vector<size_t> applied;  // BottleneckState::modules indices the method reaches
  // `function` with token pruning (graph/token_pruning.h).
  PrunedFunction pruned;
};

namespace {

std::shared_ptr<BottleneckMethod> BuildBottleneckMethod(const torch::jit::Module& module,
                                                        const torch::jit::Method& method,
                                                        const BottleneckState& adapters) {
  std::vector<torch::jit::Module> dense;
  std::vector<std::string> paths;
  for (const BottleneckModule& m : adapters.modules) {
    dense.push_back(m.dense);
    paths.push_back(m.path + "." + m.projection);
  }
  BottleneckRewrite rewrite = RewriteForBottleneck(module, method, dense, paths, adapters.activation);
  auto out = std::make_shared<BottleneckMethod>();
  out->applied = std::move(rewrite.applied);
  out->function = std::make_unique<torch::jit::GraphFunction>(
      c10::QualifiedName("__torch__.torch_bert.bottleneck." + method.name()), rewrite.graph, nullptr);
  return out;
}

BottleneckMethod& BottleneckMethodFor(ModuleState& state, const torch::jit::Method& method) {
  auto& cache = state.bottleneck->methods;
  auto it = cache.find(method.name());
  if (it == cache.end()) {
    it = cache.emplace(method.name(), BuildBottleneckMethod(state.module, method, *state.bottleneck)).first;
  }
  return *it->second;
}

std::shared_ptr<LoraMethod> BuildLoraMethod(const torch::jit::Module& module, const torch::jit::Method& method,
                                            const LoraState& lora) {
  std::vector<torch::jit::Module> adapted;
  adapted.reserve(lora.modules.size());
  for (const LoraModule& m : lora.modules) adapted.push_back(m.module);
  AdapterRewrite rewrite = RewriteForAdapters(module, method, adapted, lora.dropout, lora.Scaling());
  auto out = std::make_shared<LoraMethod>();
  out->activation = std::move(rewrite.activation);
  out->weightSpace = std::move(rewrite.weightSpace);
  if (rewrite.graph) {
    out->function = std::make_unique<torch::jit::GraphFunction>(
        c10::QualifiedName("__torch__.torch_bert.lora." + method.name()), rewrite.graph, nullptr);
  }
  return out;
}

LoraMethod& LoraMethodFor(ModuleState& state, const torch::jit::Method& method) {
  auto& cache = state.lora->methods;
  auto it = cache.find(method.name());
  if (it == cache.end()) it = cache.emplace(method.name(), BuildLoraMethod(state.module, method, *state.lora)).first;
  return *it->second;
}

}  // namespace

torch::jit::Stack MethodStack(const ModuleState& state, const torch::jit::Method& method,
                              std::vector<c10::IValue> inputs) {
  torch::jit::Stack stack = std::move(inputs);
  stack.insert(stack.begin(), state.module._ivalue());
  method.function().getSchema().checkAndNormalizeInputs(stack, {});
  return stack;
}

c10::IValue CallMethod(ModuleState& state, const torch::jit::Method& method, std::vector<c10::IValue> inputs,
                       LoraMode mode) {
  if (state.bottleneck) return CallWithBottleneck(state, method, std::move(inputs), mode);
  if (!state.lora) return CallPruned(state, method, std::move(inputs));
  return CallWithAdapters(state, method, std::move(inputs), mode);
}

c10::IValue CallPruned(ModuleState& state, const torch::jit::Method& method, std::vector<c10::IValue> inputs) {
  if (!TokenPruningEnabled()) return method(std::move(inputs));
  torch::jit::Stack stack = MethodStack(state, method, std::move(inputs));
  std::shared_ptr<PrunedFunction>& entry = state.pruned[method.name()];
  if (!entry) entry = std::make_shared<PrunedFunction>();
  entry->Run(
      stack, stack.size() - 1,
      [&] {
        std::shared_ptr<torch::jit::Graph> g = torch::jit::toGraphFunction(method.function()).graph()->copy();
        InlineAll(*g);
        return g;
      },
      [&](torch::jit::Stack& s) { method.function().run(s); }, method.name());
  return stack.front();
}

c10::IValue CallWithAdapters(ModuleState& state, const torch::jit::Method& method, std::vector<c10::IValue> inputs,
                             LoraMode mode) {
  if (!state.lora) throw std::logic_error("CallWithAdapters: the model has no adapters");
  if (mode == LoraMode::kMerged) throw std::logic_error("CallWithAdapters: kMerged is for saving and cloning");
  const LoraState& lora = *state.lora;
  LoraMethod& plan = LoraMethodFor(state, method);
  std::optional<c10::AutoGradMode> grad;
  if (mode == LoraMode::kTrain) grad.emplace(true);
  LoraWeights weights(lora, mode, plan.weightSpace);
  if (!plan.function) return method(std::move(inputs));

  // The method's inputs, then the adapters'.
  torch::jit::Stack stack = MethodStack(state, method, std::move(inputs));
  const size_t methodInputs = stack.size() - 1;
  for (size_t i : plan.activation) {
    const LoraModule& m = lora.modules[i];
    stack.emplace_back(m.a);
    stack.emplace_back(m.b);
    stack.emplace_back(mode == LoraMode::kTrain && lora.dropout > 0 && m.module.is_training());
  }
  torch::jit::GraphFunction& function = *plan.function;
  plan.pruned.Run(
      stack, methodInputs, [&] { return function.graph()->copy(); }, [&](torch::jit::Stack& s) { function.run(s); },
      "lora." + method.name());
  return stack.front();
}

c10::IValue CallWithBottleneck(ModuleState& state, const torch::jit::Method& method, std::vector<c10::IValue> inputs,
                               LoraMode mode) {
  if (!state.bottleneck) throw std::logic_error("CallWithBottleneck: the model has no bottleneck adapters");
  if (mode == LoraMode::kMerged) throw std::logic_error("CallWithBottleneck: kMerged is for LoRA's saving and cloning");
  const BottleneckState& adapters = *state.bottleneck;
  BottleneckMethod& plan = BottleneckMethodFor(state, method);
  std::optional<c10::AutoGradMode> grad;
  if (mode == LoraMode::kTrain) grad.emplace(true);
  // The method's inputs, then the adapters'.
  torch::jit::Stack stack = MethodStack(state, method, std::move(inputs));
  const size_t methodInputs = stack.size() - 1;
  for (size_t i : plan.applied) {
    for (const torch::Tensor& t : BottleneckTensors(adapters.modules[i])) stack.emplace_back(t);
  }
  torch::jit::GraphFunction& function = *plan.function;
  plan.pruned.Run(
      stack, methodInputs, [&] { return function.graph()->copy(); }, [&](torch::jit::Stack& s) { function.run(s); },
      "bottleneck." + method.name());
  return stack.front();
}

const std::vector<std::string>* PrunedOps(ModuleState& state, const std::string& method) {
  if (state.bottleneck) {
    auto it = state.bottleneck->methods.find(method);
    if (it == state.bottleneck->methods.end()) return nullptr;
    return it->second->pruned.narrowed();
  }
  if (state.lora) {
    auto it = state.lora->methods.find(method);
    if (it == state.lora->methods.end()) return nullptr;
    return it->second->pruned.narrowed();
  }
  auto it = state.pruned.find(method);
  return it == state.pruned.end() ? nullptr : it->second->narrowed();
}

std::pair<std::vector<std::string>, std::vector<std::string>> AdapterPlan(ModuleState& state,
                                                                          const torch::jit::Method& method) {
  std::pair<std::vector<std::string>, std::vector<std::string>> out;
  if (!state.lora) return out;
  const LoraMethod& plan = LoraMethodFor(state, method);
  for (size_t i : plan.activation) out.first.push_back(state.lora->modules[i].path);
  for (size_t i : plan.weightSpace) out.second.push_back(state.lora->modules[i].path);
  return out;
}

}  // namespace torch_bert
