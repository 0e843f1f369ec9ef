#include "train/precision.h"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <stdexcept>

#include "addon/arguments.h"
#include "addon/errors.h"

// libtorch 2.4 made the autocast API device-generic (set_autocast_enabled(device_type, on), ...)
// and deprecated the per-device functions 1.x has (set_enabled, set_cpu_enabled, ...).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define TORCH_BERT_DEVICE_GENERIC_AUTOCAST 1
#else
#define TORCH_BERT_DEVICE_GENERIC_AUTOCAST 0
#endif

namespace torch_bert {

namespace {

bool AutocastEnabled(c10::DeviceType type) {
#if TORCH_BERT_DEVICE_GENERIC_AUTOCAST
  return at::autocast::is_autocast_enabled(type);
#else
  return type == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

void SetAutocastEnabled(c10::DeviceType type, bool on) {
#if TORCH_BERT_DEVICE_GENERIC_AUTOCAST
  at::autocast::set_autocast_enabled(type, on);
#else
  if (type == c10::DeviceType::CUDA) {
    at::autocast::set_enabled(on);
  } else {
    at::autocast::set_cpu_enabled(on);
  }
#endif
}

c10::ScalarType AutocastDtype(c10::DeviceType type) {
#if TORCH_BERT_DEVICE_GENERIC_AUTOCAST
  return at::autocast::get_autocast_dtype(type);
#else
  return type == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                       : at::autocast::get_autocast_cpu_dtype();
#endif
}

void SetAutocastDtype(c10::DeviceType type, c10::ScalarType dtype) {
#if TORCH_BERT_DEVICE_GENERIC_AUTOCAST
  at::autocast::set_autocast_dtype(type, dtype);
#else
  if (type == c10::DeviceType::CUDA) {
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

}  // namespace

const char* PrecisionName(Precision precision) {
  switch (precision) {
    case Precision::kBf16:
      return "bf16";
    case Precision::kFp16:
      return "fp16";
    default:
      return "fp32";
  }
}

Precision ReadPrecision(const Napi::Value& value, const std::string& what) {
  if (IsMissing(value)) return Precision::kFp32;
  if (!value.IsString())
    ThrowTypeError(value.Env(), what + " must be 'fp32', 'bf16' or 'fp16', got " + TypeOfValue(value));
  const std::string name = value.As<Napi::String>().Utf8Value();
  if (name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  if (name == "fp16") return Precision::kFp16;
  ThrowError(value.Env(), what + " must be 'fp32', 'bf16' or 'fp16', got '" + name + "'");
}

void CheckPrecision(Precision precision, const c10::Device& device) {
  if (precision == Precision::kFp16 && !device.is_cuda()) {
    throw std::runtime_error(
        "precision 'fp16' needs a CUDA device, but the model is on " + device.str() +
        " (libtorch's CPU autocast computes in bfloat16): use precision 'bf16' or 'fp32' on the CPU");
  }
  if (precision != Precision::kFp32 && !device.is_cuda() && !device.is_cpu()) {
    throw std::runtime_error(std::string("precision '") + PrecisionName(precision) +
                             "' is supported on CPU and CUDA devices, not on " + device.str());
  }
}

AutocastGuard::AutocastGuard(Precision precision, const c10::Device& device) {
  if (precision == Precision::kFp32) return;
  CheckPrecision(precision, device);
  type_ = device.type();
  previousEnabled_ = AutocastEnabled(type_);
  previousDtype_ = AutocastDtype(type_);
  SetAutocastDtype(type_, precision == Precision::kFp16 ? c10::ScalarType::Half : c10::ScalarType::BFloat16);
  SetAutocastEnabled(type_, true);
  // As Python's torch.autocast.__enter__: casts of parameters are cached while the nesting
  // count is positive, and the cache is dropped when it returns to 0.
  at::autocast::increment_nesting();
  active_ = true;
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  SetAutocastEnabled(type_, previousEnabled_);
  SetAutocastDtype(type_, previousDtype_);
}

namespace {

Napi::Value SetAllowTF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    bool on = ReadBool(info[0], "setAllowTF32: on");
    // Process-wide, like torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32.
    // Takes effect on Ampere (compute capability 8.0) and newer; a no-op without CUDA.
    at::globalContext().setAllowTF32CuBLAS(on);
    at::globalContext().setAllowTF32CuDNN(on);
    return env.Undefined();
  });
}

Napi::Value AllowTF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value { return Napi::Boolean::New(env, at::globalContext().allowTF32CuBLAS()); });
}

}  // namespace

void RegisterPrecision(Napi::Env env, Napi::Object exports) {
  exports.Set("setAllowTF32", Napi::Function::New<SetAllowTF32>(env, "setAllowTF32"));
  exports.Set("allowTF32", Napi::Function::New<AllowTF32>(env, "allowTF32"));
}

}  // namespace torch_bert
