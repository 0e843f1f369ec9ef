#include "distributed/collectives.h"

#include <torch/torch.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "addon/worker.h"
#include "distributed/process_group.h"
#include "distributed/process_group_internal.h"
#include "tensor/tensor.h"

namespace torch_bert {

namespace {

Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::vector<std::string> names = AvailableBackends();
    Napi::Array out = Napi::Array::New(env, names.size());
    for (size_t i = 0; i < names.size(); ++i) out.Set(static_cast<uint32_t>(i), Napi::String::New(env, names[i]));
    return out;
  });
}

// distributedJoinAsync(timeoutMs) → Promise<{ rank, worldSize, localRank, localWorldSize, backend }>:
// on the threadpool, so that the JS thread stays free to handle Ctrl-C (distributedCancelJoin).
class JoinWorker : public PromiseWorker {
 public:
  JoinWorker(Napi::Env env, int64_t timeout) : PromiseWorker(env), timeout_(timeout) {}

 protected:
  void Run() override {
    joined_ = JoinProcessGroup(std::chrono::milliseconds(timeout_));
    backend_ = GroupBackend();
  }
  Napi::Value Result(Napi::Env env) override {
    // The JS thread runs the broadcasts and the small all-reduces: the rank's GPU current there too.
    UseRankDevice();
    Napi::Object out = Napi::Object::New(env);
    out.Set("rank", Napi::Number::New(env, joined_.rank));
    out.Set("worldSize", Napi::Number::New(env, joined_.worldSize));
    out.Set("localRank", Napi::Number::New(env, joined_.localRank));
    out.Set("localWorldSize", Napi::Number::New(env, joined_.localWorldSize));
    out.Set("backend", Napi::String::New(env, backend_));
    return out;
  }

 private:
  int64_t timeout_;
  RankEnvironment joined_;
  std::string backend_;
};

Napi::Value JoinAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const int64_t timeout = ReadInteger(info[0], "distributedJoinAsync: timeoutMs", 1, int64_t{1} << 40);
    ClearJoinCancel();
    return PromiseWorker::Start(new JoinWorker(env, timeout));
  });
}

// distributedCancelJoin(): the join in progress stops within about a second (its promise rejects).
Napi::Value CancelJoinNow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    CancelJoin();
    return env.Undefined();
  });
}

Napi::Value Leave(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    LeaveProcessGroup();
    return env.Undefined();
  });
}

#ifdef TORCH_BERT_GLOO

// Runs a collective on `target` in place. Gloo works on dense contiguous CPU memory, NCCL (where
// the group has it) on dense contiguous CUDA memory: any other tensor goes through
// a CPU copy, copied back after.
template <typename F>
void InPlace(torch::Tensor& target, F&& collective) {
  torch::NoGradGuard noGrad;
  const bool onBackend = target.device().is_cpu() || (target.device().is_cuda() && NcclForCuda());
  const bool direct = target.is_contiguous() && onBackend;
  torch::Tensor buffer = direct ? target : target.to(torch::kCPU).contiguous();
  collective(buffer);
  if (!direct) target.copy_(buffer);
}

c10d::ReduceOp ReadReduceOp(const Napi::Value& value, const std::string& what) {
  const std::string name = ReadString(value, what);
  if (name == "sum") return c10d::ReduceOp::SUM;
  if (name == "max") return c10d::ReduceOp::MAX;
  if (name == "min") return c10d::ReduceOp::MIN;
  throw ArgumentError(what + " must be 'sum', 'max' or 'min', got '" + name + "'");
}

