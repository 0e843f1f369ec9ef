// applyLora and the JS `LoraAdapters` class: low-rank adapters on linear layers of a
// TorchScript module, kept in weight space.
//
// An adapted submodule keeps its original weight parameter W0 (frozen) in its `weight` slot.
// For the duration of a forward (LoraWeights below), the slot holds W0 + (alpha / r) * B @ A
// instead: computed with autograd in train steps, so gradients reach A and B through the
// traced graph, which reads `weight` as an attribute on every call. Between calls the slot
// holds W0 again, so namedParameters(), clone(), to() and the optimizer see real parameters.
#pragma once

#include <napi.h>
#include <torch/script.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "script_module.h"

namespace torch_bert {

struct LoraModule {
  std::string path;           // e.g. encoder.encoder.layer.0.attention.self.query
  torch::jit::Module module;  // the adapted submodule (a handle on the model's object)
  torch::Tensor w0;           // its weight parameter, frozen while adapted
  bool w0RequiresGrad;        // W0's flag before applyLora, restored by merge()
  torch::Tensor a;            // lora_A [r, in]
  torch::Tensor b;            // lora_B [out, r]
};

// Lives in ModuleState::lora while attached; guarded by the model's mutex.
struct LoraState {
  std::vector<std::string> targets;
  int64_t rank = 0;
  double alpha = 0;
  double dropout = 0;
  uint64_t seed = 0;
  std::vector<LoraModule> modules;
  bool attached = true;  // false once merged

  double Scale() const { return alpha / static_cast<double>(rank); }
};

enum class LoraMode {
  kTrain,    // autograd on; adapter dropout where the submodule is in training mode
  kForward,  // the calling thread's autograd mode; no dropout
  kMerged,   // plain tensors without autograd (save, clone)
};

// While alive, the `weight` of each adapted submodule whose path starts with `prefix` is
// W0 + (alpha / r) * B @ A; W0 is put back on destruction. A no-op for a model without
// adapters. Construct with the model's mutex held and keep it only around the forward.
class LoraWeights {
 public:
  LoraWeights(const ModuleState& state, LoraMode mode, const std::string& prefix = "");
  ~LoraWeights();
  LoraWeights(const LoraWeights&) = delete;
  LoraWeights& operator=(const LoraWeights&) = delete;

 private:
  std::vector<std::pair<torch::jit::Module, torch::Tensor>> restore_;
};

// The adapters' A and B tensors of an attached model (empty when none). Mutex held.
std::vector<torch::Tensor> LoraParameters(const ModuleState& state);

// Moves the adapters with their model (ScriptModule.to), keeping tensor identities. Mutex held.
void MoveLora(const ModuleState& state, const c10::Device& device);

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
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  void Check(Napi::Env env) const;

  ModuleStatePtr model_;
  std::shared_ptr<LoraState> lora_;
};

}  // namespace torch_bert
