// The JS `ScriptModule` class: a TorchScript module (torch::jit::Module) as JS sees it (load,
// forward, runMethod, save, clone, to, ...), and the process-wide token pruning switch its
// calls run with (tokenPruning/setTokenPruning). The state behind it is module/module_state.h;
// its methods run through module/method_call.h. Mirrors torch.jit.ScriptModule's Python API.
#pragma once

#include <napi.h>
#include <torch/script.h>

#include <memory>
#include <string>

#include "module/module_state.h"

namespace torch_bert {

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

// tokenPruning() and setTokenPruning(on) on the binding (graph/token_pruning.h).
void RegisterTokenPruning(Napi::Env env, Napi::Object exports);

}  // namespace torch_bert
