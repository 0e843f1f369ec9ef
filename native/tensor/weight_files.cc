#include "tensor/weight_files.h"

#include <string>
#include <utility>
#include <vector>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "tensor/safetensors.h"
#include "tensor/state_dict.h"
#include "tensor/tensor.h"

namespace torch_bert {

namespace {

// [[name, Tensor], ...]
Napi::Array NamedTensorArray(Napi::Env env, const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  Napi::Array out = Napi::Array::New(env, tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    Napi::Array pair = Napi::Array::New(env, 2);
    pair.Set(0u, Napi::String::New(env, tensors[i].first));
    pair.Set(1u, Tensor::Wrap(env, tensors[i].second));
    out.Set(static_cast<uint32_t>(i), pair);
  }
  return out;
}

// A Record<string, string>, or null. Keys are defined rather than assigned, so a file's
// "__proto__" key is an ordinary property and cannot touch the object's prototype.
Napi::Value MetadataObject(Napi::Env env, const std::optional<SafetensorsMetadata>& metadata) {
  if (!metadata) return env.Null();
  Napi::Object out = Napi::Object::New(env);
  for (const auto& [key, value] : *metadata) {
    out.DefineProperty(Napi::PropertyDescriptor::Value(
        Napi::String::New(env, key), Napi::String::New(env, value),
        static_cast<napi_property_attributes>(napi_writable | napi_enumerable | napi_configurable)));
  }
  return out;
}

Napi::Value ReadSafetensorsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    std::string path = ReadPath(info[0], "readSafetensors: path");
    std::optional<SafetensorsMetadata> metadata;
    auto tensors = ReadSafetensors(path, &metadata);
    Napi::Object out = Napi::Object::New(env);
    out.Set("tensors", NamedTensorArray(env, tensors));
    out.Set("metadata", MetadataObject(env, metadata));
    return out;
  });
}

Napi::Value ReadSafetensorsHeaderJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    std::string path = ReadPath(info[0], "readSafetensorsHeader: path");
    SafetensorsHeader header = ReadSafetensorsHeader(path);
    Napi::Array tensors = Napi::Array::New(env, header.tensors.size());
    for (size_t i = 0; i < header.tensors.size(); ++i) {
      const SafetensorsEntry& e = header.tensors[i];
      Napi::Object t = Napi::Object::New(env);
      t.Set("name", Napi::String::New(env, e.name));
      t.Set("dtype", Napi::String::New(env, DTypeName(e.dtype)));
      Napi::Array shape = Napi::Array::New(env, e.shape.size());
      // Sizes past 2^53 would lose precision as JS numbers; a header may declare them only for
      // empty tensors (the byte range bounds the rest by the file's size).
      for (size_t d = 0; d < e.shape.size(); ++d)
        shape.Set(static_cast<uint32_t>(d), Napi::Number::New(env, static_cast<double>(e.shape[d])));
      t.Set("shape", shape);
      tensors.Set(static_cast<uint32_t>(i), t);
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("tensors", tensors);
    out.Set("metadata", MetadataObject(env, header.metadata));
    return out;
  });
}

Napi::Value WriteSafetensorsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string fn = "writeSafetensors";
    std::string path = ReadPath(info[0], fn + ": path");
    Napi::Array array = ReadArray(info[1], fn + ": tensors");
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    tensors.reserve(array.Length());
    for (uint32_t i = 0; i < array.Length(); ++i) {
      const std::string what = fn + ": tensors[" + std::to_string(i) + "]";
      Napi::Value item = array.Get(i);
      if (!item.IsArray() || item.As<Napi::Array>().Length() != 2)
        ThrowTypeError(env, what + " must be a [name, Tensor] pair, got " + TypeOfValue(item));
      Napi::Array pair = item.As<Napi::Array>();
      std::string name = ReadString(pair.Get(0u), what + "[0]");
      tensors.emplace_back(name, Tensor::Get(pair.Get(1u), what + "[1] ('" + name + "')"));
    }
    std::optional<SafetensorsMetadata> metadata;
    if (!info[2].IsUndefined()) {
      Napi::Object object = ReadObject(info[2], fn + ": metadata");
      metadata.emplace();
      Napi::Array keys = object.GetPropertyNames();
      for (uint32_t i = 0; i < keys.Length(); ++i) {
        std::string key = keys.Get(i).ToString().Utf8Value();
        metadata->emplace_back(key, ReadString(object.Get(keys.Get(i)), fn + ": metadata['" + key + "']"));
      }
    }
    WriteSafetensors(path, tensors, metadata);
    return env.Undefined();
  });
}

Napi::Value ReadTorchStateDictJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    std::string path = ReadPath(info[0], "readTorchStateDict: path");
    return NamedTensorArray(env, ReadTorchStateDict(path));
  });
}

}  // namespace

void RegisterWeightFiles(Napi::Env env, Napi::Object exports) {
  exports.Set("readSafetensors", Napi::Function::New<ReadSafetensorsJs>(env, "readSafetensors"));
  exports.Set("readSafetensorsHeader", Napi::Function::New<ReadSafetensorsHeaderJs>(env, "readSafetensorsHeader"));
  exports.Set("writeSafetensors", Napi::Function::New<WriteSafetensorsJs>(env, "writeSafetensors"));
  exports.Set("readTorchStateDict", Napi::Function::New<ReadTorchStateDictJs>(env, "readTorchStateDict"));
}

}  // namespace torch_bert
