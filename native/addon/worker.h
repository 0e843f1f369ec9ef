// Base for work that runs on the libuv threadpool and settles a Promise.
//
// Subclasses copy everything they need out of JS values in their constructor (main thread),
// compute in Run() (worker thread, no JS access), and build the JS result in Result() (main
// thread). Exceptions from Run() or Result() reject the Promise with libtorch's message.
#pragma once

#include <napi.h>

#include <ATen/Parallel.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <atomic>

#include "addon/errors.h"

namespace torch_bert {

// Whether TorchScript's optimising graph executor runs (addon.cc: off unless
// TORCH_BERT_JIT_OPTIMIZE=1). libtorch keeps the switch per thread, so every worker applies it.
inline std::atomic<bool>& JitOptimizeSetting() {
  static std::atomic<bool> optimize{false};
  return optimize;
}

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env)
      : Napi::AsyncWorker(env, "torch-bert"), deferred_(Napi::Promise::Deferred::New(env)) {}

  // Queues the worker (which then owns itself) and returns its Promise.
  static Napi::Value Start(PromiseWorker* worker) {
    Napi::Promise promise = worker->deferred_.Promise();
    worker->Queue();
    return promise;
  }

 protected:
  virtual void Run() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;

 private:
  void Execute() final {
    try {
      // With OpenMP, a thread's team size is thread-local state: without this, work on a
      // libuv thread would ignore setNumThreads().
      at::init_num_threads();
      // Per thread too: without this, every call on a libuv thread would profile and rewrite
      // the graphs (differentiable graphs, reordered random ops) whatever the main thread chose.
      torch::jit::setGraphExecutorOptimize(JitOptimizeSetting().load());
      Run();
    } catch (...) {
      failed_ = true;
      error_ = CurrentErrorInfo();
    }
  }

  void OnOK() final {
    WhileJsCanRun([&] { Settle(Env()); });
  }

  void OnError(const Napi::Error& e) final {
    WhileJsCanRun([&] { deferred_.Reject(e.Value()); });
  }

  void Settle(Napi::Env env) {
    if (failed_) {
      deferred_.Reject(MakeError(env, error_).Value());
      return;
    }
    try {
      deferred_.Resolve(Result(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (...) {
      deferred_.Reject(MakeError(env, CurrentErrorInfo()).Value());
    }
  }

  // Node-API fails every call that needs JS (making the result, settling the promise) only once
  // the environment is being torn down: a worker_threads Worker terminated or exiting runs the
  // completions of its pending work then. No JS can see that promise any more, and a C++
  // exception escaping into Node-API there aborts the whole process, so the failure is dropped.
  template <typename F>
  static void WhileJsCanRun(F&& settle) {
    try {
      settle();
    } catch (const Napi::Error&) {
    }
  }

  Napi::Promise::Deferred deferred_;
  bool failed_ = false;
  ErrorInfo error_;
};

}  // namespace torch_bert
