#include "module/lora_state.h"

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/torch.h>

#include <optional>

namespace torch_bert {

// ---- LoraWeights ---------------------------------------------------------------------------

LoraWeights::LoraWeights(const ModuleState& state, LoraMode mode) {
  if (!state.lora) return;
  std::vector<size_t> all(state.lora->modules.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  Apply(*state.lora, mode, all);
}

LoraWeights::LoraWeights(const LoraState& lora, LoraMode mode, const std::vector<size_t>& modules) {
  Apply(lora, mode, modules);
}

void LoraWeights::Apply(const LoraState& lora, LoraMode mode, const std::vector<size_t>& modules) {
  if (modules.empty()) return;
  // The merged weights in the parameters' precision, even inside an autocast region.
  c10::impl::ExcludeDispatchKeyGuard noAutocast(c10::autocast_dispatch_keyset);
  std::optional<c10::AutoGradMode> grad;
  if (mode == LoraMode::kTrain) grad.emplace(true);
  if (mode == LoraMode::kMerged) grad.emplace(false);
  const double scaling = lora.Scaling();
  try {
    for (size_t i : modules) {
      const LoraModule& m = lora.modules.at(i);
      torch::Tensor a = m.a;
      if (mode == LoraMode::kTrain && lora.dropout > 0 && m.module.is_training()) {
        // Weight space cannot drop per example: one mask on A's input columns per call drops
        // input feature j from B·A·x for every example (the activation-space path drops per
        // element, as PEFT's lora_dropout).
        const double keep = 1 - lora.dropout;
        torch::Tensor mask = torch::empty({a.size(1)}, a.options()).bernoulli_(keep).div_(keep);
        a = a * mask;
      }
      // One fused kernel: W0 + scaling * (B @ A). W0 is detached: it never receives a gradient.
      torch::Tensor weight = torch::addmm(m.w0.detach(), m.b, a, /*beta=*/1, /*alpha=*/scaling);
      restore_.emplace_back(m.module, m.w0);
      torch::jit::Module(m.module).setattr("weight", weight);
    }
  } catch (...) {
    // The destructor does not run for a constructor that throws.
    for (auto& [module, w0] : restore_) module.setattr("weight", w0);
    throw;
  }
}

LoraWeights::~LoraWeights() {
  for (auto& [module, w0] : restore_) {
    try {
      module.setattr("weight", w0);
    } catch (...) {
      // Cannot happen for a slot that setattr just wrote; a destructor must not throw.
    }
  }
}

std::vector<torch::Tensor> LoraParameters(const ModuleState& state) {
  std::vector<torch::Tensor> out;
  if (!state.lora) return out;
  for (const auto& m : state.lora->modules) {
    out.push_back(m.a);
    out.push_back(m.b);
  }
  return out;
}

void MoveLora(const ModuleState& state, const c10::Device& device) {
  if (!state.lora) return;
  torch::NoGradGuard noGrad;
  for (auto& m : state.lora->modules) {
    for (torch::Tensor* t : {&m.a, &m.b}) {
      if (t->device() == device) continue;
      // set_data keeps the TensorImpl, so JS handles and optimizers follow the move.
      t->mutable_grad() = torch::Tensor();
      t->set_data(t->to(device));
    }
  }
}

}  // namespace torch_bert
