#include "module/bottleneck_adapters.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "addon/addon_data.h"
#include "addon/arguments.h"
#include "addon/errors.h"
#include "addon/wrap_tag.h"
#include "graph/bottleneck_rewrite.h"
#include "module/script_module.h"
#include "tensor/pickle_file.h"
#include "tensor/tensor.h"

namespace torch_bert {

namespace {

// Passed through an External to the constructor, which is otherwise unusable from JS.
struct BottleneckInit {
  ModuleStatePtr model;
  std::shared_ptr<BottleneckState> adapters;
};

struct BottleneckSpec {
  std::string config;
  std::optional<int64_t> size;
  std::optional<double> reductionFactor;
  std::string activation;
  uint64_t seed = 0;
};

BottleneckSpec ReadSpec(const Napi::Value& value) {
  Napi::Env env = value.Env();
  const std::string fn = "applyAdapters: spec";
  Napi::Object object = ReadObject(value, fn);
  BottleneckSpec spec;
  spec.config = ReadString(object.Get("config"), fn + ".config");
  if (spec.config != "houlsby" && spec.config != "pfeiffer") {
    ThrowError(env, fn + ".config must be 'houlsby' or 'pfeiffer', got '" + spec.config + "'");
  }
  const bool hasSize = !IsMissing(object.Get("size"));
  const bool hasFactor = !IsMissing(object.Get("reductionFactor"));
  if (hasSize == hasFactor) ThrowError(env, fn + " takes one of size and reductionFactor");
  if (hasSize) spec.size = ReadInteger(object.Get("size"), fn + ".size", 1, int64_t{1} << 20);
  if (hasFactor) {
    spec.reductionFactor = ReadNumber(object.Get("reductionFactor"), fn + ".reductionFactor");
    if (!(*spec.reductionFactor >= 1)) ThrowError(env, fn + ".reductionFactor must be >= 1");
  }
  spec.activation = ReadString(object.Get("activation"), fn + ".activation");
  if (!IsBottleneckActivation(spec.activation)) {
    ThrowError(env, fn + ".activation must be 'relu', 'gelu' or 'swish', got '" + spec.activation + "'");
  }
  // Negative seeds wrap to uint64 as in torch.Generator.manual_seed.
  spec.seed =
      static_cast<uint64_t>(ReadInteger(object.Get("seed"), fn + ".seed", -(int64_t{1} << 53), int64_t{1} << 53));
  return spec;
}

// The submodule `name` of `sublayer` with a 2-D floating-point weight parameter, if any.
std::optional<std::pair<torch::jit::Module, torch::Tensor>> OutputProjection(const torch::jit::Module& sublayer,
                                                                             const std::string& name) {
  auto slot = sublayer.type()->findAttributeSlot(name);
  if (!slot) return std::nullopt;
  c10::IValue dense = sublayer._ivalue()->getSlot(*slot);
  if (!dense.isObject() || !dense.toObject()->type()->is_module()) return std::nullopt;
  torch::jit::Module module(dense.toObject());
  auto weightSlot = module.type()->findAttributeSlot("weight");
  if (!weightSlot || !module.type()->is_parameter(*weightSlot)) return std::nullopt;
  c10::IValue value = module._ivalue()->getSlot(*weightSlot);
  if (!value.isTensor()) return std::nullopt;
  torch::Tensor weight = value.toTensor();
  if (!weight.defined() || weight.dim() != 2 || !weight.is_floating_point()) return std::nullopt;
  return std::make_pair(module, weight);
}

bool EndsWith(const std::string& path, const std::string& suffix) {
  return path == suffix || (path.size() > suffix.size() &&
                            path.compare(path.size() - suffix.size() - 1, std::string::npos, "." + suffix) == 0);
}

// Where a sub-layer's adapter goes, from its path, and the name of its output projection:
// Hugging Face's BERT and RoBERTa have `<layer>.attention.output.dense` (the attention's) and
// `<layer>.output.dense` (the feed-forward's); DistilBERT `<layer>.attention.out_lin` and
// `<layer>.ffn.lin2`. A candidate without that projection is no sub-layer.
struct Placement {
  std::string position;    // "attention" or "output" (the feed-forward)
  std::string projection;  // the projection's name in the sub-layer
};

std::optional<Placement> PlacementOf(const std::string& path) {
  if (EndsWith(path, "attention.output")) return Placement{"attention", "dense"};
  if (EndsWith(path, "output")) return Placement{"output", "dense"};
  if (EndsWith(path, "attention")) return Placement{"attention", "out_lin"};
  if (EndsWith(path, "ffn")) return Placement{"output", "lin2"};
  return std::nullopt;
}

std::string ShapeString(c10::IntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;
  return os.str();
}

std::vector<std::pair<std::string, torch::Tensor>> NamedTensorsOf(const BottleneckState& adapters) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& m : adapters.modules) {
    std::vector<torch::Tensor> tensors = BottleneckTensors(m);
    for (size_t j = 0; j < tensors.size(); ++j) out.emplace_back(m.path + "." + kBottleneckTensorNames[j], tensors[j]);
  }
  return out;
}

}  // namespace

