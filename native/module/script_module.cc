#include "module/script_module.h"

#include <filesystem>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "addon/addon_data.h"
#include "addon/arguments.h"
#include "addon/errors.h"
#include "addon/worker.h"
#include "addon/wrap_tag.h"
#include "graph/token_pruning.h"
#include "module/bottleneck_save.h"
#include "module/bottleneck_state.h"
#include "module/lora_state.h"
#include "module/method_call.h"
#include "tensor/pickle_file.h"
#include "tensor/tensor.h"
#include "tensor/values.h"

namespace torch_bert {

namespace {

struct ModuleInit {
  ModuleStatePtr state;
  bool accountMemory;
};

int64_t ModuleBytes(const torch::jit::Module& module) {
  int64_t bytes = 0;
  for (const auto& p : module.parameters()) bytes += p.numel() * static_cast<int64_t>(p.element_size());
  for (const auto& b : module.buffers()) bytes += b.numel() * static_cast<int64_t>(b.element_size());
  return bytes;
}

torch::jit::Module LoadModule(const std::string& path, c10::Device device) {
  const std::string prefix = "cannot load TorchScript module '" + path + "': ";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw std::runtime_error(prefix + "no such file");
  if (!std::filesystem::is_regular_file(path, ec)) throw std::runtime_error(prefix + "not a regular file");
  try {
    return torch::jit::load(path, device);
  } catch (const c10::Error& e) {
    throw std::runtime_error(prefix + e.what_without_backtrace() +
                             " (is it an archive written by torch.jit.save or ScriptModule.save?)");
  }
}

void SaveModule(const torch::jit::Module& module, const std::string& path) {
  const std::string prefix = "cannot save TorchScript module to '" + path + "': ";
  // In memory first (WriteFileBytes says why libtorch's file writer cannot be used).
  std::ostringstream archive;
  try {
    module.save(archive);
  } catch (const c10::Error& e) {
    throw std::runtime_error(prefix + e.what_without_backtrace());
  }
  const std::string bytes = std::move(archive).str();
  WriteFileBytes(path, bytes.data(), bytes.size(), prefix);
}

// Saves the model as a forward sees it: LoRA's adapters merged into the weights, bottleneck
// adapters in a copy's graph (module/bottleneck_save.h). Mutex held.
void SaveModel(const ModuleState& state, const std::string& path) {
  if (state.bottleneck) return SaveModule(ModuleWithBottleneck(state), path);
  LoraWeights merged(state, LoraMode::kMerged);
  SaveModule(state.module, path);
}

torch::jit::Method FindMethod(const torch::jit::Module& module, const std::string& name) {
  if (auto method = module.find_method(name)) return *method;
  std::string names;
  for (const auto& m : module.get_methods()) names += (names.empty() ? "" : ", ") + m.name();
  throw std::runtime_error("module has no method '" + name + "' (methods: " + (names.empty() ? "none" : names) + ")");
}

// Converts JS arguments info[first..] to the declared input types of the method `schema`
// describes. Reading an array or object input runs its getters (JS), so call it without the
// module's lock (see MethodSchemaOf).
std::vector<c10::IValue> MethodInputs(const c10::FunctionSchema& schema, const Napi::CallbackInfo& info, size_t first) {
  const auto& arguments = schema.arguments();
  const size_t declared = arguments.empty() ? 0 : arguments.size() - 1;  // minus self
  const size_t given = info.Length() > first ? info.Length() - first : 0;
  size_t required = declared;
  while (required > 0 && arguments[required].default_value().has_value()) --required;
  if (given > declared || given < required) {
    std::ostringstream os;
    os << schema.name() << "() takes ";
    if (required == declared)
      os << declared;
    else
      os << required << " to " << declared;
    os << " input(s), got " << given;
    throw ArgumentError(os.str());
  }
  std::vector<c10::IValue> inputs;
  inputs.reserve(given);
  for (size_t i = 0; i < given; ++i) {
    const auto& argument = arguments[i + 1];
    inputs.push_back(
        JsToIValue(info[first + i], argument.type(), schema.name() + "(): input '" + argument.name() + "'"));
  }
  return inputs;
}

// The schema of the module's method `name`, a copy read under the lock, so that the inputs can
// be read from JS without it: a getter of an input array may use the module (its lock, taken
// again on this thread, would never be released) or dispose it.
c10::FunctionSchema MethodSchemaOf(const ModuleState& state, const std::string& name) {
  std::lock_guard<std::mutex> lock(*state.mutex);
  return FindMethod(state.module, name).function().getSchema();
}

class ForwardWorker : public PromiseWorker {
 public:
  ForwardWorker(Napi::Env env, ModuleStatePtr state, std::string method, std::vector<c10::IValue> inputs)
      : PromiseWorker(env),
        state_(std::move(state)),
        method_(std::move(method)),
        inputs_(std::move(inputs)),
        // Autograd mode is per thread: carry the caller's (e.g. inside noGrad) to the worker.
        gradEnabled_(c10::GradMode::is_enabled()) {}

