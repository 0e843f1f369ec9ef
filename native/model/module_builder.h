// How models are built in C++ as TorchScript: one torch::jit::Module per Hugging Face module,
// with transformers' module and parameter names, its `forward` compiled from TorchScript source
// (Module::define; no Python, no tracing). Modules of one class (the N layers) share one class
// type, whose methods are compiled once. Also torch.nn's leaf modules (Linear, LayerNorm,
// Embedding, Dropout) and transformers' activations (ACT2FN), which every model uses.
//
// The forward sources keep to what the graph passes understand (graph/token_pruning.h,
// graph/lora_rewrite.h): no control flow, linears as aten::linear on the module's own `weight`,
// view sizes as lists of x.size(k), and dropout as aten::dropout(x, p, self.training).
#pragma once

#include <torch/script.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "model/weights.h"

namespace torch_bert {

// A float as a TorchScript literal that reads back as the same double (always with a '.' or an
// exponent, so it is never an int).
std::string FloatLiteral(double v);

class ModelBuilder {
 public:
  explicit ModelBuilder(WeightStore& weights)
      : cu_(std::make_shared<torch::jit::CompilationUnit>()), weights_(weights) {}

  // A module of the class `qualifiedName` with the methods `source`. `fill` registers its
  // parameters and submodules. The first module of a (name, source) pair creates the class and
  // compiles `source` (after `fill`: the methods refer to the attributes); later ones are new
  // objects of that class. Every module gets the `training` attribute (false: built in eval mode).
  torch::jit::Module Make(const std::string& qualifiedName, const std::string& source,
                          const std::function<void(torch::jit::Module&)>& fill);

  // torch.nn.Linear at `prefix` (prefix + ".weight" [out, in], ".bias" [out]).
  torch::jit::Module Linear(const std::string& prefix, int64_t in, int64_t out);
  // A Linear whose weight is given (a tied decoder) and whose bias is the caller's:
  // forward(x, bias). The MLM decoders, whose bias transformers keeps on their parent.
  torch::jit::Module TiedDecoder(const torch::Tensor& weight);
  // torch.nn.Linear with a given weight and its own bias (DistilBERT's vocab_projector).
  torch::jit::Module LinearWithWeight(const torch::Tensor& weight, const std::string& biasName, int64_t out);
  // torch.nn.LayerNorm over the last `size` features at `prefix` (".weight", ".bias").
  torch::jit::Module LayerNorm(const std::string& prefix, int64_t size, double eps);
  // torch.nn.Embedding at `prefix` (".weight" [rows, dim]); paddingIdx -1 for none (it only
  // changes the gradient: the padding row gets none, as in transformers).
  torch::jit::Module Embedding(const std::string& prefix, int64_t rows, int64_t dim, int64_t paddingIdx);
  // torch.nn.Dropout(p): aten::dropout(x, p, self.training).
  torch::jit::Module Dropout(double p);
  // A container without methods, its children registered by `fill` (torch.nn.ModuleList).
  torch::jit::Module ModuleList(const std::function<void(torch::jit::Module&)>& fill);

  WeightStore& weights() { return weights_; }

 private:
  std::shared_ptr<torch::jit::CompilationUnit> cu_;
  WeightStore& weights_;
  std::unordered_map<std::string, c10::ClassTypePtr> types_;
};

// transformers' ACT2FN[name] applied to the TorchScript expression `x`, as an expression:
// gelu (erf), gelu_new (the tanh approximation written out, NewGELUActivation),
// gelu_pytorch_tanh (aten::gelu with approximate='tanh'), relu, silu.
std::string Activation(const std::string& name, const std::string& x);

}  // namespace torch_bert
