// The JS `ScriptModule` class: a TorchScript module (torch::jit::Module).
#pragma once

#include <napi.h>
#include <torch/script.h>

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace torch_bert {

struct LoraState;      // lora.h
class PrunedFunction;  // execution_graph.h

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
  // LoRA adapters attached by applyLora (lora.h), or null. Every call of this module goes
  // through CallWithAdapters (the adapters in activation space, and LoraWeights for an adapted
  // weight a graph uses otherwise), and every save and clone through LoraWeights (merged
  // weights), so that they take effect.
  std::shared_ptr<LoraState> lora;
  // Methods as run without adapters, with token pruning (execution_graph.h), by name; built
  // on each method's first call.
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

class ScriptModule : public Napi::ObjectWrap<ScriptModule> {
 public:
  static Napi::Function Define(Napi::Env env);

  // Wraps a module state in a new JS ScriptModule. `accountMemory`: report its parameter and
  // buffer bytes to V8 (false when they are already counted by another wrapper).
  static Napi::Object Wrap(Napi::Env env, ModuleStatePtr state, bool accountMemory = true);

  // The state behind a JS value. TypeError when not a ScriptModule, Error when disposed.
  static ModuleStatePtr Get(const Napi::Value& value, const std::string& what);

  // Shadows ObjectWrap::Unwrap (called on `this` before every method and accessor): a
  // TypeError unless `receiver` was made by this class (wrap_tag.h).
  static ScriptModule* Unwrap(const Napi::Object& receiver);

  explicit ScriptModule(const Napi::CallbackInfo& info);
  ~ScriptModule() override;

 private:
  static Napi::Value Load(const Napi::CallbackInfo& info);
  static Napi::Value LoadAsync(const Napi::CallbackInfo& info);

  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value IsTraining(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value ForwardArity(const Napi::CallbackInfo& info);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value ForwardAsync(const Napi::CallbackInfo& info);
  Napi::Value RunMethod(const Napi::CallbackInfo& info);
  Napi::Value MethodSchema(const Napi::CallbackInfo& info);
  Napi::Value PrunedOps(const Napi::CallbackInfo& info);
  Napi::Value NamedParameters(const Napi::CallbackInfo& info);
  Napi::Value SetRequiresGrad(const Napi::CallbackInfo& info);
  Napi::Value Train(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value SaveAsync(const Napi::CallbackInfo& info);
  Napi::Value Clone(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  const ModuleStatePtr& Checked(Napi::Env env) const;
  Napi::Value Call(const Napi::CallbackInfo& info, const std::string& method, size_t firstInput);
  void Release(Napi::Env env);

  ModuleStatePtr state_;
  int64_t externalBytes_ = 0;
};

}  // namespace torch_bert
