#include "runtime/runtime.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <dlfcn.h>

#include <cstring>
#include <mutex>
#include <optional>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "tensor/tensor.h"

namespace torch_bert {

namespace {

uint64_t ReadSeed(const Napi::Value& value, const std::string& what) {
  // Negative seeds wrap to uint64, as torch.manual_seed and Generator.manual_seed do.
  return static_cast<uint64_t>(ReadInteger(value, what, -(int64_t{1} << 53), int64_t{1} << 53));
}

// The version of the libtorch actually loaded, which may differ from the headers'.
std::string RuntimeVersion() {
  static const std::string version = [] {
    const std::string config = at::show_config();
    const std::string key = "TORCH_VERSION=";
    auto pos = config.find(key);
    if (pos == std::string::npos) return std::string(TORCH_VERSION);
    pos += key.size();
    auto end = config.find_first_of(", \n", pos);
    return config.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
  }();
  return version;
}

// CUDA and cuDNN versions through ATen's CUDA hooks, which a CPU build stubs out by throwing.
std::optional<std::string> CudaVersion() {
  try {
    long v = at::detail::getCUDAHooks().versionCUDART();  // e.g. 12040
    if (v <= 0) return std::nullopt;
    return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
  } catch (...) {
    return std::nullopt;
  }
}

std::optional<std::string> CudnnVersion() {
  try {
    long v = at::detail::getCUDAHooks().versionCuDNN();
    if (v <= 0) return std::nullopt;
    // cuDNN 9 encodes major*10000 + minor*100 + patch; earlier ones major*1000 + minor*100 + patch.
    long major = v >= 90000 ? v / 10000 : v / 1000;
    long rest = v >= 90000 ? v % 10000 : v % 1000;
    return std::to_string(major) + "." + std::to_string(rest / 100) + "." + std::to_string(rest % 100);
  } catch (...) {
    return std::nullopt;
  }
}

Napi::Value ManualSeed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    at::manual_seed(ReadSeed(info[0], "manualSeed: seed"));
    return env.Undefined();
  });
}

Napi::Value Randperm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    int64_t n = ReadInteger(info[0], "randperm: n", 0, INT32_MAX);
    uint64_t seed = ReadSeed(info[1], "randperm: seed");
    // A private generator, seeded like torch.Generator().manual_seed(seed): the global RNG
    // is left alone. int64 as in Python, since the kernel's draws depend on nothing else.
    at::Generator generator = at::detail::createCPUGenerator(seed);
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_current_seed(seed);
    }
    torch::Tensor perm = torch::randperm(n, generator, torch::TensorOptions().dtype(torch::kLong)).to(torch::kInt);
    Napi::Int32Array out = Napi::Int32Array::New(env, static_cast<size_t>(n));
    if (n > 0) std::memcpy(out.Data(), perm.data_ptr(), static_cast<size_t>(n) * sizeof(int32_t));
    return out;
  });
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    at::set_num_threads(static_cast<int>(ReadInteger(info[0], "setNumThreads: n", 1, 1024)));
    return env.Undefined();
  });
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&]() -> Napi::Value { return Napi::Number::New(info.Env(), at::get_num_threads()); });
}

// OpenBLAS keeps its own thread pool, sized from OPENBLAS_NUM_THREADS (else OMP_NUM_THREADS, else
// the cores) when it loads, which at::set_num_threads does not reach (MKL's it does): data-parallel
// ranks sharing a machine each ran as many BLAS threads as it has cores. Its setters are looked
// up in the OpenBLAS libtorch loaded (directly, or behind libblas.so.3); none where the BLAS is
// another.
struct OpenBlasThreads {
  int (*get)() = nullptr;
  void (*set)(int) = nullptr;
};

const OpenBlasThreads& LoadedOpenBlas() {
  static const OpenBlasThreads blas = [] {
    for (const char* library : {"libopenblas.so.0", "libblas.so.3"}) {
      // RTLD_NOLOAD: a handle only to a library already in the process, never a second BLAS.
      void* handle = dlopen(library, RTLD_LAZY | RTLD_NOLOAD);
      if (handle == nullptr) continue;
      OpenBlasThreads found;
      found.get = reinterpret_cast<int (*)()>(dlsym(handle, "openblas_get_num_threads"));
      found.set = reinterpret_cast<void (*)(int)>(dlsym(handle, "openblas_set_num_threads"));
      dlclose(handle);  // drops the reference RTLD_NOLOAD took; libtorch's keeps it loaded
      if (found.get != nullptr && found.set != nullptr) return found;
    }
    return OpenBlasThreads{};
  }();
  return blas;
}

