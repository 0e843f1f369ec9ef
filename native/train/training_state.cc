#include "train/training_state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/torch.h>

#include <cstring>
#include <mutex>
#include <vector>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "tensor/pickle_file.h"
#include "tensor/tensor.h"

namespace torch_bert {

namespace {

// ---- Named tensors -------------------------------------------------------------------------

Napi::Value SaveTensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string fn = "saveTensors";
    std::string path = ReadPath(info[0], fn + ": path");
    Napi::Object object = ReadObject(info[1], fn + ": tensors");
    if (Tensor::IsTensor(object))
      ThrowTypeError(env, fn + ": tensors must be a record of name -> Tensor, got a Tensor");
    std::vector<std::pair<std::string, c10::IValue>> entries;
    Napi::Array names = object.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); ++i) {
      std::string name = names.Get(i).ToString().Utf8Value();
      torch::Tensor t = Tensor::Get(object.Get(name), fn + ": tensors['" + name + "']");
      // Values only (no autograd flags), as CPU copies so that the file loads anywhere.
      entries.emplace_back(name, t);
    }
    WriteTorchSaveFile(entries, path, "tensors");
    return env.Undefined();
  });
}

Napi::Value LoadTensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string fn = "loadTensors";
    std::string path = ReadPath(info[0], fn + ": path");
    c10::IValue value = ReadPickleFile(path, "tensors");
    const std::string prefix = fn + ": '" + path + "' ";
    if (!value.isGenericDict())
      ThrowError(env, prefix + "does not hold a dict of tensors (found a " + value.tagKind() + ")");
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString()) {
        ThrowError(env, prefix + "does not hold a dict of tensors (it has a " + entry.key().tagKind() + " key)");
      }
      const std::string& name = entry.key().toStringRef();
      if (!entry.value().isTensor()) {
        ThrowError(env,
                   prefix + "does not hold a dict of tensors ('" + name + "' is a " + entry.value().tagKind() + ")");
      }
      tensors.emplace_back(name, entry.value().toTensor());
    }
    Napi::Object out = Napi::Object::New(env);
    for (const auto& [name, t] : tensors) out.Set(name, Tensor::Wrap(env, t));
    return out;
  });
}

// ---- Random generators ---------------------------------------------------------------------
//
// The state is a byte string: "TBRNG001", a uint32 count, then per generator a uint32 device
// type (0 = CPU, 1 = CUDA), a uint32 device index, a uint64 length and that many bytes of
// Generator::get_state(). Native byte order: the state is for resuming on the same machine
// kind, like the generators' own states.

constexpr char kMagic[8] = {'T', 'B', 'R', 'N', 'G', '0', '0', '1'};
constexpr uint32_t kCpu = 0;
constexpr uint32_t kCuda = 1;

struct GeneratorState {
  uint32_t type;
  uint32_t index;
  std::vector<uint8_t> bytes;
};

template <typename T>
void Append(std::vector<uint8_t>& out, T value) {
  const auto* p = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

std::vector<uint8_t> StateBytes(const at::Generator& generator) {
  torch::Tensor state;
  {
    // As torch.get_rng_state does: the generator's mutex guards its state.
    at::Generator gen = generator;
    std::lock_guard<std::mutex> lock(gen.mutex());
    state = gen.get_state();
  }
  state = state.to(torch::kCPU).contiguous();
  const auto* data = static_cast<const uint8_t*>(state.data_ptr());
  return std::vector<uint8_t>(data, data + state.numel() * state.element_size());
}

void SetState(const at::Generator& generator, const std::vector<uint8_t>& bytes) {
  torch::Tensor state = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kByte);
  if (!bytes.empty()) std::memcpy(state.data_ptr(), bytes.data(), bytes.size());
  at::Generator gen = generator;
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);  // checks the size and throws on a mismatch
}

int64_t CudaGenerators() {
  return torch::cuda::is_available() ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
}

// The CUDA generators are reached through ATen's hooks, so this compiles and links against
// CPU-only libtorch too.
at::Generator CudaGenerator(int64_t index) {
  return at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index)));
}

