// applyLora and the JS `LoraAdapters` class: the N-API side of LoRA (low-rank adapters on
// linear layers of a TorchScript module). Reads the spec, initialises A and B as PEFT does,
// and merges and plans the adapters (module/adapter_handle.h lists, saves and loads them).
// The state it creates is module/lora_state.h; how a forward runs with it is module/method_call.h and
// graph/lora_rewrite.h. Mirrors PEFT's LoraModel (inject, merge_and_unload, save/load).
#pragma once

#include <napi.h>

#include <string>
#include <utility>
#include <vector>

#include "module/adapter_handle.h"
#include "module/lora_state.h"
#include "module/module_state.h"

namespace torch_bert {

// applyLora(model, spec) -> NativeLoraAdapters
Napi::Value ApplyLora(const Napi::CallbackInfo& info);

class LoraAdapters : public AdapterHandle<LoraAdapters, LoraState> {
 public:
  static constexpr WrapClass kClass = WrapClass::LoraAdapters;
  static constexpr const char* kFactory = "applyLora";
  static constexpr const char* kWhat = "LoRA adapters";
  static constexpr const char* kUnit = "module";

  static Napi::Function Define(Napi::Env env);

  explicit LoraAdapters(const Napi::CallbackInfo& info) : AdapterHandle(info) {}

  // "<module>.lora_A", "<module>.lora_B" for each adapted module: PEFT's names minus ".weight".
  static NamedTensors Tensors(const LoraState& lora);
  // rank, alpha, dropout, seed and targets.
  static void AddSettings(const LoraState& lora, std::vector<std::pair<std::string, c10::IValue>>& entries);
  // Refuses merged adapters and a file of another rank, alpha or targets.
  static void CheckSettings(Napi::Env env, const std::string& prefix, const LoraState& lora,
                            const c10::impl::GenericDict& file);

 private:
  Napi::Value Merge(const Napi::CallbackInfo& info);
  Napi::Value Plan(const Napi::CallbackInfo& info);
  // The targets that matched no module when applied (LoraState::unusedTargets).
  Napi::Value UnusedTargets(const Napi::CallbackInfo& info);
};

}  // namespace torch_bert
