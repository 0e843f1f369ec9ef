#include "runtime/device_errors.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "addon/worker.h"

namespace torch_bert {

namespace {

bool Contains(const std::string& text, const char* needle) {
  return text.find(needle) != std::string::npos;
}

// libtorch's allocators: "CUDA out of memory. Tried to allocate ..." (CUDA), "DefaultCPUAllocator:
// not enough memory: you tried to allocate ..." (CPU), cuBLAS/cuDNN allocation failures.
bool IsOutOfMemory(const std::string& message) {
  return Contains(message, "out of memory") || Contains(message, "not enough memory") ||
         Contains(message, "CUBLAS_STATUS_ALLOC_FAILED") || Contains(message, "CUDNN_STATUS_ALLOC_FAILED");
}

bool IsCudaError(const std::string& message) {
  return Contains(message, "CUDA") || Contains(message, "cuda") || Contains(message, "CUBLAS") ||
         Contains(message, "CUDNN") || Contains(message, "cuDNN") || Contains(message, "NCCL");
}

// One line: libtorch's messages may end with newlines or carry a "Compile with
// TORCH_USE_CUDA_DSA" paragraph.
std::string OneLine(std::string message) {
  std::replace(message.begin(), message.end(), '\n', ' ');
  while (!message.empty() && std::isspace(static_cast<unsigned char>(message.back()))) message.pop_back();
  return message;
}

std::string Context(const c10::Device& device, int64_t batchSize) {
  return device.str() + " (batch size " + std::to_string(batchSize) + ")";
}

[[noreturn]] void ThrowOutOfMemory(const std::string& message, const c10::Device& device, int64_t batchSize) {
  throw CodedError("out of memory on " + Context(device, batchSize) + ": " + OneLine(message) +
                       " Try a smaller batch size (batchSize / --batch-size), a shorter maxLength" +
                       (device.is_cuda() ? ", or precision 'bf16'" : "") + ".",
                   "TORCH_BERT_OUT_OF_MEMORY");
}

}  // namespace

void RethrowWithDeviceContext(const c10::Device& device, int64_t batchSize) {
  try {
    throw;
  } catch (const c10::OutOfMemoryError& e) {
    ThrowOutOfMemory(e.what_without_backtrace(), device, batchSize);
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    if (IsOutOfMemory(message)) ThrowOutOfMemory(message, device, batchSize);
    if (device.is_cuda() && IsCudaError(message)) {
      throw CodedError(
          "CUDA error on " + Context(device, batchSize) + ": " + OneLine(message) +
              " (CUDA reports errors asynchronously: set CUDA_LAUNCH_BLOCKING=1 to find the failing operation)",
          "TORCH_BERT_DEVICE_ERROR");
    }
    throw;
  } catch (const std::bad_alloc&) {
    ThrowOutOfMemory("std::bad_alloc", device, batchSize);
  }
}

namespace {

class SimulatedFailure : public PromiseWorker {
 public:
  SimulatedFailure(Napi::Env env, std::string kind, c10::Device device, int64_t batchSize)
      : PromiseWorker(env), kind_(std::move(kind)), device_(device), batchSize_(batchSize) {}

 protected:
  void Run() override {
    WithDeviceContext(device_, batchSize_, [&] {
      // The messages libtorch 2.x writes, abbreviated.
      if (kind_ == "oom") {
        TORCH_CHECK_WITH(OutOfMemoryError, false,
                         "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB "
                         "of which 1.06 GiB is free.");
      }
      if (kind_ == "cpu-oom") {
        TORCH_CHECK(false, "DefaultCPUAllocator: not enough memory: you tried to allocate 68719476736 bytes.");
      }
      if (kind_ == "cuda") TORCH_CHECK(false, "CUDA error: device-side assert triggered\n");
      TORCH_CHECK(false, "label 7 is out of range");
    });
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  std::string kind_;
  c10::Device device_;
  int64_t batchSize_;
};

}  // namespace

Napi::Value SimulateDeviceError(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    const std::string fn = "simulateDeviceError";
    std::string kind = ReadString(info[0], fn + ": kind");
    if (kind != "oom" && kind != "cpu-oom" && kind != "cuda" && kind != "other") {
      ThrowError(env, fn + ": kind must be 'oom', 'cpu-oom', 'cuda' or 'other'");
    }
    std::string device = ReadString(info[1], fn + ": device");
    int64_t batchSize = ReadInteger(info[2], fn + ": batchSize", 1, int64_t{1} << 31);
    // Parsing only: no device is touched, so 'cuda:3' works on a CPU machine.
    return PromiseWorker::Start(new SimulatedFailure(env, kind, c10::Device(device), batchSize));
  });
}

}  // namespace torch_bert
