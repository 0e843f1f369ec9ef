#include "runtime/diagnostics.h"

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <dlfcn.h>

#include <cstddef>
#include <mutex>
#include <string>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "runtime/device_errors.h"
#include "tensor/tensor.h"

// Compile definitions from CMakeLists.txt; a build that bypasses it (scripts/gpu/gpu-check.sh's
// direct compile) gets these defaults.
#ifndef TORCH_BERT_TORCH_CUDA_LINKED
#define TORCH_BERT_TORCH_CUDA_LINKED 0
#endif
#ifndef TORCH_BERT_TORCH_FROM
#define TORCH_BERT_TORCH_FROM "unknown"
#endif

namespace torch_bert {

namespace {

Napi::Value ShowConfig(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), at::show_config()); });
}

Napi::Value ParallelInfo(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), at::get_parallel_info()); });
}

Napi::Value GetNumInteropThreads(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), static_cast<double>(at::get_num_interop_threads()));
  });
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    torch::Tensor a = Tensor::Get(info[0], "matmul: a");
    torch::Tensor b = Tensor::Get(info[1], "matmul: b");
    torch::NoGradGuard noGrad;
    // Shape, dtype and device mismatches: libtorch's own messages.
    return Tensor::Wrap(env, torch::matmul(a, b));
  });
}

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Napi::Object out = Napi::Object::New(env);
    out.Set("libtorch", std::string(TORCH_VERSION));
#ifdef TORCH_BERT_CUDA_VERSION
    out.Set("cuda", std::string(TORCH_BERT_CUDA_VERSION));
#else
    out.Set("cuda", env.Null());
#endif
    out.Set("torchCudaLinked", Napi::Boolean::New(env, TORCH_BERT_TORCH_CUDA_LINKED != 0));
#ifdef _GLIBCXX_USE_CXX11_ABI
    out.Set("cxx11Abi", Napi::Number::New(env, _GLIBCXX_USE_CXX11_ABI));
#else
    out.Set("cxx11Abi", env.Null());
#endif
#ifdef __VERSION__
    out.Set("compiler", std::string(__VERSION__));
#else
    out.Set("compiler", env.Null());
#endif
    out.Set("cplusplus", Napi::Number::New(env, static_cast<double>(__cplusplus)));
    out.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
    out.Set("torchFrom", std::string(TORCH_BERT_TORCH_FROM));
    return out;
  });
}

// ---- CUDA device properties through the driver API ----
//
// Without the CUDA headers (a CUDA wheel on a machine without the toolkit builds fine), the
// runtime API's cudaDeviceProp is out of reach; the driver library (libcuda.so.1, installed with
// the GPU driver) answers the same questions through plain ints, and numbers devices the way
// libtorch does (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER).

using CUresult = int;
using CUdevice = int;
constexpr int kAttributeMultiprocessorCount = 16;  // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
constexpr int kAttributeComputeMajor = 75;         // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kAttributeComputeMinor = 76;         // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR

struct Driver {
  CUresult (*init)(unsigned int) = nullptr;
  CUresult (*deviceGet)(CUdevice*, int) = nullptr;
  CUresult (*deviceGetName)(char*, int, CUdevice) = nullptr;
  CUresult (*deviceTotalMem)(size_t*, CUdevice) = nullptr;
  CUresult (*deviceGetAttribute)(int*, int, CUdevice) = nullptr;
  CUresult (*driverGetVersion)(int*) = nullptr;
  std::string error;
};

const Driver& CudaDriver() {
  static const Driver driver = [] {
    Driver d;
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* why = dlerror();
      d.error = std::string("cannot load the CUDA driver library libcuda.so.1") + (why ? std::string(": ") + why : "");
      return d;
    }
    auto get = [&](const char* name) { return dlsym(lib, name); };
    d.init = reinterpret_cast<decltype(d.init)>(get("cuInit"));
    d.deviceGet = reinterpret_cast<decltype(d.deviceGet)>(get("cuDeviceGet"));
    d.deviceGetName = reinterpret_cast<decltype(d.deviceGetName)>(get("cuDeviceGetName"));
    d.deviceTotalMem = reinterpret_cast<decltype(d.deviceTotalMem)>(get("cuDeviceTotalMem_v2"));
    d.deviceGetAttribute = reinterpret_cast<decltype(d.deviceGetAttribute)>(get("cuDeviceGetAttribute"));
    d.driverGetVersion = reinterpret_cast<decltype(d.driverGetVersion)>(get("cuDriverGetVersion"));
    if (!d.init || !d.deviceGet || !d.deviceGetName || !d.deviceTotalMem || !d.deviceGetAttribute) {
      d.error = "the CUDA driver library libcuda.so.1 lacks the device query functions";
    } else if (CUresult r = d.init(0); r != 0) {
      d.error = "the CUDA driver failed to initialise (cuInit error " + std::to_string(r) + ")";
    }
    return d;
  }();
  return driver;
}

