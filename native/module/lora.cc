#include "module/lora.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "addon/addon_data.h"
#include "addon/errors.h"
#include "addon/wrap_tag.h"
#include "graph/execution_graph.h"
#include "tensor/pickle_file.h"
#include "tensor/tensor.h"

namespace torch_bert {

namespace {

// Passed through an External to the constructor, which is otherwise unusable from JS.
struct LoraInit {
  ModuleStatePtr model;
  std::shared_ptr<LoraState> lora;
};

struct LoraSpec {
  std::vector<std::string> targets;
  int64_t rank = 0;
  double alpha = 0;
  double dropout = 0;
  uint64_t seed = 0;
};

LoraSpec ReadSpec(const Napi::Value& value) {
  Napi::Env env = value.Env();
  const std::string fn = "applyLora: spec";
  Napi::Object object = ReadObject(value, fn);
  LoraSpec spec;
  Napi::Array targets = ReadArray(object.Get("targets"), fn + ".targets");
  if (targets.Length() == 0) ThrowError(env, fn + ".targets must not be empty");
  for (uint32_t i = 0; i < targets.Length(); ++i) {
    const std::string what = fn + ".targets[" + std::to_string(i) + "]";
    std::string target = ReadString(targets.Get(i), what);
    if (target.empty() || target.front() == '.' || target.back() == '.') {
      ThrowError(env, what + " must be a module path suffix such as 'attention.self.query', got '" + target + "'");
    }
    spec.targets.push_back(std::move(target));
  }
  spec.rank = ReadInteger(object.Get("rank"), fn + ".rank", 1, int64_t{1} << 16);
  spec.alpha = ReadNumber(object.Get("alpha"), fn + ".alpha");
  if (spec.alpha <= 0) ThrowError(env, fn + ".alpha must be > 0");
  spec.dropout = ReadNumber(object.Get("dropout"), fn + ".dropout");
  if (spec.dropout < 0 || spec.dropout >= 1) ThrowError(env, fn + ".dropout must be in [0, 1)");
  // Negative seeds wrap to uint64 as in torch.Generator.manual_seed.
  spec.seed =
      static_cast<uint64_t>(ReadInteger(object.Get("seed"), fn + ".seed", -(int64_t{1} << 53), int64_t{1} << 53));
  return spec;
}

// PEFT's rule: the module path equals the target or ends with "." + target.
bool MatchesTarget(const std::string& path, const std::string& target) {
  if (path == target) return true;
  return path.size() > target.size() && path.compare(path.size() - target.size(), target.size(), target) == 0 &&
         path[path.size() - target.size() - 1] == '.';
}

// The `weight` parameter of a linear-like submodule: a 2-D floating-point parameter.
std::optional<torch::Tensor> LinearWeight(const torch::jit::Module& module) {
  const auto& type = module.type();
  auto slot = type->findAttributeSlot("weight");
  if (!slot || !type->is_parameter(*slot)) return std::nullopt;
  c10::IValue value = module._ivalue()->getSlot(*slot);
  if (!value.isTensor()) return std::nullopt;
  torch::Tensor weight = value.toTensor();
  if (!weight.defined() || weight.dim() != 2 || !weight.is_floating_point()) return std::nullopt;
  return weight;
}

std::string JoinQuoted(const std::vector<std::string>& items, size_t limit = SIZE_MAX) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < limit; ++i) out += (i ? ", '" : "'") + items[i] + "'";
  if (items.size() > limit) out += ", ...";
  return out;
}

std::string ShapeString(c10::IntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;
  return os.str();
}

}  // namespace

// ---- LoraWeights ---------------------------------------------------------------------------