Napi::Value GetBlasThreads(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&]() -> Napi::Value {
    const OpenBlasThreads& blas = LoadedOpenBlas();
    return blas.get == nullptr ? info.Env().Null() : Napi::Number::New(info.Env(), blas.get());
  });
}

Napi::Value SetBlasThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    int n = static_cast<int>(ReadInteger(info[0], "setBlasThreads: n", 1, 1024));
    const OpenBlasThreads& blas = LoadedOpenBlas();
    if (blas.set != nullptr) blas.set(n);
    return Napi::Boolean::New(env, blas.set != nullptr);
  });
}

Napi::Value CudaIsAvailable(const Napi::CallbackInfo& info) {
  return Guard(info.Env(),
               [&]() -> Napi::Value { return Napi::Boolean::New(info.Env(), torch::cuda::is_available()); });
}

Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), static_cast<double>(torch::cuda::device_count()));
  });
}

Napi::Value Versions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    auto optionalString = [&](const std::optional<std::string>& s) -> Napi::Value {
      return s ? Napi::Value(Napi::String::New(env, *s)) : env.Null();
    };
    Napi::Object out = Napi::Object::New(env);
    out.Set("libtorch", RuntimeVersion());
    out.Set("cuda", optionalString(CudaVersion()));
    out.Set("cudnn", optionalString(CudnnVersion()));
    // From the headers compiled against; same scheme as `libtorch`, so the two compare.
    out.Set("builtAgainst", std::string(TORCH_VERSION));
    return out;
  });
}

Napi::Value NoGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Napi::Function fn = ReadFunction(info[0], "noGrad: fn");
    torch::NoGradGuard guard;
    // A JS exception from fn surfaces as Napi::Error; the guard restores grad mode either way.
    return fn.Call(env.Undefined(), {});
  });
}

// Class-index targets as int64, which the losses require; JS callers naturally have int32.
torch::Tensor LossTarget(const torch::Tensor& target) {
  if (c10::isIntegralType(target.scalar_type(), /*includeBool=*/false) && target.scalar_type() != torch::kLong) {
    return target.to(torch::kLong);
  }
  return target;
}

Napi::Value NllLoss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    torch::Tensor logProbs = Tensor::Get(info[0], "nllLoss: logProbs");
    torch::Tensor target = LossTarget(Tensor::Get(info[1], "nllLoss: target"));
    return Tensor::Wrap(env, torch::nll_loss(logProbs, target));
  });
}

Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    torch::Tensor logits = Tensor::Get(info[0], "crossEntropy: logits");
    torch::Tensor target = LossTarget(Tensor::Get(info[1], "crossEntropy: target"));
    return Tensor::Wrap(env, torch::nn::functional::cross_entropy(logits, target));
  });
}

Napi::Value Cat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Napi::Array array = ReadArray(info[0], "cat: tensors");
    if (array.Length() == 0) ThrowError(env, "cat: tensors must not be empty");
    std::vector<torch::Tensor> tensors;
    tensors.reserve(array.Length());
    for (uint32_t i = 0; i < array.Length(); ++i) {
      tensors.push_back(Tensor::Get(array.Get(i), "cat: tensors[" + std::to_string(i) + "]"));
    }
    // Shape, dtype and device mismatches: libtorch's own messages.
    return Tensor::Wrap(env, torch::cat(tensors, 0));
  });
}

}  // namespace

void RegisterRuntime(Napi::Env env, Napi::Object exports) {
  exports.Set("manualSeed", Napi::Function::New<ManualSeed>(env, "manualSeed"));
  exports.Set("randperm", Napi::Function::New<Randperm>(env, "randperm"));
  exports.Set("setNumThreads", Napi::Function::New<SetNumThreads>(env, "setNumThreads"));
  exports.Set("getNumThreads", Napi::Function::New<GetNumThreads>(env, "getNumThreads"));
  exports.Set("getBlasThreads", Napi::Function::New<GetBlasThreads>(env, "getBlasThreads"));
  exports.Set("setBlasThreads", Napi::Function::New<SetBlasThreads>(env, "setBlasThreads"));
  exports.Set("cudaIsAvailable", Napi::Function::New<CudaIsAvailable>(env, "cudaIsAvailable"));
  exports.Set("cudaDeviceCount", Napi::Function::New<CudaDeviceCount>(env, "cudaDeviceCount"));
  exports.Set("versions", Napi::Function::New<Versions>(env, "versions"));
  exports.Set("noGrad", Napi::Function::New<NoGrad>(env, "noGrad"));
  exports.Set("nllLoss", Napi::Function::New<NllLoss>(env, "nllLoss"));
  exports.Set("crossEntropy", Napi::Function::New<CrossEntropy>(env, "crossEntropy"));
  exports.Set("cat", Napi::Function::New<Cat>(env, "cat"));
}

}  // namespace torch_bert
