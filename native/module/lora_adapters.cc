#include "module/lora_adapters.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>
#include <unordered_set>

#include "addon/addon_data.h"
#include "addon/arguments.h"
#include "addon/errors.h"
#include "module/method_call.h"
#include "module/script_module.h"

namespace torch_bert {

namespace {

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

// The adapters of one Linear with weight `w0` [out, in], as PEFT initialises them: A [rank, in]
// by kaiming_uniform_(a=sqrt(5)) drawn from `generator` (in float32, then on w0's device and
// dtype), B [out, rank] zero, so that the adapted module starts as the base one.
LoraModule NewLoraModule(const std::string& path, const torch::jit::Module& module, const torch::Tensor& w0,
                         int64_t rank, at::Generator& generator) {
  const int64_t out = w0.size(0);
  const int64_t in = w0.size(1);
  torch::Tensor a;
  {
    torch::NoGradGuard noGrad;
    const double gain = std::sqrt(2.0 / (1 + 5.0));
    const double bound = std::sqrt(3.0) * gain / std::sqrt(static_cast<double>(in));
    a = torch::empty({rank, in}, torch::kFloat);
    a.uniform_(-bound, bound, generator);
    a = a.to(w0.device(), w0.scalar_type());
  }
  torch::Tensor b = torch::zeros({out, rank}, torch::TensorOptions().dtype(w0.scalar_type()).device(w0.device()));
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  return LoraModule{path, module, w0, a, b};
}

}  // namespace

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
    if (model->bottleneck) ThrowError(env, fn + ": the model has bottleneck adapters, which do not combine with LoRA");

    // A's initialisation, like PEFT's kaiming_uniform_(a=sqrt(5)) on lora_A [r, in], drawn from a
    // private generator (the global RNG is left alone), module after module in path order.
    at::Generator generator = at::detail::createCPUGenerator(spec.seed);
    std::vector<std::string> linear;
    std::unordered_set<const void*> seen;
    std::vector<bool> targetUsed(spec.targets.size(), false);
    for (const auto& named : model->module.named_modules()) {
      std::optional<torch::Tensor> found = LinearWeight(named.value);
      if (!found) continue;
      linear.push_back(named.name);
      bool matched = false;
      for (size_t t = 0; t < spec.targets.size(); ++t) {
        if (!MatchesTarget(named.name, spec.targets[t])) continue;
        targetUsed[t] = true;
        matched = true;
      }
      // A module reachable by two paths is adapted once.
      if (!matched || !seen.insert(named.value._ivalue().get()).second) continue;

      lora->modules.push_back(NewLoraModule(named.name, named.value, *found, spec.rank, generator));
    }
    if (lora->modules.empty()) {
      std::string message = fn + ": no module with a 2-D weight has a path ending in " + JoinQuoted(spec.targets);
      message += linear.empty() ? " (the model has none)" : " (such modules: " + JoinQuoted(linear, 8) + ")";
      ThrowError(env, message);
    }
    for (size_t t = 0; t < spec.targets.size(); ++t) {
      if (!targetUsed[t]) lora->unusedTargets.push_back(spec.targets[t]);
    }
    // Freeze W0 only once everything else has succeeded.
    for (auto& m : lora->modules) m.w0.set_requires_grad(false);
    model->lora = lora;

    return LoraAdapters::New(env, GetAddonData(env).loraAdaptersConstructor, model, lora);
  });
}

// ---- LoraAdapters --------------------------------------------------------------------------

Napi::Function LoraAdapters::Define(Napi::Env env) {
  return DefineWith(env, {
                             InstanceMethod<&LoraAdapters::Merge>("merge"),
                             InstanceMethod<&LoraAdapters::Plan>("plan"),
                             InstanceAccessor<&LoraAdapters::UnusedTargets>("unusedTargets"),
                         });
}

NamedTensors LoraAdapters::Tensors(const LoraState& lora) {
  NamedTensors out;
  for (const auto& m : lora.modules) {
    out.emplace_back(m.path + ".lora_A", m.a);
    out.emplace_back(m.path + ".lora_B", m.b);
  }
  return out;
}

void LoraAdapters::AddSettings(const LoraState& lora, std::vector<std::pair<std::string, c10::IValue>>& entries) {
  c10::List<std::string> targets;
  for (const auto& t : lora.targets) targets.push_back(t);
  entries.emplace_back("rank", lora.rank);
  entries.emplace_back("alpha", lora.alpha);
  entries.emplace_back("dropout", lora.dropout);
  entries.emplace_back("seed", static_cast<int64_t>(lora.seed));
  entries.emplace_back("targets", targets);
}

void LoraAdapters::CheckSettings(Napi::Env env, const std::string& prefix, const LoraState& lora,
                                 const c10::impl::GenericDict& file) {
  std::optional<int64_t> rank;
  std::optional<double> alpha;
  std::optional<std::vector<std::string>> targets;
  for (const auto& entry : file) {
    if (!entry.key().isString()) continue;
    const std::string& key = entry.key().toStringRef();
    const c10::IValue& value = entry.value();
    if (key == "rank" && value.isInt()) {
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
  if (!lora.attached) ThrowError(env, "LoraAdapters.load: the adapters are merged; there is nothing to load into");
  if (rank && *rank != lora.rank) {
    ThrowError(env, prefix + "holds rank-" + std::to_string(*rank) + " adapters; these have rank " +
                        std::to_string(lora.rank));
  }
  if (alpha && std::abs(*alpha - lora.alpha) > 1e-12 * std::max(1.0, std::abs(lora.alpha))) {
    std::ostringstream os;
    os << prefix << "holds adapters with alpha " << *alpha << "; these have alpha " << lora.alpha;
    ThrowError(env, os.str());
  }
  if (targets) {
    auto sorted = [](std::vector<std::string> v) {
      std::sort(v.begin(), v.end());
      return v;
    };
    if (sorted(*targets) != sorted(lora.targets)) {
      ThrowError(env, prefix + "holds adapters for targets [" + JoinQuoted(*targets) + "]; these target [" +
                          JoinQuoted(lora.targets) + "]");
    }
  }
}

Napi::Value LoraAdapters::Merge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Check(env);
    std::lock_guard<std::mutex> lock(*model_->mutex);
    if (!state_->attached) ThrowError(env, "LoraAdapters.merge: the adapters are already merged");
    {
      torch::NoGradGuard noGrad;
      // In place: handles on W0 (namedParameters(), optimizers) see the merged weight.
      for (auto& m : state_->modules) m.w0.addmm_(m.b, m.a, /*beta=*/1, /*alpha=*/state_->Scaling());
    }
    // The merged weights stay frozen, as LoRA trained them: whatever flag the encoder file had
    // is not restored, since the technique (the trainer), not the file, decides what trains.
    if (model_->lora == state_) model_->lora.reset();
    state_->attached = false;
    return env.Undefined();
  });
}

Napi::Value LoraAdapters::UnusedTargets(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Check(env);
    Napi::Array out = Napi::Array::New(env, state_->unusedTargets.size());
    for (size_t i = 0; i < state_->unusedTargets.size(); ++i) {
      out.Set(static_cast<uint32_t>(i), Napi::String::New(env, state_->unusedTargets[i]));
    }
    return out;
  });
}

Napi::Value LoraAdapters::Plan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string name = info[0].IsUndefined() ? "forward" : ReadString(info[0], "LoraAdapters.plan: method");
    Check(env);
    std::lock_guard<std::mutex> lock(*model_->mutex);
    if (!state_->attached || model_->lora != state_) ThrowError(env, "LoraAdapters.plan: the adapters are merged");
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

}  // namespace torch_bert
