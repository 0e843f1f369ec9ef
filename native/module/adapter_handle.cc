#include "module/adapter_handle.h"

#include <algorithm>
#include <unordered_map>

namespace torch_bert {

c10::impl::GenericDict ReadAdaptersFile(Napi::Env env, const std::string& path, const std::string& fn,
                                        const std::string& what) {
  c10::IValue file = ReadPickleFile(path, what);
  if (!file.isGenericDict()) {
    ThrowError(env,
               fn + ": '" + path + "' does not hold " + what + " (expected a dict, found a " + file.tagKind() + ")");
  }
  return file.toGenericDict();
}

void LoadAdapterTensors(Napi::Env env, const std::string& prefix, const NamedTensors& adapters,
                        const c10::impl::GenericDict& file, const std::string& unit) {
  std::unordered_map<std::string, torch::Tensor> tensors;
  for (const auto& entry : file) {
    if (entry.key().isString() && entry.value().isTensor()) {
      tensors.emplace(entry.key().toStringRef(), entry.value().toTensor());
    }
  }
  // Check everything before changing anything.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  for (const auto& [name, dst] : adapters) {
    auto it = tensors.find(name);
    if (it == tensors.end()) ThrowError(env, prefix + "has no tensor '" + name + "'");
    if (!it->second.sizes().equals(dst.sizes())) {
      ThrowError(env, prefix + "has '" + name + "' of shape " + ShapeString(it->second.sizes()) + ", expected " +
                          ShapeString(dst.sizes()));
    }
    copies.emplace_back(dst, it->second);
  }
  if (copies.size() != tensors.size()) {
    for (const auto& [name, t] : tensors) {
      if (std::none_of(adapters.begin(), adapters.end(), [&](const auto& known) { return known.first == name; })) {
        ThrowError(env, prefix + "has tensor '" + name + "' for a " + unit + " these adapters do not adapt");
      }
    }
  }
  torch::NoGradGuard noGrad;
  for (auto& [dst, src] : copies) {
    torch::Tensor target = dst;
    target.copy_(src);
  }
}

}  // namespace torch_bert
