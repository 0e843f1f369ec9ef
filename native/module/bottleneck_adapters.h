// applyAdapters and the JS `BottleneckAdapters` class: the N-API side of bottleneck adapters
// (Houlsby et al. 2019; Pfeiffer et al. 2020; AdapterHub's bottleneck Adapter). Finds the
// sub-layers to adapt by their module path names (`<layer>.attention.output` and
// `<layer>.output`, each with its output projection `dense`, as Hugging Face names BERT's and
// RoBERTa's; DistilBERT's `<layer>.attention` and `<layer>.ffn` with `out_lin` and `lin2`),
// initialises the adapters, and saves, loads and lists them. The state it creates is
// module/bottleneck_state.h; a forward runs with it through module/method_call.h and
// graph/bottleneck_rewrite.h; saving through module/bottleneck_save.h.
#pragma once

#include <napi.h>

#include <memory>

#include "module/bottleneck_state.h"
#include "module/module_state.h"

namespace torch_bert {

// applyAdapters(model, spec) -> NativeBottleneckAdapters
Napi::Value ApplyAdapters(const Napi::CallbackInfo& info);

class BottleneckAdapters : public Napi::ObjectWrap<BottleneckAdapters> {
 public:
  static Napi::Function Define(Napi::Env env);

  explicit BottleneckAdapters(const Napi::CallbackInfo& info);

  // Shadows ObjectWrap::Unwrap (called on `this` before every method and accessor): a
  // TypeError unless `receiver` was made by this class (wrap_tag.h).
  static BottleneckAdapters* Unwrap(const Napi::Object& receiver);

 private:
  Napi::Value Modules(const Napi::CallbackInfo& info);
  Napi::Value Parameters(const Napi::CallbackInfo& info);
  Napi::Value TrainableCount(const Napi::CallbackInfo& info);
  Napi::Value Size(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  void Check(Napi::Env env) const;

  ModuleStatePtr model_;
  std::shared_ptr<BottleneckState> adapters_;
};

}  // namespace torch_bert
