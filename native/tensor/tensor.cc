#include "tensor/tensor.h"

#include <cstring>
#include <optional>
#include <sstream>

#include "addon/addon_data.h"
#include "addon/arguments.h"
#include "addon/errors.h"
#include "addon/wrap_tag.h"

namespace torch_bert {

std::string ShapeString(c10::IntArrayRef sizes) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < sizes.size(); ++i) os << (i ? ", " : "") << sizes[i];
  os << ']';
  return os.str();
}

namespace {

// Passed through an External to the constructor, which is otherwise unusable from JS.
struct TensorInit {
  torch::Tensor tensor;
  bool ownsMemory;
};

int64_t ByteSize(const torch::Tensor& t) {
  return t.defined() ? static_cast<int64_t>(t.numel()) * static_cast<int64_t>(t.element_size()) : 0;
}

// The dtype a typed array holds, or nothing when binding.ts does not accept that array type.
std::optional<c10::ScalarType> TypedArrayDType(napi_typedarray_type type) {
  switch (type) {
    case napi_float32_array:
      return c10::ScalarType::Float;
    case napi_float64_array:
      return c10::ScalarType::Double;
    case napi_bigint64_array:
      return c10::ScalarType::Long;
    case napi_int32_array:
      return c10::ScalarType::Int;
    case napi_uint8_array:
      return c10::ScalarType::Byte;
    default:
      return std::nullopt;
  }
}

template <typename T>
Napi::Value CopyOut(Napi::Env env, const torch::Tensor& cpu, napi_typedarray_type type) {
  const size_t n = static_cast<size_t>(cpu.numel());
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, n * sizeof(T));
  if (n > 0) std::memcpy(buffer.Data(), cpu.data_ptr(), n * sizeof(T));
  return Napi::TypedArrayOf<T>::New(env, n, buffer, 0, type);
}

}  // namespace

c10::ScalarType ParseDType(const std::string& name) {
  if (name == "float32") return c10::ScalarType::Float;
  if (name == "float64") return c10::ScalarType::Double;
  if (name == "float16") return c10::ScalarType::Half;
  if (name == "bfloat16") return c10::ScalarType::BFloat16;
  if (name == "int64") return c10::ScalarType::Long;
  if (name == "int32") return c10::ScalarType::Int;
  if (name == "int16") return c10::ScalarType::Short;
  if (name == "int8") return c10::ScalarType::Char;
  if (name == "uint8") return c10::ScalarType::Byte;
  if (name == "bool") return c10::ScalarType::Bool;
  throw ArgumentError("unknown dtype '" + name +
                      "'; expected one of float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8, bool");
}

std::string DTypeName(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Float:
      return "float32";
    case c10::ScalarType::Double:
      return "float64";
    case c10::ScalarType::Half:
      return "float16";
    case c10::ScalarType::BFloat16:
      return "bfloat16";
    case c10::ScalarType::Long:
      return "int64";
    case c10::ScalarType::Int:
      return "int32";
    case c10::ScalarType::Short:
      return "int16";
    case c10::ScalarType::Char:
      return "int8";
    case c10::ScalarType::Byte:
      return "uint8";
    case c10::ScalarType::Bool:
      return "bool";
    default:
      return c10::toString(type);
  }
}