 protected:
  void Run() override {
    std::lock_guard<std::mutex> lock(*state_->mutex);
    c10::AutoGradMode mode(gradEnabled_);
    result_ = CallMethod(*state_, FindMethod(state_->module, method_), std::move(inputs_), LoraMode::kForward);
  }
  Napi::Value Result(Napi::Env env) override { return IValueToJs(env, result_); }

 private:
  ModuleStatePtr state_;
  std::string method_;
  std::vector<c10::IValue> inputs_;
  bool gradEnabled_;
  c10::IValue result_;
};

class SaveWorker : public PromiseWorker {
 public:
  SaveWorker(Napi::Env env, ModuleStatePtr state, std::string path)
      : PromiseWorker(env), state_(std::move(state)), path_(std::move(path)) {}

 protected:
  void Run() override {
    std::lock_guard<std::mutex> lock(*state_->mutex);
    SaveModel(*state_, path_);
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  ModuleStatePtr state_;
  std::string path_;
};

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, std::string path, c10::Device device)
      : PromiseWorker(env), path_(std::move(path)), device_(device) {}

 protected:
  void Run() override { module_ = LoadModule(path_, device_); }
  Napi::Value Result(Napi::Env env) override {
    return ScriptModule::Wrap(env, std::make_shared<ModuleState>(module_, std::make_shared<std::mutex>(), device_));
  }

 private:
  std::string path_;
  c10::Device device_;
  torch::jit::Module module_;
};

c10::Device OptionalDevice(const Napi::Value& value, const std::string& what) {
  if (IsMissing(value)) return c10::Device(c10::kCPU);
  return ParseDevice(ReadString(value, what));
}

}  // namespace

Napi::Function ScriptModule::Define(Napi::Env env) {
  return DefineClass(env, "ScriptModule",
                     {
                         StaticMethod<&ScriptModule::Load>("load"),
                         StaticMethod<&ScriptModule::LoadAsync>("loadAsync"),
                         InstanceAccessor<&ScriptModule::Device>("device"),
                         InstanceAccessor<&ScriptModule::IsTraining>("isTraining"),
                         InstanceAccessor<&ScriptModule::Disposed>("disposed"),
                         InstanceAccessor<&ScriptModule::ForwardArity>("forwardArity"),
                         InstanceMethod<&ScriptModule::Forward>("forward"),
                         InstanceMethod<&ScriptModule::ForwardAsync>("forwardAsync"),
                         InstanceMethod<&ScriptModule::RunMethod>("runMethod"),
                         InstanceMethod<&ScriptModule::MethodSchema>("methodSchema"),
                         InstanceMethod<&ScriptModule::PrunedOps>("prunedOps"),
                         InstanceMethod<&ScriptModule::NamedParameters>("namedParameters"),
                         InstanceMethod<&ScriptModule::SetRequiresGrad>("setRequiresGrad"),
                         InstanceMethod<&ScriptModule::Train>("train"),
                         InstanceMethod<&ScriptModule::To>("to"),
                         InstanceMethod<&ScriptModule::Save>("save"),
                         InstanceMethod<&ScriptModule::SaveAsync>("saveAsync"),
                         InstanceMethod<&ScriptModule::Clone>("clone"),
                         InstanceMethod<&ScriptModule::Dispose>("dispose"),
                     });
}

