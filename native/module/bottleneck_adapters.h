// applyAdapters and the JS `BottleneckAdapters` class: the N-API side of bottleneck adapters
// (Houlsby et al. 2019; Pfeiffer et al. 2020; AdapterHub's bottleneck Adapter). Finds the
// sub-layers to adapt by their module path names (`<layer>.attention.output` and
// `<layer>.output`, each with its output projection `dense`, as Hugging Face names BERT's and
// RoBERTa's; DistilBERT's `<layer>.attention` and `<layer>.ffn` with `out_lin` and `lin2`),
// and initialises the adapters (module/adapter_handle.h lists, saves and loads them). The
// state it creates is
// module/bottleneck_state.h; a forward runs with it through module/method_call.h and
// graph/bottleneck_rewrite.h; saving through module/bottleneck_save.h.
#pragma once

#include <napi.h>

#include <string>
#include <utility>
#include <vector>

#include "module/adapter_handle.h"
#include "module/bottleneck_state.h"
#include "module/module_state.h"

namespace torch_bert {

// applyAdapters(model, spec) -> NativeBottleneckAdapters
Napi::Value ApplyAdapters(const Napi::CallbackInfo& info);

class BottleneckAdapters : public AdapterHandle<BottleneckAdapters, BottleneckState> {
 public:
  static constexpr WrapClass kClass = WrapClass::BottleneckAdapters;
  static constexpr const char* kFactory = "applyAdapters";
  static constexpr const char* kWhat = "bottleneck adapters";
  static constexpr const char* kUnit = "sub-layer";

  static Napi::Function Define(Napi::Env env);

  explicit BottleneckAdapters(const Napi::CallbackInfo& info) : AdapterHandle(info) {}

  // "<sub-layer>.adapter.down.weight", ...: the names the saved classifier gives the same tensors.
  static NamedTensors Tensors(const BottleneckState& adapters);
  // config, size, activation and seed.
  static void AddSettings(const BottleneckState& adapters, std::vector<std::pair<std::string, c10::IValue>>& entries);
  // Refuses a file of another config or activation.
  static void CheckSettings(Napi::Env env, const std::string& prefix, const BottleneckState& adapters,
                            const c10::impl::GenericDict& file);

 private:
  Napi::Value Size(const Napi::CallbackInfo& info);
};

}  // namespace torch_bert
