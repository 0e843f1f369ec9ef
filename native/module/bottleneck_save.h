// A model with bottleneck adapters as it is saved and cloned: adapters cannot be merged into
// weights (LoRA's are, module/lora_state.h), so the saved TorchScript module carries them.
// ModuleWithBottleneck returns a copy of the model (Module::clone: its own class types, so the
// model's graphs and types stay untouched) in which each adapted sub-layer has an `adapter`
// submodule (`down` and `up`, each with `weight` and `bias` parameters) and every method that
// reaches an adapted layer is replaced by its rewritten graph (graph/bottleneck_rewrite.h),
// the adapter inputs read from those attributes. The file runs in Python with nothing but
// torch, `forward(input_ids, attention_mask)` as before, and computes what the model computed.
#pragma once

#include <torch/script.h>

#include "module/module_state.h"

namespace torch_bert {

// The copy described above; state.bottleneck must be set. Mutex held.
torch::jit::Module ModuleWithBottleneck(const ModuleState& state);

}  // namespace torch_bert
