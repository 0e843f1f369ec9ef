#include "module/bottleneck_adapters.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <optional>

#include "addon/addon_data.h"
#include "addon/arguments.h"
#include "addon/errors.h"
#include "graph/bottleneck_rewrite.h"
#include "module/script_module.h"

namespace torch_bert {

namespace {

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

// The adapter width for a sub-layer `hidden` wide: the spec's size, or hidden / reductionFactor
// rounded down (AdapterHub's), which must leave at least one.
int64_t BottleneckSizeFor(Napi::Env env, const std::string& fn, const BottleneckSpec& spec, const std::string& path,
                          int64_t hidden) {
  int64_t size = spec.size ? *spec.size : static_cast<int64_t>(std::floor(hidden / *spec.reductionFactor));
  if (size < 1) {
    ThrowError(env, fn + ": reduction factor " + std::to_string(*spec.reductionFactor) + " leaves no bottleneck for '" +
                        path + "' (hidden size " + std::to_string(hidden) + ")");
  }
  return size;
}

// The adapter of the sub-layer `path` after its projection `dense` (weight `w`), `size` wide,
// its tensors requiring grad: down.weight drawn from `generator`, the rest zero (see
// AddAdapters).
BottleneckModule NewAdapter(const std::string& path, const std::string& projection, const torch::jit::Module& dense,
                            const torch::Tensor& w, int64_t size, at::Generator& generator) {
  const int64_t hidden = w.size(0);
  auto options = torch::TensorOptions().dtype(w.scalar_type()).device(w.device());
  torch::Tensor downWeight;
  {
    torch::NoGradGuard noGrad;
    downWeight = torch::empty({size, hidden}, torch::kFloat);
    downWeight.normal_(0.0, 0.02, generator);
    downWeight = downWeight.to(w.device(), w.scalar_type());
  }
  BottleneckModule m{path,
                     projection,
                     dense,
                     downWeight,
                     torch::zeros({size}, options),
                     torch::zeros({hidden, size}, options),
                     torch::zeros({hidden}, options)};
  for (torch::Tensor t : BottleneckTensors(m)) t.set_requires_grad(true);
  return m;
}

// An adapter for every sub-layer of `module` the spec's config adapts, added to `adapters`
// (whose size it sets). Returns whether `module` has any sub-layer, adapted or not (for the
// message when none is adapted).
bool AddAdapters(Napi::Env env, const std::string& fn, const BottleneckSpec& spec, const torch::jit::Module& module,
                 BottleneckState& adapters) {
  // down.weight drawn as AdapterHub's "bert" init, N(0, 0.02), from a private generator (the
  // global RNG is left alone), sub-layer after sub-layer in path order; up and the biases are
  // zero, so that the adapted model starts as the encoder's own function.
  at::Generator generator = at::detail::createCPUGenerator(spec.seed);
  bool anySubLayer = false;
  for (const auto& named : module.named_modules()) {
    std::optional<Placement> placement = PlacementOf(named.name);
    if (!placement) continue;
    std::optional<std::pair<torch::jit::Module, torch::Tensor>> dense =
        OutputProjection(named.value, placement->projection);
    if (!dense) continue;
    anySubLayer = true;
    if (spec.config == "pfeiffer" && placement->position == "attention") continue;
    const torch::Tensor& w = dense->second;
    const int64_t hidden = w.size(0);
    const int64_t size = BottleneckSizeFor(env, fn, spec, named.name, hidden);
    if (adapters.size != 0 && adapters.size != size) {
      ThrowError(env, fn + ": sub-layers of different widths need one bottleneck size; '" + named.name + "' has " +
                          std::to_string(hidden));
    }
    adapters.size = size;
    adapters.modules.push_back(NewAdapter(named.name, placement->projection, dense->first, w, size, generator));
  }
  return anySubLayer;
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

    const bool anySubLayer = AddAdapters(env, fn, spec, model->module, *adapters);
    if (adapters->modules.empty()) {
      std::string message = fn +
                            ": no sub-layer '<layer>.attention.output' or '<layer>.output' with an output projection "
                            "'dense' (a linear layer), as Hugging Face names BERT's and RoBERTa's, nor "
                            "'<layer>.attention' or '<layer>.ffn' with 'out_lin' or 'lin2' (DistilBERT's), was found";
      if (anySubLayer) message += " for config '" + spec.config + "'";
      ThrowError(env, message);
    }
    model->bottleneck = adapters;

    return BottleneckAdapters::New(env, GetAddonData(env).bottleneckAdaptersConstructor, model, adapters);
  });
}

// ---- BottleneckAdapters --------------------------------------------------------------------

Napi::Function BottleneckAdapters::Define(Napi::Env env) {
  return DefineWith(env, {InstanceAccessor<&BottleneckAdapters::Size>("size")});
}

NamedTensors BottleneckAdapters::Tensors(const BottleneckState& adapters) {
  NamedTensors out;
  for (const auto& m : adapters.modules) {
    std::vector<torch::Tensor> tensors = BottleneckTensors(m);
    for (size_t j = 0; j < tensors.size(); ++j) out.emplace_back(m.path + "." + kBottleneckTensorNames[j], tensors[j]);
  }
  return out;
}

void BottleneckAdapters::AddSettings(const BottleneckState& adapters,
                                     std::vector<std::pair<std::string, c10::IValue>>& entries) {
  entries.emplace_back("config", adapters.config);
  entries.emplace_back("size", adapters.size);
  entries.emplace_back("activation", adapters.activation);
  entries.emplace_back("seed", static_cast<int64_t>(adapters.seed));
}

void BottleneckAdapters::CheckSettings(Napi::Env env, const std::string& prefix, const BottleneckState& adapters,
                                       const c10::impl::GenericDict& file) {
  for (const auto& [key, mine] : {std::make_pair(std::string("config"), adapters.config),
                                  std::make_pair(std::string("activation"), adapters.activation)}) {
    auto it = file.find(key);
    if (it != file.end() && it->value().isString() && it->value().toStringRef() != mine) {
      ThrowError(env, prefix + "holds adapters with " + key + " '" + it->value().toStringRef() + "'; these have '" +
                          mine + "'");
    }
  }
}

Napi::Value BottleneckAdapters::Size(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Check(env);
    return Napi::Number::New(env, static_cast<double>(state_->size));
  });
}

}  // namespace torch_bert
