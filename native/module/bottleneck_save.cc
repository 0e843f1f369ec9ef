#include "module/bottleneck_save.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/torch.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "graph/bottleneck_rewrite.h"
#include "module/bottleneck_state.h"

namespace torch_bert {

namespace {

using torch::jit::Value;

std::vector<std::string> Components(const std::string& path) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= path.size() && !path.empty()) {
    size_t dot = path.find('.', start);
    if (dot == std::string::npos) dot = path.size();
    out.push_back(path.substr(start, dot - start));
    start = dot + 1;
  }
  return out;
}

torch::jit::Module Submodule(const torch::jit::Module& root, const std::string& path) {
  torch::jit::Module m = root;
  for (const std::string& name : Components(path)) m = m.attr(name).toModule();
  return m;
}

// A module class of torch-bert's own in the model's compilation unit, with a `training` flag.
c10::ClassTypePtr ModuleType(const std::shared_ptr<torch::jit::CompilationUnit>& cu, const std::string& name) {
  c10::QualifiedName qualified("__torch__.torch_bert." + name);
  if (cu->get_class(qualified)) qualified = cu->mangle(qualified);
  auto type = c10::ClassType::create(qualified, cu, /*is_module=*/true);
  cu->register_type(type);
  type->addAttribute("training", c10::BoolType::get());
  return type;
}

torch::jit::Module NewModule(const std::shared_ptr<torch::jit::CompilationUnit>& cu, const c10::ClassTypePtr& type,
                             bool training) {
  torch::jit::Module m(c10::ivalue::Object::create(c10::StrongTypePtr(cu, type), type->numAttributes()));
  m.setattr("training", training);
  return m;
}

// A rewritten method waiting to replace the original (all are built before any is replaced, so
// that every rewrite reads the original graphs).
struct Replacement {
  torch::jit::Module module;
  std::string name;
  c10::QualifiedName qualified;
  c10::FunctionSchema schema;
  std::shared_ptr<torch::jit::Graph> graph;
};

// The adapter inputs of `graph` (after the method's `methodInputs`, self included) become
// reads of `<relative path>.adapter.{down,up}.{weight,bias}` from self.
void InputsToAttributes(torch::jit::Graph& graph, size_t methodInputs, const std::vector<std::string>& relative) {
  torch::jit::WithInsertPoint start(graph.block()->nodes().front());
  Value* self = graph.inputs()[0];
  for (size_t k = 0; k < relative.size(); ++k) {
    Value* sublayer = self;
    for (const std::string& name : Components(relative[k])) sublayer = graph.insertGetAttr(sublayer, name);
    Value* adapter = graph.insertGetAttr(sublayer, "adapter");
    Value* down = graph.insertGetAttr(adapter, "down");
    Value* up = graph.insertGetAttr(adapter, "up");
    Value* tensors[] = {graph.insertGetAttr(down, "weight"), graph.insertGetAttr(down, "bias"),
                        graph.insertGetAttr(up, "weight"), graph.insertGetAttr(up, "bias")};
    for (size_t j = 0; j < 4; ++j) graph.inputs()[methodInputs + 4 * k + j]->replaceAllUsesWith(tensors[j]);
  }
  for (size_t i = graph.inputs().size(); i-- > methodInputs;) graph.eraseInput(i);
  graph.lint();
}

// The adapters' module classes, one for the linears and one for the adapter, shared by all of
// them: a sub-layer class shared by several layers takes one attribute type.
struct AdapterTypes {
  c10::ClassTypePtr linear;
  c10::ClassTypePtr adapter;
};

AdapterTypes NewAdapterTypes(const std::shared_ptr<torch::jit::CompilationUnit>& cu) {
  c10::ClassTypePtr linearType = ModuleType(cu, "AdapterLinear");
  linearType->addAttribute("weight", c10::TensorType::get(), /*is_parameter=*/true);
  linearType->addAttribute("bias", c10::TensorType::get(), /*is_parameter=*/true);
  c10::ClassTypePtr adapterType = ModuleType(cu, "BottleneckAdapter");
  adapterType->addAttribute("down", linearType);
  adapterType->addAttribute("up", linearType);
  return AdapterTypes{linearType, adapterType};
}

// The adapter module of `m` (`down` and `up`, holding copies of its tensors), in the training
// mode of the sub-layer it goes into.
torch::jit::Module NewAdapter(const std::shared_ptr<torch::jit::CompilationUnit>& cu, const AdapterTypes& types,
                              const BottleneckModule& m, bool training) {
  auto linear = [&](const torch::Tensor& weight, const torch::Tensor& bias) {
    torch::jit::Module out = NewModule(cu, types.linear, training);
    out.setattr("weight", weight.detach().clone());
    out.setattr("bias", bias.detach().clone());
    return out;
  };
  torch::jit::Module adapter = NewModule(cu, types.adapter, training);
  adapter.setattr("down", linear(m.downWeight, m.downBias)._ivalue());
  adapter.setattr("up", linear(m.upWeight, m.upBias)._ivalue());
  return adapter;
}

