#include "train/optimizer.h"

#include <filesystem>
#include <sstream>
#include <unordered_set>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "addon/wrap_tag.h"
#include "tensor/pickle_file.h"
#include "tensor/tensor.h"
#include "train/fused_adamw.h"

namespace torch_bert {

namespace {

torch::optim::AdamWOptions& GroupOptions(torch::optim::OptimizerParamGroup& group) {
  return static_cast<torch::optim::AdamWOptions&>(group.options());
}

double ReadRate(const Napi::Value& value, const std::string& what) {
  double v = ReadNumber(value, what);
  if (v < 0) ThrowError(value.Env(), what + " must be >= 0, got " + std::to_string(v));
  return v;
}

}  // namespace

void ClearGradients(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
    }
  }
}

Napi::Function AdamW::Define(Napi::Env env) {
  return DefineClass(env, "AdamW",
                     {
                         InstanceAccessor<&AdamW::Disposed>("disposed"),
                         InstanceMethod<&AdamW::Step>("step"),
                         InstanceMethod<&AdamW::ZeroGrad>("zeroGrad"),
                         InstanceMethod<&AdamW::GetLr>("getLr"),
                         InstanceMethod<&AdamW::SetLr>("setLr"),
                         InstanceMethod<&AdamW::Save>("save"),
                         InstanceMethod<&AdamW::Load>("load"),
                         InstanceMethod<&AdamW::GetGradScaler>("gradScaler"),
                         InstanceMethod<&AdamW::SetGradScaler>("setGradScaler"),
                         InstanceMethod<&AdamW::Dispose>("dispose"),
                     });
}

OptimizerStatePtr AdamW::Get(const Napi::Value& value, const std::string& what) {
  auto* self = static_cast<AdamW*>(UnwrapTagged(value, WrapClass::AdamW, what));
  if (!self->state_) ThrowError(value.Env(), what + ": AdamW has been disposed");
  return self->state_;
}

AdamW* AdamW::Unwrap(const Napi::Object& receiver) {
  return UnwrapReceiver<AdamW>(receiver, WrapClass::AdamW);
}

AdamW::AdamW(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AdamW>(info) {
  Napi::Env env = info.Env();
  Guard(env, [&] {
    if (!info.IsConstructCall()) ThrowTypeError(env, "AdamW must be called with new");
    TagWrapped(info.This().As<Napi::Object>(), WrapClass::AdamW);
    const std::string fn = "new AdamW";
    Napi::Array groupsArray = ReadArray(info[0], fn + ": groups");
    if (groupsArray.Length() == 0) ThrowError(env, fn + ": groups must not be empty");

    std::vector<torch::optim::OptimizerParamGroup> groups;
    std::unordered_set<const void*> seen;
    size_t total = 0;
    for (uint32_t g = 0; g < groupsArray.Length(); ++g) {
      const std::string where = fn + ": groups[" + std::to_string(g) + "]";
      Napi::Object group = ReadObject(groupsArray.Get(g), where);
      Napi::Array paramsArray = ReadArray(group.Get("params"), where + ".params");
      std::vector<torch::Tensor> params;
      for (uint32_t i = 0; i < paramsArray.Length(); ++i) {
        const std::string name = where + ".params[" + std::to_string(i) + "]";
        torch::Tensor p = Tensor::Get(paramsArray.Get(i), name);
        if (!p.is_floating_point())
          ThrowError(env, name + " must be a floating-point tensor, got " + DTypeName(p.scalar_type()));
        // A non-leaf never receives .grad, so it would silently never be trained.
        if (!p.is_leaf()) ThrowError(env, name + " is not a leaf tensor (it was computed from other tensors)");
        if (!seen.insert(p.unsafeGetTensorImpl()).second) {
          ThrowError(env, name + " appears more than once in the optimizer's groups");
        }
        params.push_back(p);
      }
      total += params.size();

      auto options = std::make_unique<torch::optim::AdamWOptions>(ReadRate(group.Get("lr"), where + ".lr"));
      Napi::Value betas = group.Get("betas");
      if (!IsMissing(betas)) {
        Napi::Array pair = ReadArray(betas, where + ".betas");
        if (pair.Length() != 2) ThrowError(env, where + ".betas must have two numbers");
        double b1 = ReadNumber(pair.Get(0u), where + ".betas[0]");
        double b2 = ReadNumber(pair.Get(1u), where + ".betas[1]");
        if (b1 < 0 || b1 >= 1 || b2 < 0 || b2 >= 1) ThrowError(env, where + ".betas must be in [0, 1)");
        options->betas(std::make_tuple(b1, b2));
      }
      Napi::Value eps = group.Get("eps");
      if (!IsMissing(eps)) options->eps(ReadRate(eps, where + ".eps"));
      // Omitted: AdamW's default of 0.01, as in Python.
      Napi::Value weightDecay = group.Get("weightDecay");
      if (!IsMissing(weightDecay)) options->weight_decay(ReadRate(weightDecay, where + ".weightDecay"));
      groups.emplace_back(std::move(params), std::move(options));
    }
    if (total == 0) ThrowError(env, fn + ": the groups hold no parameters");
    state_ = std::make_shared<OptimizerState>(std::make_unique<torch::optim::AdamW>(std::move(groups)));
  });
}

const OptimizerStatePtr& AdamW::Checked(Napi::Env env) const {
  if (!state_) ThrowError(env, "AdamW has been disposed");
  return state_;
}

Napi::Value AdamW::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !state_);
}