LoraWeights::LoraWeights(const ModuleState& state, LoraMode mode) {
  if (!state.lora) return;
  std::vector<size_t> all(state.lora->modules.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  Apply(*state.lora, mode, all);
}

LoraWeights::LoraWeights(const LoraState& lora, LoraMode mode, const std::vector<size_t>& modules) {
  Apply(lora, mode, modules);
}

void LoraWeights::Apply(const LoraState& lora, LoraMode mode, const std::vector<size_t>& modules) {
  if (modules.empty()) return;
  // The merged weights in the parameters' precision, even inside an autocast region.
  c10::impl::ExcludeDispatchKeyGuard noAutocast(c10::autocast_dispatch_keyset);
  std::optional<c10::AutoGradMode> grad;
  if (mode == LoraMode::kTrain) grad.emplace(true);
  if (mode == LoraMode::kMerged) grad.emplace(false);
  const double scale = lora.Scale();
  try {
    for (size_t i : modules) {
      const LoraModule& m = lora.modules.at(i);
      torch::Tensor a = m.a;
      if (mode == LoraMode::kTrain && lora.dropout > 0 && m.module.is_training()) {
        // Weight space cannot drop per example: one mask on A's input columns per call drops
        // input feature j from B·A·x for every example (the activation-space path drops per
        // element, as PEFT's lora_dropout).
        const double keep = 1 - lora.dropout;
        torch::Tensor mask = torch::empty({a.size(1)}, a.options()).bernoulli_(keep).div_(keep);
        a = a * mask;
      }
      // One fused kernel: W0 + scale * (B @ A). W0 is detached: it never receives a gradient.
      torch::Tensor weight = torch::addmm(m.w0.detach(), m.b, a, /*beta=*/1, /*alpha=*/scale);
      restore_.emplace_back(m.module, m.w0);
      torch::jit::Module(m.module).setattr("weight", weight);
    }
  } catch (...) {
    // The destructor does not run for a constructor that throws.
    for (auto& [module, w0] : restore_) module.setattr("weight", w0);
    throw;
  }
}

LoraWeights::~LoraWeights() {
  for (auto& [module, w0] : restore_) {
    try {
      module.setattr("weight", w0);
    } catch (...) {
      // Cannot happen for a slot that setattr just wrote; a destructor must not throw.
    }
  }
}

// ---- Activation-space adapters: a rewritten copy of a method's graph ------------------------

// One method of an adapted model, as CallWithAdapters runs it.
struct LoraMethod {
  // The method's graph, inlined, with the adapted linears rewritten; its inputs are the
  // method's (self first), then per module in `activation`: A, B, and whether to apply dropout.
  // Null when the graph cannot be followed: every adapter then works in weight space.
  std::unique_ptr<torch::jit::GraphFunction> function;
  std::vector<size_t> activation;   // LoraState::modules indices rewritten in the graph
  std::vector<size_t> weightSpace;  // indices whose weight the graph uses otherwise
  // `function` with token pruning (execution_graph.h).
  PrunedFunction pruned;
};

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
  explicit AdapterUses(const LoraState& lora) : linears(lora.modules.size()), other(lora.modules.size(), false) {
    for (size_t i = 0; i < lora.modules.size(); ++i) adapted_.emplace(lora.modules[i].module._ivalue().get(), i);
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

std::shared_ptr<LoraMethod> BuildLoraMethod(const torch::jit::Module& module, const torch::jit::Method& method,
                                            const LoraState& lora) {
  auto out = std::make_shared<LoraMethod>();
  const size_t count = lora.modules.size();
  // TORCH_BERT_LORA_WEIGHT_SPACE=1: every adapter in weight space (for comparison, or should
  // a graph defeat the rewrite).
  const char* weightSpaceOnly = std::getenv("TORCH_BERT_LORA_WEIGHT_SPACE");
  if (weightSpaceOnly != nullptr && std::strcmp(weightSpaceOnly, "1") == 0) {
    for (size_t i = 0; i < count; ++i) out->weightSpace.push_back(i);
    return out;
  }
  std::shared_ptr<torch::jit::Graph> graph = torch::jit::toGraphFunction(method.function()).graph()->copy();
  InlineAll(*graph);
  AdapterUses uses(lora);
  if (!uses.Trace(*graph, module._ivalue())) {
    for (size_t i = 0; i < count; ++i) out->weightSpace.push_back(i);
    return out;
  }
  const c10::IValue none;
  const double scale = lora.Scale();
  for (size_t i = 0; i < count; ++i) {
    if (uses.other[i]) {
      out->weightSpace.push_back(i);
      continue;
    }
    if (uses.linears[i].empty()) continue;  // not used by this method
    out->activation.push_back(i);
    const std::string tag = "lora_" + std::to_string(i);
    Value* a = graph->addInput(tag + "_A")->setType(c10::TensorType::get());
    Value* b = graph->addInput(tag + "_B")->setType(c10::TensorType::get());
    Value* dropping = graph->addInput(tag + "_dropout")->setType(c10::BoolType::get());
    for (Node* linear : uses.linears[i]) {
      torch::jit::WithInsertPoint after(linear->next());
      Value* y = linear->output();
      Value* x = linear->input(0);
      if (lora.dropout > 0) x = graph->insert(c10::aten::dropout, {x, lora.dropout, dropping});
      Value* low = graph->insert(c10::aten::linear, {x, a, none});
      Value* delta = graph->insert(c10::aten::linear, {low, b, none});
      // y + scale * delta, then every former use of y takes the sum.
      // (alpha is keyword-only in add.Tensor; positionally it would match add.Scalar.)
      Value* sum = graph->insert(c10::aten::add, {y, delta}, {torch::jit::NamedValue("alpha", scale)});
      y->replaceAllUsesAfterNodeWith(sum->node(), sum);
    }
  }
  graph->lint();
  out->function = std::make_unique<torch::jit::GraphFunction>(
      c10::QualifiedName("__torch__.torch_bert.lora." + method.name()), graph, nullptr);
  return out;
}

LoraMethod& LoraMethodFor(ModuleState& state, const torch::jit::Method& method) {
  auto& cache = state.lora->methods;
  auto it = cache.find(method.name());
  if (it == cache.end()) it = cache.emplace(method.name(), BuildLoraMethod(state.module, method, *state.lora)).first;
  return *it->second;
}

}  // namespace

c10::IValue CallWithAdapters(ModuleState& state, const torch::jit::Method& method, std::vector<c10::IValue> inputs,
                             LoraMode mode) {
  if (!state.lora) return CallPruned(state, method, std::move(inputs));
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

const std::vector<std::string>* LoraPrunedOps(ModuleState& state, const std::string& method) {
  if (!state.lora) return nullptr;
  auto it = state.lora->methods.find(method);
  if (it == state.lora->methods.end()) return nullptr;
  return it->second->pruned.narrowed();
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

std::vector<torch::Tensor> LoraParameters(const ModuleState& state) {
  std::vector<torch::Tensor> out;
  if (!state.lora) return out;
  for (const auto& m : state.lora->modules) {
    out.push_back(m.a);
    out.push_back(m.b);
  }
  return out;
}

void MoveLora(const ModuleState& state, const c10::Device& device) {
  if (!state.lora) return;
  torch::NoGradGuard noGrad;
  for (auto& m : state.lora->modules) {
    for (torch::Tensor* t : {&m.a, &m.b}) {
      if (t->device() == device) continue;
      // set_data keeps the TensorImpl, so JS handles and optimizers follow the move.
      t->mutable_grad() = torch::Tensor();
      t->set_data(t->to(device));
    }
  }
}

// ---- applyLora -----------------------------------------------------------------------------

Napi::Value ApplyLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string fn = "applyLora";
    ModuleStatePtr model = ScriptModule::Get(info[0], fn + ": model");
    LoraSpec spec = ReadSpec(info[1]);

    auto lora = std::make_shared<LoraState>();
    lora->targets = spec.targets;
    lora->rank = spec.rank;
    lora->alpha = spec.alpha;
    lora->dropout = spec.dropout;
    lora->seed = spec.seed;

    std::lock_guard<std::mutex> lock(*model->mutex);
    if (model->lora) ThrowError(env, fn + ": the model already has LoRA adapters; merge() them first");

    // A's initialisation, like PEFT's kaiming_uniform_(a=sqrt(5)) on lora_A [r, in], drawn from a
    // private generator (the global RNG is left alone), module after module in path order.
    at::Generator generator = at::detail::createCPUGenerator(spec.seed);
    std::vector<std::string> linear;
    std::unordered_set<const void*> seen;
    for (const auto& named : model->module.named_modules()) {
      std::optional<torch::Tensor> found = LinearWeight(named.value);
      if (!found) continue;
      linear.push_back(named.name);
      bool matched = std::any_of(spec.targets.begin(), spec.targets.end(),
                                 [&](const std::string& t) { return MatchesTarget(named.name, t); });
      // A module reachable by two paths is adapted once.
      if (!matched || !seen.insert(named.value._ivalue().get()).second) continue;

      torch::Tensor w0 = *found;
      const int64_t out = w0.size(0);
      const int64_t in = w0.size(1);
      torch::Tensor a;
      {
        torch::NoGradGuard noGrad;
        const double gain = std::sqrt(2.0 / (1 + 5.0));
        const double bound = std::sqrt(3.0) * gain / std::sqrt(static_cast<double>(in));
        a = torch::empty({spec.rank, in}, torch::kFloat);
        a.uniform_(-bound, bound, generator);
        a = a.to(w0.device(), w0.scalar_type());
      }
      torch::Tensor b =
          torch::zeros({out, spec.rank}, torch::TensorOptions().dtype(w0.scalar_type()).device(w0.device()));
      a.set_requires_grad(true);
      b.set_requires_grad(true);
      lora->modules.push_back(LoraModule{named.name, named.value, w0, a, b});
    }
    if (lora->modules.empty()) {
      std::string message = fn + ": no module with a 2-D weight has a path ending in " + JoinQuoted(spec.targets);
      message += linear.empty() ? " (the model has none)" : " (such modules: " + JoinQuoted(linear, 8) + ")";
      ThrowError(env, message);
    }
    // Freeze W0 only once everything else has succeeded.
    for (auto& m : lora->modules) m.w0.set_requires_grad(false);
    model->lora = lora;

    LoraInit init{model, lora};
    return GetAddonData(env).loraAdaptersConstructor.New({Napi::External<LoraInit>::New(env, &init)});
  });
}

