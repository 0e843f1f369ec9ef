// ModuleState: what torch-bert holds for one TorchScript module (torch::jit::Module) and its
// mutex, device, adapters and per-method caches, with the walks over its parameters and
// submodules that a training step needs. No N-API: the JS class around it is
// module/script_module.h; running its methods is module/method_call.h. Mirrors what
// torch::jit::Module offers (parameters(), modules(), train()), cached.
#pragma once

#include <torch/script.h>

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace torch_bert {

struct LoraState;        // module/lora_state.h
struct BottleneckState;  // module/bottleneck_state.h
class PrunedFunction;    // graph/token_pruning.h

// What a JS ScriptModule refers to. Held through shared_ptr so that async work keeps it alive
// after the JS object is disposed or collected.
struct ModuleState {
  ModuleState(torch::jit::Module m, std::shared_ptr<std::mutex> mu, c10::Device d)
      : module(std::move(m)), mutex(std::move(mu)), device(d) {}

  torch::jit::Module module;
  // Serialises every use of the module. Shared by modules that share submodules (a classifier
  // and its encoder), since jit::Module is a handle and they mutate the same objects.
  std::shared_ptr<std::mutex> mutex;
  // Where the module lives when it has no parameters or buffers to tell.
  c10::Device device;
  // LoRA adapters attached by applyLora (module/lora_state.h), or null. Every call of this
  // module goes through CallMethod (module/method_call.h: the adapters in activation space, and
  // LoraWeights for an adapted weight a graph uses otherwise), and every save and clone through
  // LoraWeights (merged weights), so that they take effect.
  std::shared_ptr<LoraState> lora;
  // Bottleneck adapters attached by applyAdapters (module/bottleneck_state.h), or null; never
  // together with `lora`. Every call goes through CallMethod (the adapters inserted into a
  // rewritten graph), and every save and clone through module/bottleneck_save.h (a copy of the
  // module that holds them in its graph).
  std::shared_ptr<BottleneckState> bottleneck;
  // Methods as run without adapters, with token pruning (graph/token_pruning.h), by name;
  // built on each method's first call (module/method_call.cc).
  std::unordered_map<std::string, std::shared_ptr<PrunedFunction>> pruned;
  // module.parameters() and module.modules(), recursively, collected once (Parameters(),
  // Modules()).
  std::vector<torch::Tensor> parameters;
  bool parametersCollected = false;
  std::vector<torch::jit::Module> modules;
  bool modulesCollected = false;
};
using ModuleStatePtr = std::shared_ptr<ModuleState>;

// The module's parameters (recursively, in registration order), collected on first use: a
// training step needs them three times, and walking the module tree costs ~10 us per 10
// submodules. Valid for the module's life: parameters move devices in place (set_data) and
// load in place (copy_), and nothing replaces a parameter slot for longer than a call.
// Call with the mutex held.
const std::vector<torch::Tensor>& Parameters(ModuleState& state);

// The module and its submodules (module.modules()), collected on first use, for the same
// reason: an evaluation step switches and restores every module's training flag. Valid for
// the module's life (its submodules are fixed once built). Call with the mutex held.
const std::vector<torch::jit::Module>& Modules(ModuleState& state);

// The device of the module's first parameter (or buffer). Call with the mutex held.
c10::Device ModuleDevice(const ModuleState& state);

// Sets the `training` attribute of one module, not its children.
void SetTrainingFlag(const torch::jit::Module& module, bool on);

// Records the `training` flag of the module and each submodule, and restores each one when
// destroyed, so that temporarily switching modes cannot flatten a mixed configuration.
class TrainingModeSnapshot {
 public:
  explicit TrainingModeSnapshot(const torch::jit::Module& module);
  // The same, for a list of modules (Modules()).
  explicit TrainingModeSnapshot(const std::vector<torch::jit::Module>& modules);
  ~TrainingModeSnapshot();
  TrainingModeSnapshot(const TrainingModeSnapshot&) = delete;
  TrainingModeSnapshot& operator=(const TrainingModeSnapshot&) = delete;

 private:
  std::vector<std::pair<torch::jit::Module, bool>> flags_;
};

}  // namespace torch_bert
