// What `torch-bert doctor` reports from inside libtorch: its build configuration, threading,
// a BLAS call, how the addon was built, and the CUDA devices' properties.
#pragma once

#include <napi.h>

namespace torch_bert {

// showConfig, parallelInfo, getNumInteropThreads, matmul, buildInfo, cudaDeviceProperties,
// simulateDeviceError.
void RegisterDiagnostics(Napi::Env env, Napi::Object exports);

}  // namespace torch_bert
