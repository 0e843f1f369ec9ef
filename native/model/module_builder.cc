#include "model/module_builder.h"

#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace torch_bert {

std::string FloatLiteral(double v) {
  if (!std::isfinite(v)) throw std::logic_error("FloatLiteral: not a finite number");
  std::ostringstream os;
  os << std::setprecision(std::numeric_limits<double>::max_digits10) << v;
  std::string s = os.str();
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

torch::jit::Module ModelBuilder::Make(const std::string& qualifiedName, const std::string& source,
                                      const std::function<void(torch::jit::Module&)>& fill) {
  const std::string key = qualifiedName + '\n' + source;
  auto known = types_.find(key);
  if (known != types_.end()) {
    torch::jit::Module m(cu_, known->second);
    m.register_attribute("training", c10::BoolType::get(), false);
    fill(m);
    return m;
  }
  // Mangled when the name is taken (the same class with other constants: two dropout rates).
  torch::jit::Module m(c10::QualifiedName(qualifiedName), cu_, /*shouldMangle=*/true);
  m.register_attribute("training", c10::BoolType::get(), false);
  fill(m);
  if (!source.empty()) m.define(source);
  types_.emplace(key, m.type());
  return m;
}

torch::jit::Module ModelBuilder::Linear(const std::string& prefix, int64_t in, int64_t out) {
  // nn.Linear.forward is F.linear, i.e. aten::linear on the module's own weight: what LoRA's
  // rewrite looks for (graph/lora_rewrite.cc).
  static const char* kSource = R"(
def forward(self, input):
    return torch.linear(input, self.weight, self.bias)
)";
  return Make("__torch__.torch.nn.modules.linear.Linear", kSource, [&](torch::jit::Module& m) {
    m.register_parameter("weight", weights_.Take(prefix + ".weight", {out, in}), false);
    m.register_parameter("bias", weights_.Take(prefix + ".bias", {out}), false);
  });
}

torch::jit::Module ModelBuilder::TiedDecoder(const torch::Tensor& weight) {
  static const char* kSource = R"(
def forward(self, input, bias):
    return torch.linear(input, self.weight, bias)
)";
  return Make("__torch__.torch.nn.modules.linear.Linear", kSource,
              [&](torch::jit::Module& m) { m.register_parameter("weight", weight, false); });
}

torch::jit::Module ModelBuilder::LinearWithWeight(const torch::Tensor& weight, const std::string& biasName,
                                                  int64_t out) {
  static const char* kSource = R"(
def forward(self, input):
    return torch.linear(input, self.weight, self.bias)
)";
  return Make("__torch__.torch.nn.modules.linear.Linear", kSource, [&](torch::jit::Module& m) {
    m.register_parameter("weight", weight, false);
    m.register_parameter("bias", weights_.Take(biasName, {out}), false);
  });
}

torch::jit::Module ModelBuilder::LayerNorm(const std::string& prefix, int64_t size, double eps) {
  // nn.LayerNorm.forward: F.layer_norm(input, normalized_shape, weight, bias, eps).
  const std::string source = "\ndef forward(self, input):\n    return torch.layer_norm(input, [" +
                             std::to_string(size) + "], self.weight, self.bias, " + FloatLiteral(eps) + ")\n";
  return Make("__torch__.torch.nn.modules.normalization.LayerNorm", source, [&](torch::jit::Module& m) {
    m.register_parameter("weight", weights_.Take(prefix + ".weight", {size}), false);
    m.register_parameter("bias", weights_.Take(prefix + ".bias", {size}), false);
  });
}

torch::jit::Module ModelBuilder::Embedding(const std::string& prefix, int64_t rows, int64_t dim, int64_t paddingIdx) {
  // nn.Embedding.forward: F.embedding -> aten::embedding(weight, input, padding_idx, False, False).
  const std::string source = "\ndef forward(self, input):\n    return torch.embedding(self.weight, input, " +
                             std::to_string(paddingIdx) + ", False, False)\n";
  return Make("__torch__.torch.nn.modules.sparse.Embedding", source, [&](torch::jit::Module& m) {
    m.register_parameter("weight", weights_.Take(prefix + ".weight", {rows, dim}), false);
  });
}

torch::jit::Module ModelBuilder::Dropout(double p) {
  // nn.Dropout.forward: F.dropout(input, p, self.training) -> aten::dropout.
  const std::string source =
      "\ndef forward(self, input):\n    return torch.dropout(input, " + FloatLiteral(p) + ", self.training)\n";
  return Make("__torch__.torch.nn.modules.dropout.Dropout", source, [](torch::jit::Module&) {});
}

torch::jit::Module ModelBuilder::ModuleList(const std::function<void(torch::jit::Module&)>& fill) {
  return Make("__torch__.torch.nn.modules.container.ModuleList", "", fill);
}

std::string Activation(const std::string& name, const std::string& x) {
  // transformers/activations.py ACT2FN.
  if (name == "gelu") return "torch.gelu(" + x + ")";  // GELUActivation: nn.functional.gelu
  if (name == "gelu_pytorch_tanh") return "torch.gelu(" + x + ", approximate='tanh')";  // PytorchGELUTanh
  if (name == "gelu_new") {
    // NewGELUActivation: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))).
    return "0.5 * " + x + " * (1.0 + torch.tanh(" + FloatLiteral(std::sqrt(2.0 / M_PI)) + " * (" + x +
           " + 0.044715 * torch.pow(" + x + ", 3.0))))";
  }
  if (name == "relu") return "torch.relu(" + x + ")";
  if (name == "silu") return "torch.silu(" + x + ")";  // SiLUActivation: nn.functional.silu
  throw std::runtime_error("unknown activation '" + name + "'");
}

}  // namespace torch_bert
