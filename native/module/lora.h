// applyLora and the JS `LoraAdapters` class: low-rank adapters on linear layers of a
// TorchScript module.
//
// An adapted submodule keeps its original weight parameter W0 (frozen) in its `weight` slot;
// the module's own graphs are never modified (TorchScript shares them between deep copies).
// A forward with adapters (CallWithAdapters) runs a private copy of the method's graph,
// inlined, in which each `aten::linear(x, W0, b)` of an adapted module becomes
//   linear(x, W0, b) + (alpha / r) * linear(linear(dropout(x), A), B)
// as in PEFT ("activation space"): the backward pass then costs O(N * r * (in + out)) for A
// and B, where differentiating W0 + s * B @ A would first form the full [out, in] gradient
// (2 * N * in * out FLOPs per adapted matrix, ~7% of a bert-base LoRA step).
// An adapted weight used in any other way (not as linear's weight, or by a graph this
// analysis cannot follow) is handled in weight space instead (LoraWeights below): for the
// duration of the call the slot holds W0 + s * B @ A, with autograd, which the graph reads as
// an attribute on every call. Saving and cloning always use weight space with the merged
// weights, so files hold plain parameters. Between calls the slot holds W0 again, so
// namedParameters(), clone(), to() and the optimizer see real parameters.
#pragma once

#include <napi.h>
#include <torch/script.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "module/script_module.h"

namespace torch_bert {

struct LoraModule {
  std::string path;           // e.g. encoder.encoder.layer.0.attention.self.query
  torch::jit::Module module;  // the adapted submodule (a handle on the model's object)
  torch::Tensor w0;           // its weight parameter, frozen while adapted
  torch::Tensor a;            // lora_A [r, in]
  torch::Tensor b;            // lora_B [out, r]
};

struct LoraMethod;  // lora.cc: one method's graph with the adapters in activation space

// Lives in ModuleState::lora while attached; guarded by the model's mutex.
struct LoraState {
  std::vector<std::string> targets;
  int64_t rank = 0;
  double alpha = 0;
  double dropout = 0;
  uint64_t seed = 0;
  std::vector<LoraModule> modules;
  bool attached = true;  // false once merged
  // The rewritten methods, by name, built on first call (CallWithAdapters).
  std::unordered_map<std::string, std::shared_ptr<LoraMethod>> methods;

  double Scale() const { return alpha / static_cast<double>(rank); }
};

enum class LoraMode {
  kTrain,    // autograd on; adapter dropout where the submodule is in training mode
  kForward,  // the calling thread's autograd mode; no dropout
  kMerged,   // plain tensors without autograd (save, clone)
};

// While alive, the `weight` of each adapted submodule (all of them, or those listed by index
// into LoraState::modules) is W0 + (alpha / r) * B @ A; W0 is put back on destruction. A no-op
// for a model without adapters. Construct with the model's mutex held and keep it only around
// the call.
class LoraWeights {
 public:
  LoraWeights(const ModuleState& state, LoraMode mode);
  LoraWeights(const LoraState& lora, LoraMode mode, const std::vector<size_t>& modules);
  ~LoraWeights();
  LoraWeights(const LoraWeights&) = delete;
  LoraWeights& operator=(const LoraWeights&) = delete;

 private:
  void Apply(const LoraState& lora, LoraMode mode, const std::vector<size_t>& modules);
  std::vector<std::pair<torch::jit::Module, torch::Tensor>> restore_;
};

// Calls `method` (a method of state.module) on `inputs` (without self) with the adapters in
// effect: mode kTrain (autograd on; adapter dropout where the adapted module is in training
// mode) or kForward (the thread's autograd mode; no dropout). Plainly for a model without
// adapters. Mutex held.
c10::IValue CallWithAdapters(ModuleState& state, const torch::jit::Method& method, std::vector<c10::IValue> inputs,
                             LoraMode mode);

// The kinds of the nodes token pruning narrowed in `method`'s adapted graph (execution_graph.h);
// null before its first call. Mutex held.
const std::vector<std::string>* LoraPrunedOps(ModuleState& state, const std::string& method);

// How CallWithAdapters runs `method`, for tests and diagnostics: the module paths of the
// adapters applied in activation space and in weight space. Mutex held.
std::pair<std::vector<std::string>, std::vector<std::string>> AdapterPlan(ModuleState& state,
                                                                          const torch::jit::Method& method);

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
  Napi::Value Plan(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  void Check(Napi::Env env) const;

  ModuleStatePtr model_;
  std::shared_ptr<LoraState> lora_;
};

}  // namespace torch_bert