// ---- LoraAdapters --------------------------------------------------------------------------

Napi::Function LoraAdapters::Define(Napi::Env env) {
  return DefineClass(env, "LoraAdapters",
                     {
                         InstanceAccessor<&LoraAdapters::Modules>("modules"),
                         InstanceMethod<&LoraAdapters::Parameters>("parameters"),
                         InstanceAccessor<&LoraAdapters::TrainableCount>("trainableCount"),
                         InstanceMethod<&LoraAdapters::Merge>("merge"),
                         InstanceMethod<&LoraAdapters::Plan>("plan"),
                         InstanceMethod<&LoraAdapters::Save>("save"),
                         InstanceMethod<&LoraAdapters::Load>("load"),
                         InstanceMethod<&LoraAdapters::Dispose>("dispose"),
                     });
}

LoraAdapters::LoraAdapters(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LoraAdapters>(info) {
  Guard(info.Env(), [&] {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      ThrowTypeError(info.Env(), "LoraAdapters cannot be constructed directly; use applyLora()");
    }
    TagWrapped(info.This().As<Napi::Object>(), WrapClass::LoraAdapters);
    auto* init = info[0].As<Napi::External<LoraInit>>().Data();
    model_ = init->model;
    lora_ = init->lora;
  });
}

LoraAdapters* LoraAdapters::Unwrap(const Napi::Object& receiver) {
  return UnwrapReceiver<LoraAdapters>(receiver, WrapClass::LoraAdapters);
}

