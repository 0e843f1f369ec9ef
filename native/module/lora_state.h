// LoRA's state on a model: the adapted submodules with their A and B tensors (LoraState, held
// by ModuleState::lora), and weight space, where an adapted submodule's `weight` slot holds
// W0 + scaling * B @ A for the duration of a call (LoraWeights). No N-API (the JS class is
// module/lora_adapters.h) and no graphs (the activation-space rewrite is graph/lora_rewrite.h;
// module/method_call.h runs methods with both). Mirrors PEFT's LoraLayer state (lora_A,
// lora_B, scaling, lora_dropout).
//
// An adapted submodule keeps its original weight parameter W0 (frozen) in its `weight` slot;
// the module's own graphs are never modified (TorchScript shares them between deep copies).
// A forward runs the adapters in activation space where it can (graph/lora_rewrite.h). An
// adapted weight used in any other way (not as linear's weight, or by a graph that analysis
// cannot follow) is handled in weight space instead (LoraWeights below): for the duration of
// the call the slot holds W0 + s * B @ A, with autograd, which the graph reads as an attribute
// on every call. Saving and cloning always use weight space with the merged weights, so files
// hold plain parameters. Between calls the slot holds W0 again, so namedParameters(), clone(),
// to() and the optimizer see real parameters.
#pragma once

#include <torch/script.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "module/module_state.h"

namespace torch_bert {

struct LoraModule {
  std::string path;           // e.g. encoder.encoder.layer.0.attention.self.query
  torch::jit::Module module;  // the adapted submodule (a handle on the model's object)
  torch::Tensor w0;           // its weight parameter, frozen while adapted
  torch::Tensor a;            // lora_A [r, in]
  torch::Tensor b;            // lora_B [out, r]
};

struct LoraMethod;  // module/method_call.cc: one method as run with the adapters

// Lives in ModuleState::lora while attached; guarded by the model's mutex.
struct LoraState {
  std::vector<std::string> targets;
  int64_t rank = 0;
  double alpha = 0;
  double dropout = 0;
  uint64_t seed = 0;
  std::vector<LoraModule> modules;
  // The targets no module with a 2-D weight matched when applied (MatchesTarget, the one rule):
  // the caller decides whether one of several is a typo (training) or acceptable (a saved run).
  std::vector<std::string> unusedTargets;
  bool attached = true;  // false once merged
  // The rewritten methods, by name, built on first call (module/method_call.cc).
  std::unordered_map<std::string, std::shared_ptr<LoraMethod>> methods;

  // PEFT's `scaling`: alpha / r, the factor of B @ A (not a loss or gradient scale).
  double Scaling() const { return alpha / static_cast<double>(rank); }
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

// The adapters' A and B tensors of an attached model (empty when none). Mutex held.
std::vector<torch::Tensor> LoraParameters(const ModuleState& state);

// Moves the adapters with their model (ScriptModule.to), keeping tensor identities. Mutex held.
void MoveLora(const ModuleState& state, const c10::Device& device);

}  // namespace torch_bert
