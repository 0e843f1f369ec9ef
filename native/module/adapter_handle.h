// The JS handle on a model's adapters, shared by the techniques' N-API classes (LoRA's
// `LoraAdapters`, module/lora_adapters.h; the bottleneck `BottleneckAdapters`,
// module/bottleneck_adapters.h): the model and the adapters' state it holds, and what every
// such handle does the same way — `modules`, `parameters()`, `trainableCount`, `save()`,
// `load()` and `dispose()`. A technique's class says what differs:
//
//   class X : public AdapterHandle<X, XState> {
//     static constexpr WrapClass kClass = WrapClass::X;  // its wrap tag (and JS name)
//     static constexpr const char* kFactory = "applyX";  // the function that makes it
//     static constexpr const char* kWhat = "X adapters"; // what its files hold, in messages
//     static constexpr const char* kUnit = "module";     // what one adapts, in messages
//     static NamedTensors Tensors(const XState&);        // its tensors, as files name them
//     // save()'s entries after the tensors, and load()'s check of a file's other entries
//     // (the model's mutex held; throws to refuse the file):
//     static void AddSettings(const XState&, std::vector<std::pair<std::string, c10::IValue>>&);
//     static void CheckSettings(Napi::Env, const std::string& prefix, const XState&, const c10::impl::GenericDict&);
//   };
//
// XState must have `modules`, each with a `path`.
#pragma once

#include <napi.h>
#include <torch/script.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "addon/wrap_tag.h"
#include "module/module_state.h"
#include "tensor/pickle_file.h"
#include "tensor/tensor.h"

namespace torch_bert {

// A saved adapters file's dict ("<fn>: '<path>' does not hold <what> ..." otherwise).
c10::impl::GenericDict ReadAdaptersFile(Napi::Env env, const std::string& path, const std::string& fn,
                                        const std::string& what);

// Copies each of `adapters`' tensors from the file's tensor of the same name, after checking
// all of them (present, same shape) and that the file has none for anything else (a `unit`
// these adapters do not adapt); a failed check changes nothing. Errors start with `prefix`.
void LoadAdapterTensors(Napi::Env env, const std::string& prefix, const NamedTensors& adapters,
                        const c10::impl::GenericDict& file, const std::string& unit);

template <typename Derived, typename State>
class AdapterHandle : public Napi::ObjectWrap<Derived> {
 public:
  // Shadows ObjectWrap::Unwrap (called on `this` before every method and accessor): a
  // TypeError unless `receiver` was made by this class (wrap_tag.h).
  static Derived* Unwrap(const Napi::Object& receiver) { return UnwrapReceiver<Derived>(receiver, Derived::kClass); }

  // A new JS handle on `state`, attached to `model`, made by `constructor` (the class's).
  static Napi::Object New(Napi::Env env, const Napi::FunctionReference& constructor, ModuleStatePtr model,
                          std::shared_ptr<State> state) {
    Init init{std::move(model), std::move(state)};
    // The constructor runs synchronously inside New(), so pointing at a local is safe.
    return constructor.New({Napi::External<Init>::New(env, &init)});
  }

 protected:
  using Property = typename Napi::ObjectWrap<Derived>::PropertyDescriptor;
  using Method = Napi::Value (Derived::*)(const Napi::CallbackInfo&);

  explicit AdapterHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Derived>(info) {
    Guard(info.Env(), [&] {
      if (info.Length() != 1 || !info[0].IsExternal()) {
        ThrowTypeError(info.Env(),
                       std::string(Name()) + " cannot be constructed directly; use " + Derived::kFactory + "()");
      }
      TagWrapped(info.This().As<Napi::Object>(), Derived::kClass);
      auto* init = info[0].As<Napi::External<Init>>().Data();
      model_ = init->model;
      state_ = init->state;
    });
  }

  // The class with the shared properties followed by the technique's own.
  static Napi::Function DefineWith(Napi::Env env, std::vector<Property> own) {
    // The runtime forms: a member pointer of this base, converted to Derived's, is no template
    // argument.
    using Wrap = Napi::ObjectWrap<Derived>;
    std::vector<Property> properties = {
        Wrap::InstanceAccessor("modules", static_cast<Method>(&AdapterHandle::Modules), nullptr),
        Wrap::InstanceMethod("parameters", static_cast<Method>(&AdapterHandle::Parameters)),
        Wrap::InstanceAccessor("trainableCount", static_cast<Method>(&AdapterHandle::TrainableCount), nullptr),
        Wrap::InstanceMethod("save", static_cast<Method>(&AdapterHandle::Save)),
        Wrap::InstanceMethod("load", static_cast<Method>(&AdapterHandle::Load)),
        Wrap::InstanceMethod("dispose", static_cast<Method>(&AdapterHandle::Dispose)),
    };
    properties.insert(properties.end(), own.begin(), own.end());
    return Wrap::DefineClass(env, Name(), properties);
  }

  static const char* Name() { return WrapClassName(Derived::kClass); }

  void Check(Napi::Env env) const {
    if (!state_) ThrowError(env, std::string(Name()) + " has been disposed");
  }

  ModuleStatePtr model_;
  std::shared_ptr<State> state_;

 private:
  // Passed through an External to the constructor, which is otherwise unusable from JS.
  struct Init {
    ModuleStatePtr model;
    std::shared_ptr<State> state;
  };

  Napi::Value Modules(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      Check(env);
      Napi::Array out = Napi::Array::New(env, state_->modules.size());
      for (size_t i = 0; i < state_->modules.size(); ++i) {
        out.Set(static_cast<uint32_t>(i), Napi::String::New(env, state_->modules[i].path));
      }
      return out;
    });
  }

  Napi::Value Parameters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      Check(env);
      NamedTensors params;
      {
        std::lock_guard<std::mutex> lock(*model_->mutex);
        params = Derived::Tensors(*state_);
      }
      // The same TensorImpls as the adapters': optimizers built on them train them.
      return WrapNamedTensors(env, params, /*ownsMemory=*/false);
    });
  }

  Napi::Value TrainableCount(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      Check(env);
      int64_t count = 0;
      for (const auto& named : Derived::Tensors(*state_)) count += named.second.numel();
      return Napi::Number::New(env, static_cast<double>(count));
    });
  }

  Napi::Value Save(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      std::string path = ReadPath(info[0], std::string(Name()) + ".save: path");
      Check(env);
      std::lock_guard<std::mutex> lock(*model_->mutex);
      // {"<name>": tensor, ..., then the settings}: the tensors named as Tensors() names them.
      std::vector<std::pair<std::string, c10::IValue>> entries;
      for (auto& [name, t] : Derived::Tensors(*state_)) entries.emplace_back(name, t);
      Derived::AddSettings(*state_, entries);
      WriteTorchSaveFile(entries, path, Derived::kWhat);
      return env.Undefined();
    });
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      const std::string fn = std::string(Name()) + ".load";
      std::string path = ReadPath(info[0], fn + ": path");
      Check(env);
      c10::impl::GenericDict file = ReadAdaptersFile(env, path, fn, Derived::kWhat);
      const std::string prefix = fn + ": '" + path + "' ";
      std::lock_guard<std::mutex> lock(*model_->mutex);
      Derived::CheckSettings(env, prefix, *state_, file);
      LoadAdapterTensors(env, prefix, Derived::Tensors(*state_), file, Derived::kUnit);
      return env.Undefined();
    });
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    // Only this handle goes: attached adapters belong to the model and keep working (the
    // garbage collector may drop a handle at any time, which must not change the model).
    model_.reset();
    state_.reset();
    return info.Env().Undefined();
  }
};

}  // namespace torch_bert
