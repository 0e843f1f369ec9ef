#include "module/bottleneck_state.h"

#include <torch/torch.h>

namespace torch_bert {

std::vector<torch::Tensor> BottleneckTensors(const BottleneckModule& m) {
  return {m.downWeight, m.downBias, m.upWeight, m.upBias};
}

std::vector<torch::Tensor> BottleneckParameters(const ModuleState& state) {
  std::vector<torch::Tensor> out;
  if (!state.bottleneck) return out;
  for (const auto& m : state.bottleneck->modules) {
    for (const auto& t : BottleneckTensors(m)) out.push_back(t);
  }
  return out;
}

void MoveBottleneck(const ModuleState& state, const c10::Device& device) {
  if (!state.bottleneck) return;
  torch::NoGradGuard noGrad;
  for (const auto& m : state.bottleneck->modules) {
    for (torch::Tensor t : BottleneckTensors(m)) {
      if (t.device() == device) continue;
      // set_data keeps the TensorImpl, so JS handles and optimizers follow the move.
      t.mutable_grad() = torch::Tensor();
      t.set_data(t.to(device));
    }
  }
}

}  // namespace torch_bert
