// The JS `Tensor` class: a handle on a libtorch tensor, with copies to and from typed arrays.
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace torch_bert {

// DType names as in binding.ts ('float32', 'int64', ...). Throws ArgumentError for others.
c10::ScalarType ParseDType(const std::string& name);
std::string DTypeName(c10::ScalarType type);

// 'cpu', 'cuda', 'cuda:N'. Throws a clear error when CUDA is asked for but unavailable,
// rather than letting libtorch fail later with a less direct message.
c10::Device ParseDevice(const std::string& name);
std::string DeviceName(const c10::Device& device);

// A shape as messages write it: "[2, 3]".
std::string ShapeString(c10::IntArrayRef sizes);

// Tensors with their names, in order (a module's parameters, a checkpoint's contents).
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

class Tensor : public Napi::ObjectWrap<Tensor> {
 public:
  static Napi::Function Define(Napi::Env env);

  // Wraps `tensor` in a new JS Tensor. `ownsMemory` says whether its bytes should be reported
  // to V8 as external memory; false for views that share storage owned elsewhere (module
  // parameters, gradients), which would otherwise be counted twice.
  static Napi::Object Wrap(Napi::Env env, const torch::Tensor& tensor, bool ownsMemory = true);

  // The tensor behind a JS value. TypeError when `value` is not a Tensor, Error when disposed.
  static torch::Tensor Get(const Napi::Value& value, const std::string& what);
  static bool IsTensor(const Napi::Value& value);

  // Shadows ObjectWrap::Unwrap, which node-addon-api calls on `this` before every method and
  // accessor: a TypeError unless `receiver` was made by this class (wrap_tag.h).
  static Tensor* Unwrap(const Napi::Object& receiver);

  explicit Tensor(const Napi::CallbackInfo& info);
  ~Tensor() override;

 private:
  static Napi::Value FromArray(const Napi::CallbackInfo& info);

  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value DType(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value RequiresGrad(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value ToArray(const Napi::CallbackInfo& info);
  Napi::Value Item(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value Clone(const Napi::CallbackInfo& info);
  Napi::Value SetRequiresGrad(const Napi::CallbackInfo& info);
  Napi::Value Grad(const Napi::CallbackInfo& info);
  Napi::Value Backward(const Napi::CallbackInfo& info);
  Napi::Value CopyFrom(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  const torch::Tensor& Checked(Napi::Env env) const;
  void Release(Napi::Env env);

  torch::Tensor tensor_;
  bool disposed_ = false;
  int64_t externalBytes_ = 0;
};

// A CPU, contiguous copy of `tensor` as the typed array binding.ts promises for its dtype.
Napi::Value TensorToTypedArray(Napi::Env env, const torch::Tensor& tensor);

// `tensors` as a JS array of [name, Tensor] pairs. The Tensors share the TensorImpls (an
// optimizer built on them trains the originals); `ownsMemory` as in Tensor::Wrap.
Napi::Array WrapNamedTensors(Napi::Env env, const NamedTensors& tensors, bool ownsMemory);

}  // namespace torch_bert
