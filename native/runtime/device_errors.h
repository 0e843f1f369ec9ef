// Device failures (out of memory, CUDA errors) as errors a user can act on: they name the
// device and the batch size, suggest a smaller batch for out-of-memory, and carry a `code`
// for JS (TORCH_BERT_OUT_OF_MEMORY, TORCH_BERT_DEVICE_ERROR). Other errors pass unchanged.
#pragma once

#include <napi.h>

#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace torch_bert {

// Rethrows the exception being handled: as a CodedError with the device and batch size when
// it is an out-of-memory or CUDA error, else as it was. Call only inside a catch block.
[[noreturn]] void RethrowWithDeviceContext(const c10::Device& device, int64_t batchSize);

// Runs `body`, decorating device failures with RethrowWithDeviceContext.
template <typename F>
auto WithDeviceContext(const c10::Device& device, int64_t batchSize, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (...) {
    RethrowWithDeviceContext(device, batchSize);
  }
}

// simulateDeviceError(kind, device, batchSize): a Promise rejected the way a step fails when
// libtorch throws `kind` ('oom' | 'cuda' | 'cpu-oom' | 'other') on that device; tests the path
// real CUDA failures take, where no GPU is available.
Napi::Value SimulateDeviceError(const Napi::CallbackInfo& info);

}  // namespace torch_bert
