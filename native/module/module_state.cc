#include "module/module_state.h"

namespace torch_bert {

const std::vector<torch::Tensor>& Parameters(ModuleState& state) {
  if (!state.parametersCollected) {
    for (const auto& p : state.module.parameters()) state.parameters.push_back(p);
    state.parametersCollected = true;
  }
  return state.parameters;
}

const std::vector<torch::jit::Module>& Modules(ModuleState& state) {
  if (!state.modulesCollected) {
    for (const auto& m : state.module.modules()) state.modules.push_back(m);
    state.modulesCollected = true;
  }
  return state.modules;
}

c10::Device ModuleDevice(const ModuleState& state) {
  for (const auto& p : state.module.parameters()) return p.device();
  for (const auto& b : state.module.buffers()) return b.device();
  return state.device;
}

void SetTrainingFlag(const torch::jit::Module& module, bool on) {
  if (module.hasattr("training")) {
    torch::jit::Module(module).setattr("training", c10::IValue(on));
  }
}

TrainingModeSnapshot::TrainingModeSnapshot(const torch::jit::Module& module) {
  for (const auto& m : module.modules()) flags_.emplace_back(m, m.is_training());
}

TrainingModeSnapshot::TrainingModeSnapshot(const std::vector<torch::jit::Module>& modules) {
  for (const auto& m : modules) flags_.emplace_back(m, m.is_training());
}

TrainingModeSnapshot::~TrainingModeSnapshot() {
  for (const auto& [m, on] : flags_) {
    try {
      SetTrainingFlag(m, on);
    } catch (...) {
      // A destructor must not throw; the flag can only fail to be set if the attribute
      // vanished, which a TorchScript module's type does not allow.
    }
  }
}

}  // namespace torch_bert
