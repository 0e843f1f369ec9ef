// Argument readers: a JS value in, a C++ value out, or a TypeError/Error naming the argument.
// `what` names it in messages, e.g. "Tensor.fromArray: shape". Every entry point reads its
// arguments through these (the batch calls' composite ones are train/batch_arguments.h), as
// onnxruntime-node keeps argument parsing in its *_helper.cc files.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

#include "addon/errors.h"

namespace torch_bert {

std::string TypeOfValue(const Napi::Value& v);

bool ReadBool(const Napi::Value& v, const std::string& what);
double ReadNumber(const Napi::Value& v, const std::string& what);
// An integral number in [min, max].
int64_t ReadInteger(const Napi::Value& v, const std::string& what, int64_t min, int64_t max);
std::string ReadString(const Napi::Value& v, const std::string& what);
// A file path: a non-empty string without NUL characters (the OS would silently cut the path
// at the first one, and the file written or read would not be the one named).
std::string ReadPath(const Napi::Value& v, const std::string& what);
Napi::Object ReadObject(const Napi::Value& v, const std::string& what);
Napi::Array ReadArray(const Napi::Value& v, const std::string& what);
Napi::Function ReadFunction(const Napi::Value& v, const std::string& what);
Napi::Int32Array ReadInt32Array(const Napi::Value& v, const std::string& what);
Napi::Float64Array ReadFloat64Array(const Napi::Value& v, const std::string& what);

inline bool IsMissing(const Napi::Value& v) {
  return v.IsUndefined() || v.IsNull();
}

}  // namespace torch_bert