Napi::Object ScriptModule::Wrap(Napi::Env env, ModuleStatePtr state, bool accountMemory) {
  ModuleInit init{std::move(state), accountMemory};
  return GetAddonData(env).scriptModuleConstructor.New({Napi::External<ModuleInit>::New(env, &init)});
}

ModuleStatePtr ScriptModule::Get(const Napi::Value& value, const std::string& what) {
  auto* self = static_cast<ScriptModule*>(UnwrapTagged(value, WrapClass::ScriptModule, what));
  if (!self->state_) ThrowError(value.Env(), what + ": ScriptModule has been disposed");
  return self->state_;
}

ScriptModule* ScriptModule::Unwrap(const Napi::Object& receiver) {
  return UnwrapReceiver<ScriptModule>(receiver, WrapClass::ScriptModule);
}

ScriptModule::ScriptModule(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ScriptModule>(info) {
  Guard(info.Env(), [&] {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      ThrowTypeError(info.Env(), "ScriptModule cannot be constructed directly; use ScriptModule.load()");
    }
    TagWrapped(info.This().As<Napi::Object>(), WrapClass::ScriptModule);
    auto* init = info[0].As<Napi::External<ModuleInit>>().Data();
    state_ = init->state;
    if (init->accountMemory) {
      std::lock_guard<std::mutex> lock(*state_->mutex);
      externalBytes_ = ModuleBytes(state_->module);
      if (externalBytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(info.Env(), externalBytes_);
    }
  });
}

ScriptModule::~ScriptModule() {
  if (state_ && externalBytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -externalBytes_);
}

void ScriptModule::Release(Napi::Env env) {
  if (!state_) return;
  // Work already queued holds its own reference and finishes first; the memory goes when
  // the last reference does.
  state_.reset();
  if (externalBytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(env, -externalBytes_);
  externalBytes_ = 0;
}

const ModuleStatePtr& ScriptModule::Checked(Napi::Env env) const {
  if (!state_) ThrowError(env, "ScriptModule has been disposed");
  return state_;
}

Napi::Value ScriptModule::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    std::string path = ReadPath(info[0], "ScriptModule.load: path");
    c10::Device device = OptionalDevice(info[1], "ScriptModule.load: device");
    torch::jit::Module module = LoadModule(path, device);
    return Wrap(env, std::make_shared<ModuleState>(std::move(module), std::make_shared<std::mutex>(), device));
  });
}

Napi::Value ScriptModule::LoadAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    std::string path = ReadPath(info[0], "ScriptModule.loadAsync: path");
    c10::Device device = OptionalDevice(info[1], "ScriptModule.loadAsync: device");
    return PromiseWorker::Start(new LoadWorker(env, std::move(path), device));
  });
}

Napi::Value ScriptModule::Device(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(*state->mutex);
    return Napi::String::New(env, DeviceName(ModuleDevice(*state)));
  });
}

Napi::Value ScriptModule::IsTraining(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(*state->mutex);
    return Napi::Boolean::New(env, state->module.is_training());
  });
}

Napi::Value ScriptModule::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !state_);
}

Napi::Value ScriptModule::ForwardArity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(*state->mutex);
    const auto& arguments = FindMethod(state->module, "forward").function().getSchema().arguments();
    return Napi::Number::New(env, arguments.empty() ? 0 : static_cast<double>(arguments.size() - 1));
  });
}

Napi::Value ScriptModule::Call(const Napi::CallbackInfo& info, const std::string& name, size_t firstInput) {
  Napi::Env env = info.Env();
  // A copy: a getter run by MethodInputs may dispose this handle, whose state the call keeps.
  const ModuleStatePtr state = Checked(env);
  std::vector<c10::IValue> inputs = MethodInputs(MethodSchemaOf(*state, name), info, firstInput);
  c10::IValue result;
  {
    std::lock_guard<std::mutex> lock(*state->mutex);
    result = CallMethod(*state, FindMethod(state->module, name), std::move(inputs), LoraMode::kForward);
  }
  return IValueToJs(env, result);
}