c10::Device ParseDevice(const std::string& name) {
  c10::Device device(name);  // throws c10::Error on malformed strings
  if (device.is_cpu()) return device;
  if (!device.is_cuda()) {
    throw ArgumentError("unsupported device '" + name + "'; use 'cpu', 'cuda' or 'cuda:N'");
  }
  if (!torch::cuda::is_available()) {
    throw ArgumentError("device '" + name +
                        "' requested but CUDA is not available (no GPU visible, or libtorch is a CPU build)");
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (device.has_index() && device.index() >= count) {
    throw ArgumentError("device '" + name + "' requested but only " + std::to_string(count) +
                        " CUDA device(s) are visible");
  }
  return device;
}

std::string DeviceName(const c10::Device& device) {
  if (device.is_cuda() && !device.has_index()) return "cuda:0";
  return device.str();
}

Napi::Value TensorToTypedArray(Napi::Env env, const torch::Tensor& tensor) {
  torch::Tensor t = tensor.detach().to(torch::kCPU);
  switch (t.scalar_type()) {
    case c10::ScalarType::Float:
      return CopyOut<float>(env, t.contiguous(), napi_float32_array);
    case c10::ScalarType::Half:
    case c10::ScalarType::BFloat16:
      return CopyOut<float>(env, t.to(torch::kFloat).contiguous(), napi_float32_array);
    case c10::ScalarType::Double:
      return CopyOut<double>(env, t.contiguous(), napi_float64_array);
    case c10::ScalarType::Long:
      return CopyOut<int64_t>(env, t.contiguous(), napi_bigint64_array);
    case c10::ScalarType::Int:
      return CopyOut<int32_t>(env, t.contiguous(), napi_int32_array);
    case c10::ScalarType::Short:
    case c10::ScalarType::Char:
      return CopyOut<int32_t>(env, t.to(torch::kInt).contiguous(), napi_int32_array);
    case c10::ScalarType::Byte:
      return CopyOut<uint8_t>(env, t.contiguous(), napi_uint8_array);
    case c10::ScalarType::Bool:
      return CopyOut<uint8_t>(env, t.to(torch::kByte).contiguous(), napi_uint8_array);
    default:
      throw ArgumentError("cannot convert a " + DTypeName(t.scalar_type()) + " tensor to a typed array");
  }
}

Napi::Function Tensor::Define(Napi::Env env) {
  return DefineClass(env, "Tensor",
                     {
                         StaticMethod<&Tensor::FromArray>("fromArray"),
                         InstanceAccessor<&Tensor::Shape>("shape"),
                         InstanceAccessor<&Tensor::DType>("dtype"),
                         InstanceAccessor<&Tensor::Device>("device"),
                         InstanceAccessor<&Tensor::RequiresGrad>("requiresGrad"),
                         InstanceAccessor<&Tensor::Disposed>("disposed"),
                         InstanceMethod<&Tensor::ToArray>("toArray"),
                         InstanceMethod<&Tensor::Item>("item"),
                         InstanceMethod<&Tensor::To>("to"),
                         InstanceMethod<&Tensor::Clone>("clone"),
                         InstanceMethod<&Tensor::SetRequiresGrad>("setRequiresGrad"),
                         InstanceMethod<&Tensor::Grad>("grad"),
                         InstanceMethod<&Tensor::Backward>("backward"),
                         InstanceMethod<&Tensor::CopyFrom>("copyFrom"),
                         InstanceMethod<&Tensor::Dispose>("dispose"),
                     });
}

Napi::Object Tensor::Wrap(Napi::Env env, const torch::Tensor& tensor, bool ownsMemory) {
  TensorInit init{tensor, ownsMemory};
  // The constructor runs synchronously inside New(), so pointing at a local is safe.
  return GetAddonData(env).tensorConstructor.New({Napi::External<TensorInit>::New(env, &init)});
}

Napi::Array WrapNamedTensors(Napi::Env env, const NamedTensors& tensors, bool ownsMemory) {
  Napi::Array out = Napi::Array::New(env, tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    Napi::Array pair = Napi::Array::New(env, 2);
    pair.Set(0u, Napi::String::New(env, tensors[i].first));
    pair.Set(1u, Tensor::Wrap(env, tensors[i].second, ownsMemory));
    out.Set(static_cast<uint32_t>(i), pair);
  }
  return out;
}

bool Tensor::IsTensor(const Napi::Value& value) {
  return IsWrapped(value, WrapClass::Tensor);
}

Tensor* Tensor::Unwrap(const Napi::Object& receiver) {
  return UnwrapReceiver<Tensor>(receiver, WrapClass::Tensor);
}

torch::Tensor Tensor::Get(const Napi::Value& value, const std::string& what) {
  auto* self = static_cast<Tensor*>(UnwrapTagged(value, WrapClass::Tensor, what));
  if (self->disposed_) ThrowError(value.Env(), what + ": Tensor has been disposed");
  return self->tensor_;
}

Tensor::Tensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Tensor>(info) {
  Guard(info.Env(), [&] {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      ThrowTypeError(info.Env(), "Tensor cannot be constructed directly; use Tensor.fromArray()");
    }
    TagWrapped(info.This().As<Napi::Object>(), WrapClass::Tensor);
    auto* init = info[0].As<Napi::External<TensorInit>>().Data();
    tensor_ = init->tensor;
    if (init->ownsMemory) {
      externalBytes_ = ByteSize(tensor_);
      if (externalBytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(info.Env(), externalBytes_);
    }
  });
}

Tensor::~Tensor() {
  if (!disposed_ && externalBytes_ > 0) {
    Napi::MemoryManagement::AdjustExternalMemory(Env(), -externalBytes_);
  }
}

void Tensor::Release(Napi::Env env) {
  if (disposed_) return;
  disposed_ = true;
  tensor_ = torch::Tensor();
  if (externalBytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(env, -externalBytes_);
  externalBytes_ = 0;
}

const torch::Tensor& Tensor::Checked(Napi::Env env) const {
  if (disposed_) ThrowError(env, "Tensor has been disposed");
  return tensor_;
}

Napi::Value Tensor::FromArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string fn = "Tensor.fromArray";
    if (!info[0].IsTypedArray()) {
      ThrowTypeError(env, fn +
                              ": data must be a Float32Array, Float64Array, BigInt64Array, Int32Array or "
                              "Uint8Array, got " +
                              TypeOfValue(info[0]));
    }
    auto data = info[0].As<Napi::TypedArray>();
    auto natural = TypedArrayDType(data.TypedArrayType());
    if (!natural) {
      ThrowTypeError(env, fn + ": unsupported typed array; use Float32Array, Float64Array, BigInt64Array, "
                               "Int32Array or Uint8Array");
    }
    Napi::Array shapeArray = ReadArray(info[1], fn + ": shape");
    std::vector<int64_t> shape;
    double product = 1;
    for (uint32_t i = 0; i < shapeArray.Length(); ++i) {
      int64_t d = ReadInteger(shapeArray.Get(i), fn + ": shape[" + std::to_string(i) + "]", 0, int64_t{1} << 53);
      shape.push_back(d);
      product *= static_cast<double>(d);
    }
    const size_t length = data.ElementLength();
    if (product != static_cast<double>(length)) {
      ThrowError(env, fn + ": shape " + ShapeString(shape) + " holds " + std::to_string(static_cast<int64_t>(product)) +
                          " elements but data has " + std::to_string(length));
    }
    c10::ScalarType dtype = *natural;
    if (!IsMissing(info[2])) dtype = ParseDType(ReadString(info[2], fn + ": dtype"));
    c10::Device device(c10::kCPU);
    if (!IsMissing(info[3])) device = ParseDevice(ReadString(info[3], fn + ": device"));

    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(*natural));
    if (length > 0) {
      const auto* src = static_cast<const uint8_t*>(data.ArrayBuffer().Data()) + data.ByteOffset();
      std::memcpy(t.data_ptr(), src, length * t.element_size());
    }
    if (dtype != *natural) t = t.to(dtype);
    if (!device.is_cpu()) t = t.to(device);
    return Wrap(env, t);
  });
}

