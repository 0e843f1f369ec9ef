// Process-wide libtorch controls and small functional ops exposed to JS.
#pragma once

#include <napi.h>

namespace torch_bert {

// Adds manualSeed, randperm, setNumThreads, getNumThreads, getBlasThreads, setBlasThreads, cudaIsAvailable,
// cudaDeviceCount, versions, noGrad, nllLoss, crossEntropy and cat to `exports`.
void RegisterRuntime(Napi::Env env, Napi::Object exports);

}  // namespace torch_bert
