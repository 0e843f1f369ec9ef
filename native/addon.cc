// Module initialisation: builds the exports declared by NativeBinding in lib/binding.ts.
#include <napi.h>

#include "addon_data.h"
#include "classifier.h"
#include "optimizer.h"
#include "runtime.h"
#include "script_module.h"
#include "tensor.h"
#include "train_step.h"

namespace torch_bert {

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Owned by the environment, deleted at its teardown.
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);

  Napi::Function tensor = Tensor::Define(env);
  Napi::Function scriptModule = ScriptModule::Define(env);
  Napi::Function adamw = AdamW::Define(env);
  data->tensorConstructor = Napi::Persistent(tensor);
  data->scriptModuleConstructor = Napi::Persistent(scriptModule);
  data->adamwConstructor = Napi::Persistent(adamw);

  exports.Set("Tensor", tensor);
  exports.Set("ScriptModule", scriptModule);
  exports.Set("AdamW", adamw);
  exports.Set("buildClassifier", Napi::Function::New<BuildClassifier>(env, "buildClassifier"));
  exports.Set("trainStep", Napi::Function::New<TrainStep>(env, "trainStep"));
  exports.Set("evalStep", Napi::Function::New<EvalStep>(env, "evalStep"));
  // Thread count is left at libtorch's default: the caller decides via setNumThreads.
  RegisterRuntime(env, exports);
  return exports;
}

}  // namespace

}  // namespace torch_bert

// NODE_API_MODULE pastes the name into an identifier, so it must be unqualified.
static Napi::Object InitTorchBert(Napi::Env env, Napi::Object exports) { return torch_bert::Init(env, exports); }

NODE_API_MODULE(torch_bert, InitTorchBert)