void LoraAdapters::Check(Napi::Env env) const {
  if (!lora_) ThrowError(env, "LoraAdapters has been disposed");
}

Napi::Value LoraAdapters::Modules(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Check(env);
    Napi::Array out = Napi::Array::New(env, lora_->modules.size());
    for (size_t i = 0; i < lora_->modules.size(); ++i) {
      out.Set(static_cast<uint32_t>(i), Napi::String::New(env, lora_->modules[i].path));
    }
    return out;
  });
}

Napi::Value LoraAdapters::Parameters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Check(env);
    std::vector<std::pair<std::string, torch::Tensor>> params;
    {
      std::lock_guard<std::mutex> lock(*model_->mutex);
      for (const auto& m : lora_->modules) {
        params.emplace_back(m.path + ".lora_A", m.a);
        params.emplace_back(m.path + ".lora_B", m.b);
      }
    }
    Napi::Array out = Napi::Array::New(env, params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      Napi::Array pair = Napi::Array::New(env, 2);
      pair.Set(0u, Napi::String::New(env, params[i].first));
      // The same TensorImpl as the adapters': optimizers built on it train them.
      pair.Set(1u, Tensor::Wrap(env, params[i].second, /*ownsMemory=*/false));
      out.Set(static_cast<uint32_t>(i), pair);
    }
    return out;
  });
}

