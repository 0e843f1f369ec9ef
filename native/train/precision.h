// Mixed precision: the `precision` option of the step functions ('fp32' | 'bf16' | 'fp16'),
// autocast around a forward pass, and TF32 matmuls on CUDA.
//
// Autocast runs the forward's matmuls and linears in the lower precision and keeps precision-
// sensitive ops (softmax, layer norm, losses) in float32; parameters, gradients and optimizer
// state stay float32. The loss is computed outside autocast, in float32. fp16 needs gradient
// scaling to train (grad_scaler.h) and a CUDA device; bf16 runs on CPU and CUDA.
#pragma once

#include <napi.h>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

namespace torch_bert {

enum class Precision { kFp32, kBf16, kFp16 };

const char* PrecisionName(Precision precision);

// Reads 'fp32' | 'bf16' | 'fp16' (undefined: fp32). Main thread.
Precision ReadPrecision(const Napi::Value& value, const std::string& what);

// Throws (std::runtime_error) when `precision` cannot run on `device`: fp16 on CPU.
void CheckPrecision(Precision precision, const c10::Device& device);

// Autocast for `device`'s type in `precision`, on this thread, for the guard's lifetime (a
// no-op for fp32). Restores the previous autocast state and clears autocast's cache of cast
// weights on exit, so the next forward sees the weights the optimizer updated.
class AutocastGuard {
 public:
  AutocastGuard(Precision precision, const c10::Device& device);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  c10::DeviceType type_ = c10::DeviceType::CPU;
  bool previousEnabled_ = false;
  c10::ScalarType previousDtype_ = c10::ScalarType::Undefined;
};

// setAllowTF32(on), allowTF32()
void RegisterPrecision(Napi::Env env, Napi::Object exports);

}  // namespace torch_bert