// ---- applyAdapters -------------------------------------------------------------------------

Napi::Value ApplyAdapters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string fn = "applyAdapters";
    ModuleStatePtr model = ScriptModule::Get(info[0], fn + ": model");
    BottleneckSpec spec = ReadSpec(info[1]);

    auto adapters = std::make_shared<BottleneckState>();
    adapters->config = spec.config;
    adapters->activation = spec.activation;
    adapters->seed = spec.seed;

    std::lock_guard<std::mutex> lock(*model->mutex);
    if (model->bottleneck) ThrowError(env, fn + ": the model already has bottleneck adapters");
    if (model->lora) ThrowError(env, fn + ": the model has LoRA adapters; merge() them first");

    // down.weight drawn as AdapterHub's "bert" init, N(0, 0.02), from a private generator (the
    // global RNG is left alone), sub-layer after sub-layer in path order; up and the biases are
    // zero, so that the adapted model starts as the encoder's own function.
    at::Generator generator = at::detail::createCPUGenerator(spec.seed);
    std::vector<std::string> outputs;
    for (const auto& named : model->module.named_modules()) {
      std::optional<Placement> placement = PlacementOf(named.name);
      if (!placement) continue;
      std::optional<std::pair<torch::jit::Module, torch::Tensor>> dense =
          OutputProjection(named.value, placement->projection);
      if (!dense) continue;
      outputs.push_back(named.name);
      if (spec.config == "pfeiffer" && placement->position == "attention") continue;
      const torch::Tensor& w = dense->second;
      const int64_t hidden = w.size(0);
      int64_t size = spec.size ? *spec.size : static_cast<int64_t>(std::floor(hidden / *spec.reductionFactor));
      if (size < 1) {
        ThrowError(env, fn + ": reduction factor " + std::to_string(*spec.reductionFactor) +
                            " leaves no bottleneck for '" + named.name + "' (hidden size " + std::to_string(hidden) +
                            ")");
      }
      if (adapters->size != 0 && adapters->size != size) {
        ThrowError(env, fn + ": sub-layers of different widths need one bottleneck size; '" + named.name + "' has " +
                            std::to_string(hidden));
      }
      adapters->size = size;
      auto options = torch::TensorOptions().dtype(w.scalar_type()).device(w.device());
      torch::Tensor downWeight;
      {
        torch::NoGradGuard noGrad;
        downWeight = torch::empty({size, hidden}, torch::kFloat);
        downWeight.normal_(0.0, 0.02, generator);
        downWeight = downWeight.to(w.device(), w.scalar_type());
      }
      BottleneckModule m{named.name,
                         placement->projection,
                         dense->first,
                         downWeight,
                         torch::zeros({size}, options),
                         torch::zeros({hidden, size}, options),
                         torch::zeros({hidden}, options)};
      for (torch::Tensor t : BottleneckTensors(m)) t.set_requires_grad(true);
      adapters->modules.push_back(std::move(m));
    }
    if (adapters->modules.empty()) {
      std::string message = fn +
                            ": no sub-layer '<layer>.attention.output' or '<layer>.output' with an output projection "
                            "'dense' (a linear layer), as Hugging Face names BERT's and RoBERTa's, nor "
                            "'<layer>.attention' or '<layer>.ffn' with 'out_lin' or 'lin2' (DistilBERT's), was found";
      if (!outputs.empty()) message += " for config '" + spec.config + "'";
      ThrowError(env, message);
    }
    model->bottleneck = adapters;

    BottleneckInit init{model, adapters};
    return GetAddonData(env).bottleneckAdaptersConstructor.New({Napi::External<BottleneckInit>::New(env, &init)});
  });
}

// ---- BottleneckAdapters --------------------------------------------------------------------

Napi::Function BottleneckAdapters::Define(Napi::Env env) {
  return DefineClass(env, "BottleneckAdapters",
                     {
                         InstanceAccessor<&BottleneckAdapters::Modules>("modules"),
                         InstanceMethod<&BottleneckAdapters::Parameters>("parameters"),
                         InstanceAccessor<&BottleneckAdapters::TrainableCount>("trainableCount"),
                         InstanceAccessor<&BottleneckAdapters::Size>("size"),
                         InstanceMethod<&BottleneckAdapters::Save>("save"),
                         InstanceMethod<&BottleneckAdapters::Load>("load"),
                         InstanceMethod<&BottleneckAdapters::Dispose>("dispose"),
                     });
}

BottleneckAdapters::BottleneckAdapters(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BottleneckAdapters>(info) {
  Guard(info.Env(), [&] {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      ThrowTypeError(info.Env(), "BottleneckAdapters cannot be constructed directly; use applyAdapters()");
    }
    TagWrapped(info.This().As<Napi::Object>(), WrapClass::BottleneckAdapters);
    auto* init = info[0].As<Napi::External<BottleneckInit>>().Data();
    model_ = init->model;
    adapters_ = init->adapters;
  });
}

