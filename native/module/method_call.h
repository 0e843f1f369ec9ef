// How torch-bert runs a method of a model: every forward (ScriptModule.forward/runMethod, the
// train and eval batches, extractFeatures) goes through CallMethod. It builds the method's
// stack (MethodStack) and runs a private, inlined copy of the method's TorchScript graph: with
// token pruning (graph/token_pruning.h) for a model without adapters (CallPruned), LoRA's
// rewritten graph (graph/lora_rewrite.h), itself pruned, with LoraWeights for adapters left to
// weight space (CallWithAdapters), or the graph with bottleneck adapters inserted
// (graph/bottleneck_rewrite.h), pruned (CallWithBottleneck). The model's own graphs are never
// modified: TorchScript shares them between deep copies, and a saved model must stay what the
// user traced (bottleneck adapters are saved in a copy, module/bottleneck_save.h).
// Mirrors torch::jit::Method::operator() (schema check, defaults, run), with the graph
// swapped. Depends on the graph passes, never the other way round.
#pragma once

#include <torch/script.h>

#include <string>
#include <utility>
#include <vector>

#include "module/bottleneck_state.h"
#include "module/lora_state.h"
#include "module/module_state.h"

namespace torch_bert {

// The stack `method`'s graph takes for a call on `inputs` (without self): self first, then the
// inputs with defaults filled in and checked, as Method::operator() does.
torch::jit::Stack MethodStack(const ModuleState& state, const torch::jit::Method& method,
                              std::vector<c10::IValue> inputs);

// Calls `method` (a method of state.module) on `inputs` (without self): CallPruned for a model
// without adapters, else CallWithAdapters or CallWithBottleneck in `mode`. Mutex held.
c10::IValue CallMethod(ModuleState& state, const torch::jit::Method& method, std::vector<c10::IValue> inputs,
                       LoraMode mode);

// Runs `method` of state.module on `inputs` (without self), through its pruned graph when
// token pruning applies. Mutex held.
c10::IValue CallPruned(ModuleState& state, const torch::jit::Method& method, std::vector<c10::IValue> inputs);

// Runs `method` of a model with adapters (state.lora set) with the adapters in effect: mode
// kTrain (autograd on; adapter dropout where the adapted module is in training mode) or
// kForward (the thread's autograd mode; no dropout). Mutex held.
c10::IValue CallWithAdapters(ModuleState& state, const torch::jit::Method& method, std::vector<c10::IValue> inputs,
                             LoraMode mode);

// Runs `method` of a model with bottleneck adapters (state.bottleneck set) through its graph
// with the adapters inserted (graph/bottleneck_rewrite.h), pruned: mode kTrain (autograd on) or
// kForward (the thread's autograd mode). Mutex held.
c10::IValue CallWithBottleneck(ModuleState& state, const torch::jit::Method& method, std::vector<c10::IValue> inputs,
                               LoraMode mode);

// What token pruning did to `method` as CallMethod runs it (built on the first call): the kinds
// of the nodes narrowed to one row; null before the first call. Mutex held.
const std::vector<std::string>* PrunedOps(ModuleState& state, const std::string& method);

// How CallWithAdapters runs `method`, for tests and diagnostics: the module paths of the
// adapters applied in activation space and in weight space. Mutex held.
std::pair<std::vector<std::string>, std::vector<std::string>> AdapterPlan(ModuleState& state,
                                                                          const torch::jit::Method& method);

}  // namespace torch_bert