// Stage 1: every adapter registered as the `adapter` submodule of its sub-layer in `copy`.
void AttachAdapters(const torch::jit::Module& copy, const BottleneckState& adapters) {
  std::shared_ptr<torch::jit::CompilationUnit> cu = copy._ivalue()->compilation_unit();
  const AdapterTypes types = NewAdapterTypes(cu);
  for (const BottleneckModule& m : adapters.modules) {
    torch::jit::Module sublayer = Submodule(copy, m.path);
    torch::jit::Module adapter = NewAdapter(cu, types, m, sublayer.is_training());
    // (A sub-layer class shared by several layers has it from the first of them.)
    if (sublayer.type()->hasAttribute("adapter") && sublayer.type()->getAttribute("adapter") != types.adapter) {
      throw std::runtime_error("cannot save the adapters: module '" + m.path + "' already has an attribute 'adapter'");
    }
    sublayer.register_module("adapter", adapter);
  }
}

// The adapted sub-layers inside the module at `prefix` ("" for the root, else ending in '.'),
// in RewriteForBottleneck's terms: their output projections, the projections' paths from the
// root, and the sub-layers' paths from that module.
struct AdaptersWithin {
  std::vector<torch::jit::Module> dense;
  std::vector<std::string> paths;
  std::vector<std::string> relative;
};

AdaptersWithin AdaptersUnder(const torch::jit::Module& copy, const BottleneckState& adapters,
                             const std::string& prefix) {
  AdaptersWithin out;
  for (const BottleneckModule& m : adapters.modules) {
    if (m.path.compare(0, prefix.size(), prefix) != 0) continue;
    out.dense.push_back(Submodule(copy, m.path + "." + m.projection));
    out.paths.push_back(m.path + "." + m.projection);
    out.relative.push_back(m.path.substr(prefix.size()));
  }
  return out;
}

// The rewritten methods of `module` (the root when `isRoot`) that reach one of `within`'s
// adapters, their adapter inputs turned into reads of the attached adapters, added to `out`.
void RewriteMethods(const torch::jit::Module& module, bool isRoot, const AdaptersWithin& within,
                    const std::string& activation, std::vector<Replacement>& out) {
  for (const torch::jit::Method& method : module.get_methods()) {
    BottleneckRewrite rewrite;
    try {
      rewrite = RewriteForBottleneck(module, method, within.dense, within.paths, activation);
    } catch (const std::runtime_error&) {
      // The model's own methods run with the adapters (CallWithBottleneck has rewritten them
      // already); a submodule's method that cannot be followed keeps its graph.
      if (isRoot) throw;
      continue;
    }
    if (rewrite.applied.empty()) continue;
    std::vector<std::string> applied;
    for (size_t i : rewrite.applied) applied.push_back(within.relative[i]);
    const size_t methodInputs = method.function().getSchema().arguments().size();
    InputsToAttributes(*rewrite.graph, methodInputs, applied);
    out.push_back(
        Replacement{module, method.name(), method.function().qualname(), method.function().getSchema(), rewrite.graph});
  }
}

// Stage 2: every method that reaches an adapter, of the copy and of its submodules (so that
// `m.encoder(...)` in Python runs the adapters too), once per class.
std::vector<Replacement> RewrittenMethods(const torch::jit::Module& copy, const BottleneckState& adapters) {
  std::vector<Replacement> replacements;
  std::unordered_set<const c10::ClassType*> seen;
  for (const auto& named : copy.named_modules()) {
    if (!seen.insert(named.value.type().get()).second) continue;
    const std::string prefix = named.name.empty() ? "" : named.name + ".";
    const AdaptersWithin within = AdaptersUnder(copy, adapters, prefix);
    if (within.dense.empty()) continue;
    RewriteMethods(named.value, named.name.empty(), within, adapters.activation, replacements);
  }
  return replacements;
}

// Stage 3: `r`'s graph in place of the method it rewrites.
void Install(const Replacement& r) {
  // In the compilation unit of the method's class: the encoder's is not the classifier's.
  const c10::ClassTypePtr type = r.module.type();
  std::shared_ptr<torch::jit::CompilationUnit> unit = type->compilation_unit();
  const c10::QualifiedName qualified = r.qualified;
  type->unsafeRemoveMethod(r.name);
  unit->unsafeRemoveMethod(qualified);
  torch::jit::Function* function = unit->create_function(qualified, r.graph);
  torch::jit::toGraphFunction(*function).setSchema(r.schema);
  type->addMethod(function);
}

}  // namespace

torch::jit::Module ModuleWithBottleneck(const ModuleState& state) {
  if (!state.bottleneck) throw std::logic_error("ModuleWithBottleneck: the model has no bottleneck adapters");
  const BottleneckState& adapters = *state.bottleneck;
  torch::NoGradGuard noGrad;
  torch::jit::Module copy = state.module.clone();
  AttachAdapters(copy, adapters);
  // All rewritten before any is installed (see Replacement).
  const std::vector<Replacement> replacements = RewrittenMethods(copy, adapters);
  for (const Replacement& r : replacements) Install(r);
  return copy;
}

}  // namespace torch_bert