BottleneckAdapters* BottleneckAdapters::Unwrap(const Napi::Object& receiver) {
  return UnwrapReceiver<BottleneckAdapters>(receiver, WrapClass::BottleneckAdapters);
}

void BottleneckAdapters::Check(Napi::Env env) const {
  if (!adapters_) ThrowError(env, "BottleneckAdapters has been disposed");
}

Napi::Value BottleneckAdapters::Modules(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Check(env);
    Napi::Array out = Napi::Array::New(env, adapters_->modules.size());
    for (size_t i = 0; i < adapters_->modules.size(); ++i) {
      out.Set(static_cast<uint32_t>(i), Napi::String::New(env, adapters_->modules[i].path));
    }
    return out;
  });
}

Napi::Value BottleneckAdapters::Parameters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Check(env);
    std::vector<std::pair<std::string, torch::Tensor>> params;
    {
      std::lock_guard<std::mutex> lock(*model_->mutex);
      params = NamedTensorsOf(*adapters_);
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

Napi::Value BottleneckAdapters::TrainableCount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Check(env);
    int64_t count = 0;
    for (const auto& m : adapters_->modules) {
      for (const auto& t : BottleneckTensors(m)) count += t.numel();
    }
    return Napi::Number::New(env, static_cast<double>(count));
  });
}

Napi::Value BottleneckAdapters::Size(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Check(env);
    return Napi::Number::New(env, static_cast<double>(adapters_->size));
  });
}

Napi::Value BottleneckAdapters::Save(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    std::string path = ReadPath(info[0], "BottleneckAdapters.save: path");
    Check(env);
    std::lock_guard<std::mutex> lock(*model_->mutex);
    // {"<sub-layer>.adapter.down.weight": tensor, ..., "config": c, "size": m, "activation": a,
    //  "seed": s}: the names the saved classifier gives the same tensors.
    std::vector<std::pair<std::string, c10::IValue>> entries;
    for (auto& [name, t] : NamedTensorsOf(*adapters_)) entries.emplace_back(name, t);
    entries.emplace_back("config", adapters_->config);
    entries.emplace_back("size", adapters_->size);
    entries.emplace_back("activation", adapters_->activation);
    entries.emplace_back("seed", static_cast<int64_t>(adapters_->seed));
    WriteTorchSaveFile(entries, path, "bottleneck adapters");
    return env.Undefined();
  });
}

Napi::Value BottleneckAdapters::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string fn = "BottleneckAdapters.load";
    std::string path = ReadPath(info[0], fn + ": path");
    Check(env);
    c10::IValue file = ReadPickleFile(path, "bottleneck adapters");
    const std::string prefix = fn + ": '" + path + "' ";
    if (!file.isGenericDict()) {
      ThrowError(env, prefix + "does not hold bottleneck adapters (expected a dict, found a " + file.tagKind() + ")");
    }
    std::unordered_map<std::string, torch::Tensor> tensors;
    std::unordered_map<std::string, std::string> strings;
    for (const auto& entry : file.toGenericDict()) {
      if (!entry.key().isString()) continue;
      const std::string& key = entry.key().toStringRef();
      if (entry.value().isTensor()) tensors.emplace(key, entry.value().toTensor());
      if (entry.value().isString()) strings.emplace(key, entry.value().toStringRef());
    }
    std::lock_guard<std::mutex> lock(*model_->mutex);
    for (const auto& [key, mine] : {std::make_pair(std::string("config"), adapters_->config),
                                    std::make_pair(std::string("activation"), adapters_->activation)}) {
      auto it = strings.find(key);
      if (it != strings.end() && it->second != mine) {
        ThrowError(env, prefix + "holds adapters with " + key + " '" + it->second + "'; these have '" + mine + "'");
      }
    }
    // Check everything before changing anything.
    std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
    for (auto& [name, dst] : NamedTensorsOf(*adapters_)) {
      auto it = tensors.find(name);
      if (it == tensors.end()) ThrowError(env, prefix + "has no tensor '" + name + "'");
      if (!it->second.sizes().equals(dst.sizes())) {
        ThrowError(env, prefix + "has '" + name + "' of shape " + ShapeString(it->second.sizes()) + ", expected " +
                            ShapeString(dst.sizes()));
      }
      copies.emplace_back(dst, it->second);
    }
    if (copies.size() != tensors.size()) {
      const auto known = NamedTensorsOf(*adapters_);
      for (const auto& [name, t] : tensors) {
        if (std::none_of(known.begin(), known.end(), [&](const auto& k) { return k.first == name; })) {
          ThrowError(env, prefix + "has tensor '" + name + "' for a sub-layer these adapters do not adapt");
        }
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

Napi::Value BottleneckAdapters::Dispose(const Napi::CallbackInfo& info) {
  // Only this handle goes: attached adapters belong to the model (the garbage collector may
  // drop a handle at any time, which must not change the model).
  model_.reset();
  adapters_.reset();
  return info.Env().Undefined();
}

}  // namespace torch_bert