Napi::Value ScriptModule::Forward(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&]() -> Napi::Value { return Call(info, "forward", 0); });
}

Napi::Value ScriptModule::RunMethod(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&]() -> Napi::Value {
    std::string name = ReadString(info[0], "ScriptModule.runMethod: name");
    return Call(info, name, 1);
  });
}

Napi::Value ScriptModule::ForwardAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    // A copy: a getter run by MethodInputs may dispose this handle, whose state the work keeps.
    const ModuleStatePtr state = Checked(env);
    std::vector<c10::IValue> inputs = MethodInputs(MethodSchemaOf(*state, "forward"), info, 0);
    // Copies of the tensors as they are now, as the batch calls copy their batch: the caller
    // may write into an input (copyFrom, reusing it for the next batch) before the worker's
    // turn comes. clone() keeps autograd's link to the caller's tensors, and deepcopy keeps
    // one copy of a tensor passed twice.
    for (c10::IValue& input : inputs) input = input.deepcopy();
    return PromiseWorker::Start(new ForwardWorker(env, state, "forward", std::move(inputs)));
  });
}

Napi::Value ScriptModule::MethodSchema(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    std::string name = ReadString(info[0], "ScriptModule.methodSchema: name");
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(*state->mutex);
    std::ostringstream os;
    os << FindMethod(state->module, name).function().getSchema();
    return Napi::String::New(env, os.str());
  });
}

Napi::Value ScriptModule::PrunedOps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    std::string name = info[0].IsUndefined() ? "forward" : ReadString(info[0], "ScriptModule.prunedOps: method");
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(*state->mutex);
    FindMethod(state->module, name);  // a clear error for a method that does not exist
    const std::vector<std::string>* ops = torch_bert::PrunedOps(*state, name);
    if (ops == nullptr) return env.Null();
    Napi::Array out = Napi::Array::New(env, ops->size());
    for (size_t i = 0; i < ops->size(); ++i) out.Set(static_cast<uint32_t>(i), Napi::String::New(env, (*ops)[i]));
    return out;
  });
}

Napi::Value ScriptModule::NamedParameters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& state = Checked(env);
    NamedTensors params;
    {
      std::lock_guard<std::mutex> lock(*state->mutex);
      for (const auto& p : state->module.named_parameters(/*recurse=*/true)) params.emplace_back(p.name, p.value);
    }
    // Same TensorImpls as the module's: optimizers built on them update the module.
    return WrapNamedTensors(env, params, /*ownsMemory=*/false);
  });
}

Napi::Value ScriptModule::SetRequiresGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    bool on = ReadBool(info[0], "ScriptModule.setRequiresGrad: on");
    std::string prefix;
    if (!IsMissing(info[1])) prefix = ReadString(info[1], "ScriptModule.setRequiresGrad: prefix");
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(*state->mutex);
    size_t matched = 0;
    for (const auto& p : state->module.named_parameters(/*recurse=*/true)) {
      if (p.name.compare(0, prefix.size(), prefix) != 0) continue;
      torch::Tensor t = p.value;
      t.set_requires_grad(on);
      ++matched;
    }
    // A prefix that matches nothing is almost certainly a typo; silently freezing nothing
    // would make training quietly wrong.
    if (!prefix.empty() && matched == 0) {
      ThrowError(env, "ScriptModule.setRequiresGrad: no parameter name starts with '" + prefix + "'");
    }
    return env.Undefined();
  });
}

Napi::Value ScriptModule::Train(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    bool on = ReadBool(info[0], "ScriptModule.train: on");
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(*state->mutex);
    for (const auto& m : state->module.modules()) SetTrainingFlag(m, on);
    return env.Undefined();
  });
}