Napi::Value AdamW::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(state->mutex);
    AdamWStep(*state->optimizer);
    return env.Undefined();
  });
}

Napi::Value AdamW::ZeroGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(state->mutex);
    ClearGradients(*state->optimizer);
    return env.Undefined();
  });
}

Napi::Value AdamW::GetLr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(state->mutex);
    auto& groups = state->optimizer->param_groups();
    Napi::Array out = Napi::Array::New(env, groups.size());
    for (size_t i = 0; i < groups.size(); ++i) {
      out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, GroupOptions(groups[i]).lr()));
    }
    return out;
  });
}

Napi::Value AdamW::SetLr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(state->mutex);
    auto& groups = state->optimizer->param_groups();
    int64_t g = ReadInteger(info[0], "AdamW.setLr: group", 0, static_cast<int64_t>(groups.size()) - 1);
    double lr = ReadRate(info[1], "AdamW.setLr: lr");
    GroupOptions(groups[static_cast<size_t>(g)]).lr(lr);
    return env.Undefined();
  });
}

Napi::Value AdamW::Save(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    std::string path = ReadPath(info[0], "AdamW.save: path");
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(state->mutex);
    const std::string prefix = "cannot save optimizer state to '" + path + "': ";
    // In memory first (WriteFileBytes says why libtorch's file writer cannot be used).
    std::ostringstream bytes;
    try {
      // torch::save(optimizer, path), plus the gradient scaler's state.
      torch::serialize::OutputArchive archive(std::make_shared<torch::jit::CompilationUnit>());
      state->optimizer->save(archive);
      state->scaler.Save(archive);
      archive.save_to(bytes);
    } catch (const c10::Error& e) {
      ThrowError(env, prefix + e.what_without_backtrace());
    }
    const std::string archived = std::move(bytes).str();
    WriteFileBytes(path, archived.data(), archived.size(), prefix);
    return env.Undefined();
  });
}

Napi::Value AdamW::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    std::string path = ReadPath(info[0], "AdamW.load: path");
    const auto& state = Checked(env);
    const std::string prefix = "cannot load optimizer state from '" + path + "': ";
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) ThrowError(env, prefix + "no such file");
    std::lock_guard<std::mutex> lock(state->mutex);
    // Map the state onto the parameters' device, whatever device it was saved from.
    c10::Device device(c10::kCPU);
    for (auto& group : state->optimizer->param_groups()) {
      if (!group.params().empty()) {
        device = group.params().front().device();
        break;
      }
    }
    try {
      // torch::load(optimizer, path, device), plus the gradient scaler's state when present.
      torch::serialize::InputArchive archive;
      archive.load_from(path, device);
      GradScaler scaler;
      scaler.Load(archive);
      state->optimizer->load(archive);
      state->scaler = scaler;
    } catch (const c10::Error& e) {
      ThrowError(env, prefix + e.what_without_backtrace());
    } catch (const std::exception& e) {
      ThrowError(env, prefix + e.what());
    }
    return env.Undefined();
  });
}

Napi::Value AdamW::GetGradScaler(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(state->mutex);
    return state->scaler.ToJs(env);
  });
}

Napi::Value AdamW::SetGradScaler(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    Napi::Object options = ReadObject(info[0], "AdamW.setGradScaler: options");
    // Read before the lock (grad_scaler.h says why); then this optimizer may be disposed.
    GradScalerSettings settings = ReadGradScalerSettings(options, "AdamW.setGradScaler: options");
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(state->mutex);
    state->scaler.Configure(settings);
    return env.Undefined();
  });
}

Napi::Value AdamW::Dispose(const Napi::CallbackInfo& info) {
  state_.reset();
  return info.Env().Undefined();
}

}  // namespace torch_bert