Napi::Value Tensor::Shape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& t = Checked(env);
    Napi::Array out = Napi::Array::New(env, t.dim());
    for (int64_t i = 0; i < t.dim(); ++i) out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, t.size(i)));
    return out;
  });
}

Napi::Value Tensor::DType(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value { return Napi::String::New(env, DTypeName(Checked(env).scalar_type())); });
}

Napi::Value Tensor::Device(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value { return Napi::String::New(env, DeviceName(Checked(env).device())); });
}

Napi::Value Tensor::RequiresGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value { return Napi::Boolean::New(env, Checked(env).requires_grad()); });
}

Napi::Value Tensor::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), disposed_);
}

Napi::Value Tensor::ToArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value { return TensorToTypedArray(env, Checked(env)); });
}

Napi::Value Tensor::Item(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& t = Checked(env);
    if (t.numel() != 1) {
      ThrowError(env, "item() needs a one-element tensor, got shape " + ShapeString(t.sizes()));
    }
    return Napi::Number::New(env, t.item<double>());
  });
}

Napi::Value Tensor::To(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& t = Checked(env);
    c10::Device device = ParseDevice(ReadString(info[0], "Tensor.to: device"));
    c10::ScalarType dtype = t.scalar_type();
    if (!IsMissing(info[1])) dtype = ParseDType(ReadString(info[1], "Tensor.to: dtype"));
    return Wrap(env, t.detach().to(device, dtype, /*non_blocking=*/false, /*copy=*/true));
  });
}

Napi::Value Tensor::Clone(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value { return Wrap(env, Checked(env).detach().clone()); });
}

Napi::Value Tensor::SetRequiresGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    bool on = ReadBool(info[0], "Tensor.setRequiresGrad: on");
    // Copy the handle: set_requires_grad is not const, but changes the shared TensorImpl.
    torch::Tensor t = Checked(env);
    t.set_requires_grad(on);
    return env.Undefined();
  });
}

Napi::Value Tensor::Grad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const torch::Tensor& grad = Checked(env).grad();
    if (!grad.defined()) return env.Null();
    return Wrap(env, grad, /*ownsMemory=*/false);
  });
}

Napi::Value Tensor::Backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto& t = Checked(env);
    if (t.numel() != 1) {
      ThrowError(env, "backward() needs a scalar (one-element) tensor, got shape " + ShapeString(t.sizes()));
    }
    t.backward();
    return env.Undefined();
  });
}

Napi::Value Tensor::CopyFrom(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    torch::Tensor self = Checked(env);
    torch::Tensor source = Get(info[0], "Tensor.copyFrom: source");
    if (!self.sizes().equals(source.sizes())) {
      ThrowError(env, "Tensor.copyFrom: source has shape " + ShapeString(source.sizes()) + ", this tensor has " +
                          ShapeString(self.sizes()));
    }
    // Without autograd, so a parameter (a leaf that requires grad) can be overwritten in place;
    // copy_ converts dtype and device.
    torch::NoGradGuard noGrad;
    self.copy_(source);
    return env.Undefined();
  });
}

Napi::Value Tensor::Dispose(const Napi::CallbackInfo& info) {
  Release(info.Env());
  return info.Env().Undefined();
}

}  // namespace torch_bert
