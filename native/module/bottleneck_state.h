// Bottleneck adapters' state on a model (BottleneckState, held by ModuleState::bottleneck): the
// adapted sub-layers, each with its output projection (`dense`) and the adapter's tensors. No
// N-API (module/bottleneck_adapters.h) and no graphs (graph/bottleneck_rewrite.h;
// module/method_call.h runs methods with the adapters, module/bottleneck_save.h saves them).
// Mirrors AdapterHub's bottleneck Adapter (adapter_down, non-linearity, adapter_up, residual)
// with the placement of Houlsby et al.: after a sub-layer's output projection, before its
// residual LayerNorm.
//
// The model's own graphs and modules are never changed while the adapters are attached (the
// adapters enter each forward as inputs of a rewritten copy of its graph): TorchScript shares
// graphs and class types between deep copies of a module.
#pragma once

#include <torch/script.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "module/module_state.h"

namespace torch_bert {

struct BottleneckModule {
  std::string path;          // the sub-layer, e.g. encoder.encoder.layer.0.attention.output
  std::string projection;    // its output projection's name: dense (BERT, RoBERTa), out_lin or lin2 (DistilBERT)
  torch::jit::Module dense;  // that projection, `<path>.<projection>` (a handle on the model's object)
  torch::Tensor downWeight;  // [size, hidden]
  torch::Tensor downBias;    // [size]
  torch::Tensor upWeight;    // [hidden, size]
  torch::Tensor upBias;      // [hidden]
};

struct BottleneckMethod;  // module/method_call.cc: one method as run with the adapters

// Lives in ModuleState::bottleneck while attached; guarded by the model's mutex.
struct BottleneckState {
  std::string config;      // houlsby (after attention and feed-forward) or pfeiffer (feed-forward only)
  int64_t size = 0;        // bottleneck width (resolved from a reduction factor where given)
  std::string activation;  // relu, gelu or swish
  uint64_t seed = 0;
  std::vector<BottleneckModule> modules;
  // The rewritten methods, by name, built on first call (module/method_call.cc).
  std::unordered_map<std::string, std::shared_ptr<BottleneckMethod>> methods;
};

// The adapter tensors' names, relative to the sub-layer: its `adapter` submodule's parameters
// as a saved model holds them (module/bottleneck_save.h).
inline constexpr const char* kBottleneckTensorNames[] = {"adapter.down.weight", "adapter.down.bias",
                                                         "adapter.up.weight", "adapter.up.bias"};

// The four tensors of `m`, in kBottleneckTensorNames' order.
std::vector<torch::Tensor> BottleneckTensors(const BottleneckModule& m);

// Every adapter tensor of an attached model (empty when none). Mutex held.
std::vector<torch::Tensor> BottleneckParameters(const ModuleState& state);

// Moves the adapters with their model (ScriptModule.to), keeping tensor identities. Mutex held.
void MoveBottleneck(const ModuleState& state, const c10::Device& device);

}  // namespace torch_bert
