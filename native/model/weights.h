// The named tensors a model is built from (a checkpoint's state_dict, names as transformers
// writes them), handed out once each with their shapes checked, so that a missing tensor, an
// unexpected one and a shape that disagrees with the config are each reported by name.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace torch_bert {

class WeightStore {
 public:
  // `device`: where parameters go. Throws on a repeated name.
  WeightStore(std::vector<std::pair<std::string, torch::Tensor>> named, c10::Device device);

  // The tensor `name` as a float32 parameter on the device (requires_grad), after checking that
  // it exists and has `shape`. Shares storage with the given tensor when it is float32 on that
  // device already (a checkpoint is not held twice). Throws naming the tensor and both shapes.
  torch::Tensor Take(const std::string& name, const std::vector<int64_t>& shape);
  // Take() when the store has `name`, else an undefined tensor.
  torch::Tensor TakeOptional(const std::string& name, const std::vector<int64_t>& shape);
  bool Has(const std::string& name) const { return remaining_.count(name) > 0; }

  // Throws when tensors were never taken, naming them (an unexpected name: a typo, another
  // model's tensor, a prefix the caller did not strip).
  void CheckAllTaken() const;

  c10::Device device() const { return device_; }

 private:
  std::map<std::string, torch::Tensor> remaining_;
  c10::Device device_;
};

}  // namespace torch_bert