// Whether the loaded libtorch was built with CUDA (its CUDA hooks are registered).
bool LibtorchHasCuda() {
  try {
    return at::detail::getCUDAHooks().versionCUDART() > 0;
  } catch (...) {
    return false;
  }
}

// Throws unless the libtorch loaded sees CUDA device `index`, saying which of the two it lacks:
// CUDA, or that device.
void CheckLibtorchDevice(Napi::Env env, const std::string& fn, int64_t index) {
  if (!LibtorchHasCuda()) {
    ThrowError(env, fn + ": the libtorch loaded (" + std::string(TORCH_VERSION) +
                        ") is a CPU-only build; CUDA devices need a CUDA build of libtorch");
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (index >= count) {
    ThrowError(env, fn + ": no CUDA device " + std::to_string(index) + " (libtorch sees " + std::to_string(count) +
                        " device" + (count == 1 ? "" : "s") + ")");
  }
}

// What the driver says of one device.
struct DeviceProperties {
  std::string name;
  size_t memory = 0;
  int major = 0, minor = 0, processors = 0;
  int driverVersion = 0;  // 0 where the driver has no cuDriverGetVersion
};

// Device `index`'s properties from the driver; throws naming the driver call that failed.
DeviceProperties QueryDevice(Napi::Env env, const std::string& fn, int64_t index) {
  const Driver& driver = CudaDriver();
  if (!driver.error.empty()) ThrowError(env, fn + ": " + driver.error);
  CUdevice device = 0;
  auto check = [&](CUresult r, const char* what) {
    if (r != 0)
      ThrowError(env, fn + "(" + std::to_string(index) + "): " + what + " failed (CUDA driver error " +
                          std::to_string(r) + ")");
  };
  check(driver.deviceGet(&device, static_cast<int>(index)), "cuDeviceGet");
  DeviceProperties out;
  char name[256] = {0};
  check(driver.deviceGetName(name, sizeof(name) - 1, device), "cuDeviceGetName");
  out.name = name;
  check(driver.deviceTotalMem(&out.memory, device), "cuDeviceTotalMem");
  check(driver.deviceGetAttribute(&out.major, kAttributeComputeMajor, device), "cuDeviceGetAttribute");
  check(driver.deviceGetAttribute(&out.minor, kAttributeComputeMinor, device), "cuDeviceGetAttribute");
  check(driver.deviceGetAttribute(&out.processors, kAttributeMultiprocessorCount, device), "cuDeviceGetAttribute");
  if (driver.driverGetVersion) driver.driverGetVersion(&out.driverVersion);
  return out;
}

// `props` of device `index` as the object cudaDeviceProperties returns.
Napi::Object PropertiesObject(Napi::Env env, int64_t index, const DeviceProperties& props) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("index", Napi::Number::New(env, static_cast<double>(index)));
  out.Set("name", props.name);
  out.Set("totalMemory", Napi::Number::New(env, static_cast<double>(props.memory)));
  out.Set("computeCapability", std::to_string(props.major) + "." + std::to_string(props.minor));
  out.Set("major", Napi::Number::New(env, props.major));
  out.Set("minor", Napi::Number::New(env, props.minor));
  out.Set("multiProcessorCount", Napi::Number::New(env, props.processors));
  // e.g. 12040 -> "12.4": the newest CUDA the driver supports.
  if (props.driverVersion > 0) {
    out.Set("driverCuda",
            std::to_string(props.driverVersion / 1000) + "." + std::to_string((props.driverVersion % 1000) / 10));
  } else {
    out.Set("driverCuda", env.Null());
  }
  return out;
}

Napi::Value CudaDeviceProperties(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string fn = "cudaDeviceProperties";
    int64_t index = ReadInteger(info[0], fn + ": index", 0, 1023);
    CheckLibtorchDevice(env, fn, index);
    return PropertiesObject(env, index, QueryDevice(env, fn, index));
  });
}

}  // namespace

void RegisterDiagnostics(Napi::Env env, Napi::Object exports) {
  exports.Set("showConfig", Napi::Function::New<ShowConfig>(env, "showConfig"));
  exports.Set("parallelInfo", Napi::Function::New<ParallelInfo>(env, "parallelInfo"));
  exports.Set("getNumInteropThreads", Napi::Function::New<GetNumInteropThreads>(env, "getNumInteropThreads"));
  exports.Set("matmul", Napi::Function::New<Matmul>(env, "matmul"));
  exports.Set("buildInfo", Napi::Function::New<BuildInfo>(env, "buildInfo"));
  exports.Set("cudaDeviceProperties", Napi::Function::New<CudaDeviceProperties>(env, "cudaDeviceProperties"));
  exports.Set("simulateDeviceError", Napi::Function::New<SimulateDeviceError>(env, "simulateDeviceError"));
}

}  // namespace torch_bert