Napi::Value GetRngState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    std::vector<GeneratorState> states;
    states.push_back({kCpu, 0, StateBytes(at::detail::getDefaultCPUGenerator())});
    const int64_t cuda = CudaGenerators();
    for (int64_t i = 0; i < cuda; ++i)
      states.push_back({kCuda, static_cast<uint32_t>(i), StateBytes(CudaGenerator(i))});

    std::vector<uint8_t> out(kMagic, kMagic + sizeof(kMagic));
    Append<uint32_t>(out, static_cast<uint32_t>(states.size()));
    for (const auto& s : states) {
      Append<uint32_t>(out, s.type);
      Append<uint32_t>(out, s.index);
      Append<uint64_t>(out, static_cast<uint64_t>(s.bytes.size()));
      out.insert(out.end(), s.bytes.begin(), s.bytes.end());
    }
    Napi::Uint8Array array = Napi::Uint8Array::New(env, out.size());
    std::memcpy(array.Data(), out.data(), out.size());
    return array;
  });
}

// getRngState's bytes back into generator states: the header, then each generator's type,
// index and state; anything else is refused ("setRngState: not a state from getRngState (why)").
std::vector<GeneratorState> ReadRngState(const uint8_t* data, size_t size) {
  size_t pos = 0;
  auto invalid = [](const std::string& why) {
    throw ArgumentError("setRngState: not a state from getRngState (" + why + ")");
  };
  auto read = [&](void* dst, size_t n) {
    if (size - pos < n) invalid("truncated");
    std::memcpy(dst, data + pos, n);
    pos += n;
  };
  char magic[sizeof(kMagic)];
  read(magic, sizeof(magic));
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) invalid("bad header");
  uint32_t count = 0;
  read(&count, sizeof(count));
  std::vector<GeneratorState> states;
  for (uint32_t i = 0; i < count; ++i) {
    GeneratorState s;
    uint64_t length = 0;
    read(&s.type, sizeof(s.type));
    read(&s.index, sizeof(s.index));
    read(&length, sizeof(length));
    if (s.type != kCpu && s.type != kCuda) invalid("unknown generator type " + std::to_string(s.type));
    if (length > size - pos) invalid("truncated");
    s.bytes.assign(data + pos, data + pos + length);
    pos += length;
    states.push_back(std::move(s));
  }
  if (pos != size) invalid("trailing bytes");
  bool hasCpu = false;
  for (const auto& s : states) hasCpu = hasCpu || s.type == kCpu;
  if (!hasCpu) invalid("no CPU generator state");
  return states;
}

Napi::Value SetRngState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const Napi::Value& value = info[0];
    if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      ThrowTypeError(env, "setRngState: state must be a Uint8Array, got " + TypeOfValue(value));
    }
    auto array = value.As<Napi::Uint8Array>();
    const std::vector<GeneratorState> states = ReadRngState(array.Data(), array.ElementLength());
    // CUDA states of devices this process does not see are skipped: without them there is
    // nothing that could draw from those generators.
    const int64_t cuda = CudaGenerators();
    for (const auto& s : states) {
      if (s.type == kCpu) {
        SetState(at::detail::getDefaultCPUGenerator(), s.bytes);
      } else if (static_cast<int64_t>(s.index) < cuda) {
        SetState(CudaGenerator(s.index), s.bytes);
      }
    }
    return env.Undefined();
  });
}

}  // namespace

void RegisterTrainingState(Napi::Env env, Napi::Object exports) {
  exports.Set("saveTensors", Napi::Function::New<SaveTensors>(env, "saveTensors"));
  exports.Set("loadTensors", Napi::Function::New<LoadTensors>(env, "loadTensors"));
  exports.Set("getRngState", Napi::Function::New<GetRngState>(env, "getRngState"));
  exports.Set("setRngState", Napi::Function::New<SetRngState>(env, "setRngState"));
}

}  // namespace torch_bert
