// Module initialisation: builds the exports declared by NativeBinding in lib/addon/binding.ts.
#include <napi.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <cstdlib>
#include <cstring>

#include "addon/addon_data.h"
#include "addon/worker.h"
#include "distributed/collectives.h"
#include "model/build_encoder.h"
#include "module/bottleneck_adapters.h"
#include "module/classifier.h"
#include "module/lora_adapters.h"
#include "module/mlm_model.h"
#include "module/script_module.h"
#include "runtime/cpu_allocator.h"
#include "runtime/diagnostics.h"
#include "runtime/file_lock.h"
#include "runtime/runtime.h"
#include "tensor/tensor.h"
#include "tensor/weight_files.h"
#include "train/optimizer.h"
#include "train/precision.h"
#include "train/train_batch.h"
#include "train/training_state.h"

namespace torch_bert {

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Before any tensor exists: every CPU tensor of the process is then allocated by it
  // (cpu_allocator.h says why).
  InstallCachingCpuAllocator();
  // Owned by the environment, deleted at its teardown.
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);

  Napi::Function tensor = Tensor::Define(env);
  Napi::Function scriptModule = ScriptModule::Define(env);
  Napi::Function adamw = AdamW::Define(env);
  data->tensorConstructor = Napi::Persistent(tensor);
  data->scriptModuleConstructor = Napi::Persistent(scriptModule);
  // Not exported: instances come from applyLora().
  data->loraAdaptersConstructor = Napi::Persistent(LoraAdapters::Define(env));
  // Not exported: instances come from applyAdapters().
  data->bottleneckAdaptersConstructor = Napi::Persistent(BottleneckAdapters::Define(env));

  exports.Set("Tensor", tensor);
  exports.Set("ScriptModule", scriptModule);
  exports.Set("AdamW", adamw);
  exports.Set("buildClassifier", Napi::Function::New<BuildClassifier>(env, "buildClassifier"));
  exports.Set("trainStep", Napi::Function::New<TrainStep>(env, "trainStep"));
  exports.Set("evalStep", Napi::Function::New<EvalStep>(env, "evalStep"));
  exports.Set("extractFeatures", Napi::Function::New<ExtractFeatures>(env, "extractFeatures"));
  exports.Set("headTrainStep", Napi::Function::New<HeadTrainStep>(env, "headTrainStep"));
  exports.Set("headEvalStep", Napi::Function::New<HeadEvalStep>(env, "headEvalStep"));
  exports.Set("applyLora", Napi::Function::New<ApplyLora>(env, "applyLora"));
  exports.Set("applyAdapters", Napi::Function::New<ApplyAdapters>(env, "applyAdapters"));
  exports.Set("buildEncoder", Napi::Function::New<BuildEncoder>(env, "buildEncoder"));
  exports.Set("buildMlmModel", Napi::Function::New<BuildMlmModel>(env, "buildMlmModel"));
  // Thread count is left at libtorch's default: the caller decides via setNumThreads.

  // TorchScript's optimising graph executor profiles a traced BERT and, in grad mode, wraps it
  // in differentiable graphs: measured here (libtorch 1.13, 2 cores) that doubles the forward
  // time of a frozen encoder step (0.19 s -> 0.33-0.5 s for 4 layers x 256 hidden, 32x128
  // tokens) and makes step times erratic, while the plain interpreter runs the same aten ops at
  // eager PyTorch's speed with or without autograd. So the plain interpreter is the default;
  // TORCH_BERT_JIT_OPTIMIZE=1 restores libtorch's default. The switch is thread-local in
  // libtorch: this sets it for the main thread, PromiseWorker for each worker thread.
  const char* optimize = std::getenv("TORCH_BERT_JIT_OPTIMIZE");
  JitOptimizeSetting() = optimize != nullptr && std::strcmp(optimize, "1") == 0;
  torch::jit::setGraphExecutorOptimize(JitOptimizeSetting().load());
  RegisterRuntime(env, exports);
  RegisterTrainingState(env, exports);
  RegisterPrecision(env, exports);
  RegisterDiagnostics(env, exports);
  RegisterFileLock(env, exports);
  RegisterCpuAllocator(env, exports);
  RegisterTokenPruning(env, exports);
  RegisterWeightFiles(env, exports);
  RegisterDistributed(env, exports);
  return exports;
}

}  // namespace

}  // namespace torch_bert

// NODE_API_MODULE pastes the name into an identifier, so it must be unqualified.
static Napi::Object InitTorchBert(Napi::Env env, Napi::Object exports) {
  return torch_bert::Init(env, exports);
}

NODE_API_MODULE(torch_bert, InitTorchBert)
