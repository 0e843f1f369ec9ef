// Turning C++ failures into JS exceptions.
//
// Every entry point runs its body through Guard() (or GuardAsync() when it returns a Promise),
// so nothing thrown by libtorch can unwind into Node-API and abort the process. libtorch's
// messages are reported without their C++ backtrace: the JS stack is what the user needs.
// The readers that validate JS arguments are addon/arguments.h.
#pragma once

#include <napi.h>

#include <c10/util/Exception.h>

#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>

namespace torch_bert {

// A failure detected on a worker thread, carried to the main thread as plain data because
// JS values cannot be created off the main thread.
struct ErrorInfo {
  bool typeError = false;
  std::string message;
  // Set as the JS error's `code` when not empty (e.g. TORCH_BERT_OUT_OF_MEMORY).
  std::string code;
  // The whole text when `message` is a summary of it (a TorchScript interpreter failure):
  // set as the JS error's `cause`, so the traceback is never dropped.
  std::string detail;
};

// A TorchScript interpreter failure ("The following operation failed in the TorchScript
// interpreter." + the serialized and original tracebacks + the error raised) in one line: the
// innermost error's message, the operation that raised it and the module it ran in, e.g.
// "index out of range in self (in torch.embedding, module encoder.embeddings.word_embeddings)".
// Text before the header (a caller's prefix) is kept. Returns false, `line` untouched, for any
// other message. The first line alone is the header, which tells a user nothing.
bool SummarizeInterpreterError(const std::string& what, std::string& line);

// What JS gets for a failure's message: interpreter failures summarized, with the code
// TORCH_BERT_SCRIPT_ERROR unless the failure already has one and the full text as `detail`.
inline ErrorInfo MessageInfo(std::string message, std::string code = {}) {
  ErrorInfo info{false, std::move(message), std::move(code), {}};
  std::string line;
  if (SummarizeInterpreterError(info.message, line)) {
    info.detail = std::move(info.message);
    info.message = std::move(line);
    if (info.code.empty()) info.code = "TORCH_BERT_SCRIPT_ERROR";
  }
  return info;
}

// Thrown by validation code that may run off the main thread (no Napi::Env there).
class ArgumentError : public std::runtime_error {
 public:
  explicit ArgumentError(const std::string& message, bool typeError = false)
      : std::runtime_error(message), typeError_(typeError) {}
  bool typeError() const { return typeError_; }

 private:
  bool typeError_;
};

// A failure with a machine-readable code for JS (`error.code`), e.g. a device error.
class CodedError : public std::runtime_error {
 public:
  CodedError(const std::string& message, std::string code) : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

// The message of whatever is currently being handled, as a user would want to read it.
inline ErrorInfo CurrentErrorInfo() {
  try {
    throw;
  } catch (const ArgumentError& e) {
    return {e.typeError(), e.what(), {}, {}};
  } catch (const CodedError& e) {
    return MessageInfo(e.what(), e.code());
  } catch (const c10::Error& e) {
    return MessageInfo(e.what_without_backtrace());
  } catch (const std::exception& e) {
    // The interpreter rethrows what an operation raised as a std::runtime_error with its tracebacks.
    return MessageInfo(e.what());
  } catch (...) {
    return {false, "unknown native error", {}, {}};
  }
}

inline Napi::Error MakeError(Napi::Env env, const ErrorInfo& info) {
  if (info.typeError) return Napi::TypeError::New(env, info.message);
  Napi::Error error = Napi::Error::New(env, info.message);
  if (!info.code.empty()) error.Set("code", Napi::String::New(env, info.code));
  if (!info.detail.empty()) error.Set("cause", Napi::Error::New(env, info.detail).Value());
  return error;
}

// Runs an entry point's body, translating any C++ exception into a JS exception.
template <typename F>
auto Guard(Napi::Env env, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;  // already a JS exception
  } catch (...) {
    throw MakeError(env, CurrentErrorInfo());
  }
}

// Like Guard, for entry points that return a Promise: failures, including argument
// validation, become a rejected Promise rather than a synchronous throw, so callers have
// one error path.
template <typename F>
Napi::Value GuardAsync(Napi::Env env, F&& body) {
  try {
    return body();
  } catch (const Napi::Error& e) {
    auto deferred = Napi::Promise::Deferred::New(env);
    deferred.Reject(e.Value());
    return deferred.Promise();
  } catch (...) {
    auto deferred = Napi::Promise::Deferred::New(env);
    deferred.Reject(MakeError(env, CurrentErrorInfo()).Value());
    return deferred.Promise();
  }
}

[[noreturn]] inline void ThrowTypeError(Napi::Env env, const std::string& message) {
  throw Napi::TypeError::New(env, message);
}

[[noreturn]] inline void ThrowError(Napi::Env env, const std::string& message) {
  throw Napi::Error::New(env, message);
}

}  // namespace torch_bert