// distributedAllReduce(values: Float64Array, op) → a new Float64Array, the same on every rank.
Napi::Value AllReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Napi::Float64Array values = ReadFloat64Array(info[0], "distributedAllReduce: values");
    c10d::AllreduceOptions options;
    options.reduceOp = ReadReduceOp(info[1], "distributedAllReduce: op");
    auto group = CurrentProcessGroup("distributedAllReduce");
    torch::Tensor tensor = torch::empty({static_cast<int64_t>(values.ElementLength())}, torch::kFloat64);
    if (values.ElementLength() > 0)
      std::memcpy(tensor.data_ptr(), values.Data(), values.ElementLength() * sizeof(double));
    std::vector<torch::Tensor> tensors{tensor};
    WaitCollective(group->allreduce(tensors, options), "all-reduce");
    Napi::Float64Array out = Napi::Float64Array::New(env, values.ElementLength());
    if (values.ElementLength() > 0) std::memcpy(out.Data(), tensor.data_ptr(), values.ElementLength() * sizeof(double));
    return out;
  });
}

// distributedAllReduceTensor(tensor, op): in place, the same on every rank.
Napi::Value AllReduceTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    torch::Tensor target = Tensor::Get(info[0], "distributedAllReduceTensor: tensor");
    c10d::AllreduceOptions options;
    options.reduceOp = ReadReduceOp(info[1], "distributedAllReduceTensor: op");
    auto group = CurrentProcessGroup("distributedAllReduceTensor");
    InPlace(target, [&](torch::Tensor& buffer) {
      std::vector<torch::Tensor> tensors{buffer};
      WaitCollective(group->allreduce(tensors, options), "all-reduce");
    });
    return env.Undefined();
  });
}

// distributedBroadcast(tensors: Tensor[], root): every rank's tensors take root's values, in place.
Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Napi::Array array = ReadArray(info[0], "distributedBroadcast: tensors");
    std::vector<torch::Tensor> targets;
    for (uint32_t i = 0; i < array.Length(); ++i) {
      targets.push_back(Tensor::Get(array.Get(i), "distributedBroadcast: tensors[" + std::to_string(i) + "]"));
    }
    const int64_t root = ReadInteger(info[1], "distributedBroadcast: root", 0, int64_t{1} << 30);
    auto group = CurrentProcessGroup("distributedBroadcast");
    if (root >= group->getSize()) {
      throw ArgumentError("distributedBroadcast: root " + std::to_string(root) + " is not a rank of the group of " +
                          std::to_string(group->getSize()));
    }
    c10d::BroadcastOptions options;
    options.rootRank = root;
    for (torch::Tensor& target : targets) {
      InPlace(target, [&](torch::Tensor& buffer) {
        std::vector<torch::Tensor> tensors{buffer};
        WaitCollective(group->broadcast(tensors, options), "broadcast");
      });
    }
    return env.Undefined();
  });
}

#else

// Without Gloo every collective is the same error, naming the function.
Napi::Value NoBackend(const Napi::CallbackInfo& info, const std::string& name) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value { ThrowError(env, name + ": this build has no distributed backend"); });
}
Napi::Value AllReduce(const Napi::CallbackInfo& info) {
  return NoBackend(info, "distributedAllReduce");
}
Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  return NoBackend(info, "distributedBroadcast");
}
Napi::Value AllReduceTensor(const Napi::CallbackInfo& info) {
  return NoBackend(info, "distributedAllReduceTensor");
}

#endif

}  // namespace

void RegisterDistributed(Napi::Env env, Napi::Object exports) {
  exports.Set("distributedBackends", Napi::Function::New<Backends>(env, "distributedBackends"));
  exports.Set("distributedJoinAsync", Napi::Function::New<JoinAsync>(env, "distributedJoinAsync"));
  exports.Set("distributedCancelJoin", Napi::Function::New<CancelJoinNow>(env, "distributedCancelJoin"));
  exports.Set("distributedAllReduce", Napi::Function::New<AllReduce>(env, "distributedAllReduce"));
  exports.Set("distributedAllReduceTensor", Napi::Function::New<AllReduceTensor>(env, "distributedAllReduceTensor"));
  exports.Set("distributedBroadcast", Napi::Function::New<Broadcast>(env, "distributedBroadcast"));
  exports.Set("distributedLeave", Napi::Function::New<Leave>(env, "distributedLeave"));
}

}  // namespace torch_bert