Napi::Value ScriptModule::To(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    c10::Device device = ParseDevice(ReadString(info[0], "ScriptModule.to: device"));
    std::optional<c10::ScalarType> dtype;
    if (!IsMissing(info[1])) {
      dtype = ParseDType(ReadString(info[1], "ScriptModule.to: dtype"));
      if (!c10::isFloatingType(*dtype)) ThrowError(env, "ScriptModule.to: dtype must be a floating-point type");
    }
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(*state->mutex);
    // jit::Module::to moves data with set_data, so parameter handles held elsewhere (JS
    // tensors, optimizers) follow the module.
    state->module.to(device);
    if (dtype) {
      // Floating-point tensors only, as Python's Module.to(dtype): jit::Module::to(device, dtype)
      // would also cast integer buffers (token_type_ids, position_ids) and break the embeddings.
      torch::NoGradGuard noGrad;
      auto cast = [&](torch::Tensor t) {
        if (t.is_floating_point() && t.scalar_type() != *dtype) t.set_data(t.to(*dtype));
      };
      for (const auto& p : state->module.parameters(/*recurse=*/true)) cast(p);
      for (const auto& b : state->module.buffers(/*recurse=*/true)) cast(b);
    }
    MoveLora(*state, device);
    MoveBottleneck(*state, device);
    state->device = device;
    return env.Undefined();
  });
}

Napi::Value ScriptModule::Save(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    std::string path = ReadPath(info[0], "ScriptModule.save: path");
    const auto& state = Checked(env);
    std::lock_guard<std::mutex> lock(*state->mutex);
    // With LoRA attached, the file holds the merged weights as plain parameters; with
    // bottleneck adapters, their graph and parameters.
    SaveModel(*state, path);
    return env.Undefined();
  });
}

Napi::Value ScriptModule::SaveAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return GuardAsync(env, [&]() -> Napi::Value {
    std::string path = ReadPath(info[0], "ScriptModule.saveAsync: path");
    return PromiseWorker::Start(new SaveWorker(env, Checked(env), std::move(path)));
  });
}

Napi::Value ScriptModule::Clone(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& state = Checked(env);
    torch::jit::Module copy;
    {
      std::lock_guard<std::mutex> lock(*state->mutex);
      {
        // Without this, deep-copied parameters would be non-leaf outputs of clone() that
        // optimizers cannot train.
        c10::NoGradGuard noGrad;
        // With LoRA attached, the copy is the adapted model with merged, plain weights; with
        // bottleneck adapters, the model with the adapters in its graph.
        if (state->bottleneck) {
          copy = ModuleWithBottleneck(*state);
        } else {
          LoraWeights merged(*state, LoraMode::kMerged);
          copy = state->module.deepcopy();
        }
      }
      // The flags by name: a copy with bottleneck adapters has their parameters too (trainable,
      // as they were).
      std::unordered_map<std::string, bool> requiresGrad;
      for (const auto& p : state->module.named_parameters(true)) requiresGrad.emplace(p.name, p.value.requires_grad());
      for (const auto& p : copy.named_parameters(true)) {
        auto it = requiresGrad.find(p.name);
        torch::Tensor param = p.value;
        param.set_requires_grad(it == requiresGrad.end() ? true : it->second);
      }
    }
    auto device = state->device;
    return Wrap(env, std::make_shared<ModuleState>(std::move(copy), std::make_shared<std::mutex>(), device));
  });
}

Napi::Value ScriptModule::Dispose(const Napi::CallbackInfo& info) {
  Release(info.Env());
  return info.Env().Undefined();
}

void RegisterTokenPruning(Napi::Env env, Napi::Object exports) {
  exports.Set("tokenPruning", Napi::Function::New(
                                  env,
                                  [](const Napi::CallbackInfo& info) -> Napi::Value {
                                    return Napi::Boolean::New(info.Env(), TokenPruningEnabled());
                                  },
                                  "tokenPruning"));
  exports.Set("setTokenPruning", Napi::Function::New(
                                     env,
                                     [](const Napi::CallbackInfo& info) -> Napi::Value {
                                       return Guard(info.Env(), [&]() -> Napi::Value {
                                         if (info.Length() != 1 || !info[0].IsBoolean()) {
                                           ThrowTypeError(info.Env(), "setTokenPruning: on must be a boolean");
                                         }
                                         SetTokenPruning(info[0].As<Napi::Boolean>().Value());
                                         return info.Env().Undefined();
                                       });
                                     },
                                     "setTokenPruning"));
}

}  // namespace torch_bert
