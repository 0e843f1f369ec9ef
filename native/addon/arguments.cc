#include "addon/arguments.h"

#include <cmath>

namespace torch_bert {

std::string TypeOfValue(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsBoolean()) return "boolean";
  if (v.IsNumber()) return "number";
  if (v.IsBigInt()) return "bigint";
  if (v.IsString()) return "string";
  if (v.IsSymbol()) return "symbol";
  if (v.IsFunction()) return "function";
  if (v.IsArray()) return "array";
  if (v.IsTypedArray()) return "typed array";
  if (v.IsPromise()) return "promise";
  return "object";
}

bool ReadBool(const Napi::Value& v, const std::string& what) {
  if (!v.IsBoolean()) ThrowTypeError(v.Env(), what + " must be a boolean, got " + TypeOfValue(v));
  return v.As<Napi::Boolean>().Value();
}

double ReadNumber(const Napi::Value& v, const std::string& what) {
  if (!v.IsNumber()) ThrowTypeError(v.Env(), what + " must be a number, got " + TypeOfValue(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) ThrowError(v.Env(), what + " must be a finite number");
  return d;
}

int64_t ReadInteger(const Napi::Value& v, const std::string& what, int64_t min, int64_t max) {
  double d = ReadNumber(v, what);
  if (std::floor(d) != d) ThrowError(v.Env(), what + " must be an integer, got " + std::to_string(d));
  // Compare as doubles: min/max may not be exactly representable, d always is.
  if (d < static_cast<double>(min) || d > static_cast<double>(max)) {
    ThrowError(v.Env(), what + " must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " +
                            std::to_string(static_cast<int64_t>(d)));
  }
  return static_cast<int64_t>(d);
}

std::string ReadString(const Napi::Value& v, const std::string& what) {
  if (!v.IsString()) ThrowTypeError(v.Env(), what + " must be a string, got " + TypeOfValue(v));
  return v.As<Napi::String>().Utf8Value();
}

std::string ReadPath(const Napi::Value& v, const std::string& what) {
  std::string path = ReadString(v, what);
  if (path.empty()) ThrowError(v.Env(), what + " must not be empty");
  if (path.find('\0') != std::string::npos) {
    ThrowError(v.Env(), what + " contains a NUL character, which no file path can hold");
  }
  return path;
}

Napi::Object ReadObject(const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || v.IsArray() || v.IsFunction()) {
    ThrowTypeError(v.Env(), what + " must be an object, got " + TypeOfValue(v));
  }
  return v.As<Napi::Object>();
}

Napi::Array ReadArray(const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) ThrowTypeError(v.Env(), what + " must be an array, got " + TypeOfValue(v));
  return v.As<Napi::Array>();
}

Napi::Function ReadFunction(const Napi::Value& v, const std::string& what) {
  if (!v.IsFunction()) ThrowTypeError(v.Env(), what + " must be a function, got " + TypeOfValue(v));
  return v.As<Napi::Function>();
}

Napi::Int32Array ReadInt32Array(const Napi::Value& v, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    ThrowTypeError(v.Env(), what + " must be an Int32Array, got " + TypeOfValue(v));
  }
  return v.As<Napi::Int32Array>();
}

Napi::Float64Array ReadFloat64Array(const Napi::Value& v, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    ThrowTypeError(v.Env(), what + " must be a Float64Array, got " + TypeOfValue(v));
  }
  return v.As<Napi::Float64Array>();
}

}  // namespace torch_bert
