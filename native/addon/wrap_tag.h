// Which addon class made a JS object, checked before its native pointer is used.
//
// `instanceof` cannot answer that: Object.setPrototypeOf makes any object pass it, and
// napi_unwrap would then return another class's pointer, read as the wrong type (a Tensor read
// as a ScriptModule locks a garbage mutex). So each wrap class tags its instances in its
// constructor (napi_type_tag_object: permanent, invisible to JS), and both ways to the pointer
// check the tag first: the class's Get() for arguments, and its Unwrap(), which shadows
// ObjectWrap::Unwrap and which node-addon-api calls on `this` before every instance method and
// accessor.
#pragma once

#include <napi.h>

#include <string>

namespace torch_bert {

enum class WrapClass { Tensor, ScriptModule, AdamW, LoraAdapters, BottleneckAdapters };

const char* WrapClassName(WrapClass cls);

// Marks a freshly constructed instance as made by `cls`.
void TagWrapped(const Napi::Object& object, WrapClass cls);

// True when `value` is an object made by `cls`'s constructor, whatever its prototype is now.
bool IsWrapped(const Napi::Value& value, WrapClass cls);

// "a Tensor" for an object an addon class made, else TypeOfValue's word ("object", "number").
std::string DescribeValue(const Napi::Value& value);

// The native object behind `value`, or a TypeError "<what> must be a <Class>, got <...>".
void* UnwrapTagged(const Napi::Value& value, WrapClass cls, const std::string& what);

// For ObjectWrap subclasses: `static T* Unwrap(Napi::Object receiver)` returns this.
template <typename T>
T* UnwrapReceiver(const Napi::Object& receiver, WrapClass cls) {
  const std::string what = std::string("the receiver (this) of a ") + WrapClassName(cls) + " method";
  return static_cast<T*>(UnwrapTagged(receiver, cls, what));
}

}  // namespace torch_bert
