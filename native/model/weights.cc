#include "model/weights.h"

#include <sstream>
#include <stdexcept>

namespace torch_bert {

namespace {

std::string ShapeText(c10::IntArrayRef shape) {
  std::ostringstream os;
  os << shape;
  return os.str();
}

}  // namespace

WeightStore::WeightStore(std::vector<std::pair<std::string, torch::Tensor>> named, c10::Device device)
    : device_(device) {
  for (auto& [name, tensor] : named) {
    if (!remaining_.emplace(name, tensor).second) {
      throw std::runtime_error("buildEncoder: tensor '" + name + "' is given twice");
    }
  }
}

torch::Tensor WeightStore::Take(const std::string& name, const std::vector<int64_t>& shape) {
  auto it = remaining_.find(name);
  if (it == remaining_.end()) {
    throw std::runtime_error("buildEncoder: missing tensor '" + name + "' (expected shape " + ShapeText(shape) + ")");
  }
  const torch::Tensor& given = it->second;
  if (given.sizes() != c10::IntArrayRef(shape)) {
    throw std::runtime_error("buildEncoder: tensor '" + name + "' has shape " + ShapeText(given.sizes()) +
                             " but the config says " + ShapeText(shape));
  }
  if (!given.is_floating_point()) {
    throw std::runtime_error("buildEncoder: tensor '" + name + "' is " +
                             std::string(c10::toString(given.scalar_type())) + ", not a floating-point weight");
  }
  torch::Tensor p;
  {
    torch::NoGradGuard noGrad;
    p = given.to(device_, torch::kFloat).detach();
  }
  p.set_requires_grad(true);
  remaining_.erase(it);
  return p;
}

torch::Tensor WeightStore::TakeOptional(const std::string& name, const std::vector<int64_t>& shape) {
  return Has(name) ? Take(name, shape) : torch::Tensor();
}

void WeightStore::CheckAllTaken() const {
  if (remaining_.empty()) return;
  std::string names;
  for (const auto& [name, tensor] : remaining_) {
    if (!names.empty()) names += ", ";
    names += "'" + name + "' " + ShapeText(tensor.sizes());
  }
  throw std::runtime_error("buildEncoder: unexpected tensor" + std::string(remaining_.size() > 1 ? "s " : " ") + names +
                           " (not part of the model the config describes)");
}

}  // namespace torch_bert
