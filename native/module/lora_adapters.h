// applyLora and the JS `LoraAdapters` class: the N-API side of LoRA (low-rank adapters on
// linear layers of a TorchScript module). Reads the spec, initialises A and B as PEFT does,
// and saves, loads, merges and lists the adapters. The state it creates is
// module/lora_state.h; how a forward runs with it is module/method_call.h and
// graph/lora_rewrite.h. Mirrors PEFT's LoraModel (inject, merge_and_unload, save/load).
#pragma once

#include <napi.h>

#include <memory>

#include "module/lora_state.h"
#include "module/module_state.h"

namespace torch_bert {

// applyLora(model, spec) -> NativeLoraAdapters
Napi::Value ApplyLora(const Napi::CallbackInfo& info);

class LoraAdapters : public Napi::ObjectWrap<LoraAdapters> {
 public:
  static Napi::Function Define(Napi::Env env);

  explicit LoraAdapters(const Napi::CallbackInfo& info);

  // Shadows ObjectWrap::Unwrap (called on `this` before every method and accessor): a
  // TypeError unless `receiver` was made by this class (wrap_tag.h).
  static LoraAdapters* Unwrap(const Napi::Object& receiver);

 private:
  Napi::Value Modules(const Napi::CallbackInfo& info);
  Napi::Value Parameters(const Napi::CallbackInfo& info);
  Napi::Value TrainableCount(const Napi::CallbackInfo& info);
  Napi::Value Merge(const Napi::CallbackInfo& info);
  Napi::Value Plan(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  void Check(Napi::Env env) const;

  ModuleStatePtr model_;
  std::shared_ptr<LoraState> lora_;
};

}  // namespace torch_bert
