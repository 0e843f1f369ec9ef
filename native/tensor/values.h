// Converting between JS values and TorchScript IValues (tensors as the JS Tensor class of
// tensor/tensor.h), for ScriptModule.forward/runMethod. Mirrors what torch/csrc/jit/python/
// pybind_utils.h does for Python.
#pragma once

#include <napi.h>
#include <torch/script.h>

#include <string>

namespace torch_bert {

// Converts a JS argument to the TorchScript type the method's schema declares, so that
// e.g. a JS number becomes an int or a float as the callee expects. Throws a TypeError
// naming `what` when the value does not fit.
c10::IValue JsToIValue(const Napi::Value& value, const c10::TypePtr& type, const std::string& what);

// Converts a method's result: tensors become Tensor objects, tuples and lists arrays, dicts
// plain objects, None null. Throws for types JS has no counterpart for.
Napi::Value IValueToJs(Napi::Env env, const c10::IValue& value);

}  // namespace torch_bert