Napi::Value LoraAdapters::TrainableCount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Check(env);
    int64_t count = 0;
    for (const auto& m : lora_->modules) count += m.a.numel() + m.b.numel();
    return Napi::Number::New(env, static_cast<double>(count));
  });
}

Napi::Value LoraAdapters::Merge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Check(env);
    std::lock_guard<std::mutex> lock(*model_->mutex);
    if (!lora_->attached) ThrowError(env, "LoraAdapters.merge: the adapters are already merged");
    {
      torch::NoGradGuard noGrad;
      // In place: handles on W0 (namedParameters(), optimizers) see the merged weight.
      for (auto& m : lora_->modules) m.w0.addmm_(m.b, m.a, /*beta=*/1, /*alpha=*/lora_->Scale());
    }
    // The merged weights stay frozen, as LoRA trained them: whatever flag the encoder file had
    // is not restored, since the technique (the trainer), not the file, decides what trains.
    if (model_->lora == lora_) model_->lora.reset();
    lora_->attached = false;
    return env.Undefined();
  });
}

Napi::Value LoraAdapters::Plan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string name = info[0].IsUndefined() ? "forward" : ReadString(info[0], "LoraAdapters.plan: method");
    Check(env);
    std::lock_guard<std::mutex> lock(*model_->mutex);
    if (!lora_->attached || model_->lora != lora_) ThrowError(env, "LoraAdapters.plan: the adapters are merged");
    auto method = model_->module.find_method(name);
    if (!method) ThrowError(env, "LoraAdapters.plan: the model has no method '" + name + "'");
    auto [activation, weightSpace] = AdapterPlan(*model_, *method);
    auto strings = [&](const std::vector<std::string>& items) {
      Napi::Array out = Napi::Array::New(env, items.size());
      for (size_t i = 0; i < items.size(); ++i) out.Set(static_cast<uint32_t>(i), Napi::String::New(env, items[i]));
      return out;
    };
    Napi::Object out = Napi::Object::New(env);
    out.Set("activation", strings(activation));
    out.Set("weightSpace", strings(weightSpace));
    return out;
  });
}

Napi::Value LoraAdapters::Save(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    std::string path = ReadPath(info[0], "LoraAdapters.save: path");
    Check(env);
    std::lock_guard<std::mutex> lock(*model_->mutex);
    // {"<module>.lora_A": tensor, ..., "rank": r, "alpha": a, "dropout": p, "seed": s,
    //  "targets": [...]}: tensor names as PEFT's (minus its ".weight"), CPU copies so that the
    // file loads anywhere.
    std::vector<std::pair<std::string, c10::IValue>> entries;
    for (const auto& m : lora_->modules) {
      entries.emplace_back(m.path + ".lora_A", m.a);
      entries.emplace_back(m.path + ".lora_B", m.b);
    }
    c10::List<std::string> targets;
    for (const auto& t : lora_->targets) targets.push_back(t);
    entries.emplace_back("rank", lora_->rank);
    entries.emplace_back("alpha", lora_->alpha);
    entries.emplace_back("dropout", lora_->dropout);
    entries.emplace_back("seed", static_cast<int64_t>(lora_->seed));
    entries.emplace_back("targets", targets);
    WriteTorchSaveFile(entries, path, "LoRA adapters");
    return env.Undefined();
  });
}

