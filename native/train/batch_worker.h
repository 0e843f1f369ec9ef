// The shared base of the batch calls' workers (train, eval, features): what each did first in
// its Run(), once. On the libuv thread it takes the model's mutex (then, for a training batch,
// the optimizer's: always in that order, the only place both are held, so no lock-order
// cycle), finds the model's device, makes it the thread's current device, checks the
// precision can run there, and decorates device failures (out of memory, CUDA errors) with the
// device and batch size (runtime/device_errors.h). Subclasses implement Compute(device) and
// Result(env). Built on addon/worker.h's PromiseWorker.
#pragma once

#include <c10/core/DeviceGuard.h>

#include <cstdint>
#include <mutex>
#include <utility>

#include "addon/worker.h"
#include "module/module_state.h"
#include "runtime/device_errors.h"
#include "train/precision.h"

namespace torch_bert {

// Makes `device` the thread's current CUDA device (a worker thread starts on cuda:0), so that
// whatever uses the current device (streams of the non-blocking copies, factories in scripted
// code) uses the model's. A no-op for the CPU.
class ModelDeviceGuard {
 public:
  explicit ModelDeviceGuard(const c10::Device& device) {
    if (device.is_cuda()) guard_.reset_device(device);
  }

 private:
  c10::OptionalDeviceGuard guard_;
};

class BatchWorker : public PromiseWorker {
 public:
  // `second`: a mutex taken after the model's (the optimizer's), or null.
  BatchWorker(Napi::Env env, ModuleStatePtr model, int64_t batchSize, Precision precision, std::mutex* second = nullptr)
      : PromiseWorker(env), model_(std::move(model)), batchSize_(batchSize), precision_(precision), second_(second) {}

 protected:
  // The batch's work, on the worker thread, with the locks held and the device current.
  virtual void Compute(const c10::Device& device) = 0;

  ModuleStatePtr model_;
  const int64_t batchSize_;
  const Precision precision_;

 private:
  void Run() final {
    std::lock_guard<std::mutex> modelLock(*model_->mutex);
    std::unique_lock<std::mutex> secondLock;
    if (second_ != nullptr) secondLock = std::unique_lock<std::mutex>(*second_);
    const c10::Device device = ModuleDevice(*model_);
    WithDeviceContext(device, batchSize_, [&] {
      ModelDeviceGuard guard(device);
      CheckPrecision(precision_, device);
      Compute(device);
    });
  }

  std::mutex* second_;
};

}  // namespace torch_bert
