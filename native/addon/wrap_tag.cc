#include "addon/wrap_tag.h"

#include "addon/arguments.h"
#include "addon/errors.h"

namespace torch_bert {

namespace {

// Random 128-bit values, one per class; they only need to differ from each other and from any
// other addon's tags.
constexpr napi_type_tag kTags[] = {
    {0x7f1c2a9e5b3d4c61ULL, 0x9a0e8b7d6c5f4e31ULL},  // Tensor
    {0x2d6b9f1e8a4c7035ULL, 0xc3e5a7190b2d4f68ULL},  // ScriptModule
    {0x5e8a1c3f7b9d2e40ULL, 0x61f7d3b5a9c0e824ULL},  // AdamW
    {0xb4c2e6a8d0f1357eULL, 0x3a9c5e7f1b2d4608ULL},  // LoraAdapters
    {0x8e3d5b1f9c7a2064ULL, 0xd17b3f5a09e2c846ULL},  // BottleneckAdapters
};
constexpr WrapClass kAll[] = {WrapClass::Tensor, WrapClass::ScriptModule, WrapClass::AdamW, WrapClass::LoraAdapters,
                              WrapClass::BottleneckAdapters};

const napi_type_tag& TagOf(WrapClass cls) {
  return kTags[static_cast<int>(cls)];
}

}  // namespace

const char* WrapClassName(WrapClass cls) {
  switch (cls) {
    case WrapClass::Tensor:
      return "Tensor";
    case WrapClass::ScriptModule:
      return "ScriptModule";
    case WrapClass::AdamW:
      return "AdamW";
    case WrapClass::LoraAdapters:
      return "LoraAdapters";
    case WrapClass::BottleneckAdapters:
      return "BottleneckAdapters";
  }
  return "?";
}

void TagWrapped(const Napi::Object& object, WrapClass cls) {
  if (napi_type_tag_object(object.Env(), object, &TagOf(cls)) != napi_ok) {
    ThrowError(object.Env(), std::string("cannot tag a new ") + WrapClassName(cls) + " (already tagged)");
  }
}

bool IsWrapped(const Napi::Value& value, WrapClass cls) {
  if (!value.IsObject()) return false;
  bool result = false;
  return napi_check_object_type_tag(value.Env(), value, &TagOf(cls), &result) == napi_ok && result;
}

std::string DescribeValue(const Napi::Value& value) {
  for (WrapClass cls : kAll) {
    if (IsWrapped(value, cls)) return std::string(cls == WrapClass::AdamW ? "an " : "a ") + WrapClassName(cls);
  }
  return TypeOfValue(value);
}

void* UnwrapTagged(const Napi::Value& value, WrapClass cls, const std::string& what) {
  Napi::Env env = value.Env();
  const std::string article = cls == WrapClass::AdamW ? " must be an " : " must be a ";
  if (!IsWrapped(value, cls))
    ThrowTypeError(env, what + article + WrapClassName(cls) + ", got " + DescribeValue(value));
  void* raw = nullptr;
  // A tagged object is always wrapped (the tag is set after ObjectWrap's constructor wrapped
  // it); a failure here would be an addon bug, reported rather than dereferenced.
  if (napi_unwrap(env, value, &raw) != napi_ok || raw == nullptr) {
    ThrowTypeError(env, what + ": the " + WrapClassName(cls) + " has no native object");
  }
  return raw;
}

}  // namespace torch_bert