Napi::Value LoraAdapters::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string fn = "LoraAdapters.load";
    std::string path = ReadPath(info[0], fn + ": path");
    Check(env);
    c10::IValue file = ReadPickleFile(path, "LoRA adapters");
    const std::string prefix = fn + ": '" + path + "' ";
    if (!file.isGenericDict())
      ThrowError(env, prefix + "does not hold LoRA adapters (expected a dict, found a " + file.tagKind() + ")");

    std::unordered_map<std::string, torch::Tensor> tensors;
    std::optional<int64_t> rank;
    std::optional<double> alpha;
    std::optional<std::vector<std::string>> targets;
    for (const auto& entry : file.toGenericDict()) {
      if (!entry.key().isString()) continue;
      const std::string& key = entry.key().toStringRef();
      const c10::IValue& value = entry.value();
      if (value.isTensor()) {
        tensors.emplace(key, value.toTensor());
      } else if (key == "rank" && value.isInt()) {
        rank = value.toInt();
      } else if (key == "alpha" && (value.isDouble() || value.isInt())) {
        alpha = value.isDouble() ? value.toDouble() : static_cast<double>(value.toInt());
      } else if (key == "targets" && value.isList()) {
        targets.emplace();
        for (const auto& t : value.toListRef()) {
          if (t.isString()) targets->push_back(t.toStringRef());
        }
      }
    }

    std::lock_guard<std::mutex> lock(*model_->mutex);
    if (!lora_->attached) ThrowError(env, fn + ": the adapters are merged; there is nothing to load into");
    if (rank && *rank != lora_->rank) {
      ThrowError(env, prefix + "holds rank-" + std::to_string(*rank) + " adapters; these have rank " +
                          std::to_string(lora_->rank));
    }
    if (alpha && std::abs(*alpha - lora_->alpha) > 1e-12 * std::max(1.0, std::abs(lora_->alpha))) {
      std::ostringstream os;
      os << prefix << "holds adapters with alpha " << *alpha << "; these have alpha " << lora_->alpha;
      ThrowError(env, os.str());
    }
    if (targets) {
      auto sorted = [](std::vector<std::string> v) {
        std::sort(v.begin(), v.end());
        return v;
      };
      if (sorted(*targets) != sorted(lora_->targets)) {
        ThrowError(env, prefix + "holds adapters for targets [" + JoinQuoted(*targets) + "]; these target [" +
                            JoinQuoted(lora_->targets) + "]");
      }
    }
    // Check everything before changing anything.
    std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
    size_t used = 0;
    for (const auto& m : lora_->modules) {
      for (const auto& [suffix, dst] : {std::make_pair(".lora_A", m.a), std::make_pair(".lora_B", m.b)}) {
        const std::string name = m.path + suffix;
        auto it = tensors.find(name);
        if (it == tensors.end()) ThrowError(env, prefix + "has no tensor '" + name + "'");
        if (!it->second.sizes().equals(dst.sizes())) {
          ThrowError(env, prefix + "has '" + name + "' of shape " + ShapeString(it->second.sizes()) + ", expected " +
                              ShapeString(dst.sizes()));
        }
        copies.emplace_back(dst, it->second);
        ++used;
      }
    }
    if (used != tensors.size()) {
      for (const auto& [name, t] : tensors) {
        bool known = std::any_of(lora_->modules.begin(), lora_->modules.end(), [&](const LoraModule& m) {
          return name == m.path + ".lora_A" || name == m.path + ".lora_B";
        });
        if (!known) ThrowError(env, prefix + "has tensor '" + name + "' for a module these adapters do not adapt");
      }
    }
    torch::NoGradGuard noGrad;
    for (auto& [dst, src] : copies) {
      torch::Tensor target = dst;
      target.copy_(src);
    }
    return env.Undefined();
  });
}

Napi::Value LoraAdapters::Dispose(const Napi::CallbackInfo& info) {
  // Only this handle goes: attached adapters belong to the model and keep working until
  // merged (the garbage collector may drop a handle at any time, which must not change the
  // model).
  model_.reset();
  lora_.reset();
  return info.Env().Undefined();
}

}  // namespace torch_bert
