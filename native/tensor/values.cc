#include "tensor/values.h"

#include <cmath>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "tensor/tensor.h"

namespace torch_bert {

namespace {

[[noreturn]] void Mismatch(const Napi::Value& value, const c10::TypePtr& type, const std::string& what) {
  ThrowTypeError(value.Env(), what + " must be " + type->annotation_str() + ", got " + TypeOfValue(value));
}

bool IsIntegral(double d) {
  return std::isfinite(d) && std::floor(d) == d;
}

// For arguments typed `Any`: the closest TorchScript value to a JS value.
c10::IValue InferIValue(const Napi::Value& value, const std::string& what) {
  if (IsMissing(value)) return c10::IValue();
  if (value.IsBoolean()) return c10::IValue(value.As<Napi::Boolean>().Value());
  if (value.IsNumber()) {
    double d = value.As<Napi::Number>().DoubleValue();
    if (IsIntegral(d)) return c10::IValue(static_cast<int64_t>(d));
    return c10::IValue(d);
  }
  if (value.IsString()) return c10::IValue(value.As<Napi::String>().Utf8Value());
  if (Tensor::IsTensor(value)) return c10::IValue(Tensor::Get(value, what));
  ThrowTypeError(value.Env(), what + ": cannot pass a JS " + TypeOfValue(value) + " as Any");
}

}  // namespace

c10::IValue JsToIValue(const Napi::Value& value, const c10::TypePtr& type, const std::string& what) {
  Napi::Env env = value.Env();
  switch (type->kind()) {
    case c10::TypeKind::TensorType:
      return c10::IValue(Tensor::Get(value, what));
    case c10::TypeKind::IntType:
      return c10::IValue(ReadInteger(value, what, -(int64_t{1} << 53), int64_t{1} << 53));
    case c10::TypeKind::FloatType:
      return c10::IValue(ReadNumber(value, what));
    case c10::TypeKind::NumberType: {
      double d = ReadNumber(value, what);
      return IsIntegral(d) ? c10::IValue(static_cast<int64_t>(d)) : c10::IValue(d);
    }
    case c10::TypeKind::BoolType:
      return c10::IValue(ReadBool(value, what));
    case c10::TypeKind::StringType:
      return c10::IValue(ReadString(value, what));
    case c10::TypeKind::DeviceObjType:
      return c10::IValue(ParseDevice(ReadString(value, what)));
    case c10::TypeKind::OptionalType:
      if (IsMissing(value)) return c10::IValue();
      return JsToIValue(value, type->cast<c10::OptionalType>()->getElementType(), what);
    case c10::TypeKind::ListType: {
      if (!value.IsArray()) Mismatch(value, type, what);
      auto elementType = type->cast<c10::ListType>()->getElementType();
      auto array = value.As<Napi::Array>();
      c10::impl::GenericList list(elementType);
      list.reserve(array.Length());
      for (uint32_t i = 0; i < array.Length(); ++i) {
        list.push_back(JsToIValue(array.Get(i), elementType, what + "[" + std::to_string(i) + "]"));
      }
      return c10::IValue(list);
    }
    case c10::TypeKind::TupleType: {
      auto elementTypes = type->cast<c10::TupleType>()->elements();
      if (!value.IsArray() || value.As<Napi::Array>().Length() != elementTypes.size()) {
        Mismatch(value, type, what);
      }
      auto array = value.As<Napi::Array>();
      std::vector<c10::IValue> elements;
      for (uint32_t i = 0; i < array.Length(); ++i) {
        elements.push_back(JsToIValue(array.Get(i), elementTypes[i], what + "[" + std::to_string(i) + "]"));
      }
      return c10::IValue(c10::ivalue::Tuple::create(std::move(elements)));
    }
    case c10::TypeKind::DictType: {
      if (!value.IsObject() || value.IsArray() || Tensor::IsTensor(value)) Mismatch(value, type, what);
      auto dictType = type->cast<c10::DictType>();
      auto keyType = dictType->getKeyType();
      auto valueType = dictType->getValueType();
      c10::impl::GenericDict dict(keyType, valueType);
      auto object = value.As<Napi::Object>();
      Napi::Array keys = object.GetPropertyNames();
      for (uint32_t i = 0; i < keys.Length(); ++i) {
        std::string key = keys.Get(i).ToString().Utf8Value();
        c10::IValue keyValue;
        if (keyType->kind() == c10::TypeKind::StringType) {
          keyValue = c10::IValue(key);
        } else if (keyType->kind() == c10::TypeKind::IntType) {
          try {
            size_t used = 0;
            int64_t k = std::stoll(key, &used);
            if (used != key.size()) throw std::invalid_argument(key);
            keyValue = c10::IValue(k);
          } catch (const std::exception&) {
            ThrowTypeError(env, what + ": key '" + key + "' is not an integer");
          }
        } else {
          ThrowTypeError(env, what + ": dicts with " + keyType->annotation_str() + " keys are not supported");
        }
        dict.insert(keyValue, JsToIValue(object.Get(keys.Get(i)), valueType, what + "." + key));
      }
      return c10::IValue(dict);
    }
    case c10::TypeKind::AnyType:
      return InferIValue(value, what);
    default:
      ThrowTypeError(env, what + ": arguments of type " + type->annotation_str() + " cannot be passed from JS");
  }
}

Napi::Value IValueToJs(Napi::Env env, const c10::IValue& value) {
  if (value.isNone()) return env.Null();
  if (value.isTensor()) return Tensor::Wrap(env, value.toTensor());
  if (value.isBool()) return Napi::Boolean::New(env, value.toBool());
  if (value.isInt()) return Napi::Number::New(env, static_cast<double>(value.toInt()));
  if (value.isDouble()) return Napi::Number::New(env, value.toDouble());
  if (value.isString()) return Napi::String::New(env, value.toStringRef());
  if (value.isDevice()) return Napi::String::New(env, DeviceName(value.toDevice()));
  if (value.isTuple() || value.isList()) {
    c10::ArrayRef<c10::IValue> elements =
        value.isTuple() ? value.toTupleRef().elements().asArrayRef() : value.toListRef();
    Napi::Array out = Napi::Array::New(env, elements.size());
    for (size_t i = 0; i < elements.size(); ++i) out.Set(static_cast<uint32_t>(i), IValueToJs(env, elements[i]));
    return out;
  }
  if (value.isGenericDict()) {
    Napi::Object out = Napi::Object::New(env);
    for (const auto& entry : value.toGenericDict()) {
      const c10::IValue& key = entry.key();
      std::string name;
      if (key.isString()) {
        name = key.toStringRef();
      } else if (key.isInt()) {
        name = std::to_string(key.toInt());
      } else {
        ThrowError(env, "cannot convert a dict with " + key.tagKind() + " keys to a JS object");
      }
      out.Set(name, IValueToJs(env, entry.value()));
    }
    return out;
  }
  ThrowError(env, "cannot convert a TorchScript " + value.tagKind() + " to a JS value");
}

}  // namespace torch_bert
