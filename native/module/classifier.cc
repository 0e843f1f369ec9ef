#include "module/classifier.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <cmath>
#include <optional>
#include <sstream>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "module/script_module.h"
#include "tensor/tensor.h"

namespace torch_bert {

namespace {

constexpr int64_t kProbeBatch = 2;
constexpr int64_t kProbeSeq = 8;

struct ClassifierSpec {
  int64_t numClasses;
  int64_t headHidden;
  double dropout;
  std::string pooling;
  uint64_t seed;
};

struct EncoderInfo {
  int arity;
  std::string outputKind;  // tensor | tuple | dict
  std::optional<std::string> outputKey;
  int64_t hiddenSize;
  c10::ScalarType dtype;
  c10::Device device;
};

ClassifierSpec ReadSpec(const Napi::Value& value) {
  const std::string fn = "buildClassifier: spec";
  Napi::Object spec = ReadObject(value, fn);
  ClassifierSpec s;
  s.numClasses = ReadInteger(spec.Get("numClasses"), fn + ".numClasses", 1, int64_t{1} << 24);
  s.headHidden = ReadInteger(spec.Get("headHidden"), fn + ".headHidden", 1, int64_t{1} << 20);
  s.dropout = ReadNumber(spec.Get("dropout"), fn + ".dropout");
  if (s.dropout < 0 || s.dropout >= 1) ThrowError(value.Env(), fn + ".dropout must be in [0, 1)");
  s.pooling = ReadString(spec.Get("pooling"), fn + ".pooling");
  if (s.pooling != "cls" && s.pooling != "mean") {
    ThrowError(value.Env(), fn + ".pooling must be 'cls' or 'mean', got '" + s.pooling + "'");
  }
  // Negative seeds wrap to uint64 as in torch.manual_seed.
  s.seed = static_cast<uint64_t>(ReadInteger(spec.Get("seed"), fn + ".seed", -(int64_t{1} << 53), int64_t{1} << 53));
  return s;
}

std::string ShapeOf(const torch::Tensor& t) {
  std::ostringstream os;
  os << "a tensor of shape " << t.sizes();
  return os.str();
}

std::string Describe(const c10::IValue& v) {
  if (v.isTensor()) return ShapeOf(v.toTensor());
  if (v.isTuple()) {
    const auto& elements = v.toTupleRef().elements();
    if (elements.empty()) return "an empty tuple";
    return "a tuple whose first item is " + Describe(elements[0]);
  }
  if (v.isGenericDict()) {
    auto dict = v.toGenericDict();
    if (dict.empty()) return "an empty dict";
    return "a dict whose first item is " + Describe(dict.begin()->value());
  }
  if (v.isList()) return "a list";
  return "a " + v.tagKind();
}

// Runs the encoder once on a small batch to learn what it takes and returns.
EncoderInfo Probe(ModuleState& state) {
  torch::jit::Module& encoder = state.module;
  auto method = encoder.find_method("forward");
  if (!method) throw std::runtime_error("buildClassifier: the encoder has no forward method");
  const auto& schema = method->function().getSchema();
  const size_t arity = schema.arguments().empty() ? 0 : schema.arguments().size() - 1;
  if (arity != 2 && arity != 3) {
    std::ostringstream os;
    os << "buildClassifier: the encoder's forward must take (input_ids, attention_mask) or "
          "(input_ids, attention_mask, token_type_ids); its schema is "
       << schema;
    throw std::runtime_error(os.str());
  }

  EncoderInfo info{static_cast<int>(arity), "", std::nullopt, 0, c10::ScalarType::Float, ModuleDevice(state)};
  auto longs = torch::TensorOptions().dtype(torch::kLong).device(info.device);
  std::vector<c10::IValue> inputs{torch::arange(1, 1 + kProbeBatch * kProbeSeq, longs).view({kProbeBatch, kProbeSeq}),
                                  torch::ones({kProbeBatch, kProbeSeq}, longs)};
  if (arity == 3) inputs.emplace_back(torch::zeros({kProbeBatch, kProbeSeq}, longs));

  c10::IValue output;
  {
    TrainingModeSnapshot restore(encoder);
    for (const auto& m : encoder.modules()) SetTrainingFlag(m, false);
    torch::NoGradGuard noGrad;
    try {
      output = (*method)(std::move(inputs));
    } catch (const c10::Error& e) {
      throw std::runtime_error("buildClassifier: probing the encoder with input_ids of shape [2, 8] failed: " +
                               std::string(e.what_without_backtrace()));
    }
  }

  torch::Tensor hidden;
  if (output.isTensor()) {
    info.outputKind = "tensor";
    hidden = output.toTensor();
  } else if (output.isTuple()) {
    const auto& elements = output.toTupleRef().elements();
    if (!elements.empty() && elements[0].isTensor()) {
      info.outputKind = "tuple";
      hidden = elements[0].toTensor();
    }
  } else if (output.isGenericDict()) {
    auto dict = output.toGenericDict();
    if (!dict.empty() && dict.begin()->key().isString() && dict.begin()->value().isTensor()) {
      info.outputKind = "dict";
      info.outputKey = dict.begin()->key().toStringRef();
      hidden = dict.begin()->value().toTensor();
    }
  }
  if (!hidden.defined() || hidden.dim() != 3 || hidden.size(0) != kProbeBatch || hidden.size(1) != kProbeSeq ||
      !hidden.is_floating_point()) {
    throw std::runtime_error(
        "encoder output must be a [batch, seq, hidden] tensor (or a tuple/dict whose first item is one); got " +
        Describe(output) + " for input_ids of shape [2, 8]");
  }
  info.hiddenSize = hidden.size(2);
  info.dtype = hidden.scalar_type();
  return info;
}

// A TorchScript string literal. Keys come from the encoder's output dict.
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      throw std::runtime_error("buildClassifier: the encoder's output key contains a control character");
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// nn.Linear's initialisation, computed exactly as Python does (kaiming_uniform_ with
// a = sqrt(5) for the weight, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the bias), drawing from
// the default CPU generator in the same order, so a seed gives bit-identical weights.
void InitLinear(torch::Tensor& weight, torch::Tensor& bias) {
  const double fanIn = static_cast<double>(weight.size(1));
  const double a = std::sqrt(5.0);
  const double gain = std::sqrt(2.0 / (1 + a * a));
  const double bound = std::sqrt(3.0) * (gain / std::sqrt(fanIn));
  weight.uniform_(-bound, bound);
  const double biasBound = fanIn > 0 ? 1 / std::sqrt(fanIn) : 0;
  bias.uniform_(-biasBound, biasBound);
}

// The head's parameters are float32 whatever the encoder file holds: they are master weights
// for AdamW, and reduced precision is autocast's job (the `precision` option), not the file's.
torch::Tensor AsParameter(const torch::Tensor& t, const EncoderInfo& info) {
  torch::Tensor p = t.to(info.device, torch::kFloat).detach();
  p.set_requires_grad(true);
  return p;
}

torch::jit::Module MakeModule(const std::string& name, const std::shared_ptr<torch::jit::CompilationUnit>& cu,
                              bool training) {
  torch::jit::Module m(c10::QualifiedName(name), cu, /*shouldMangle=*/true);
  // Every module needs it: ScriptModule.train() and Python's .train() set it recursively.
  m.register_attribute("training", c10::BoolType::get(), training);
  return m;
}

torch::jit::Module MakeLinear(const std::shared_ptr<torch::jit::CompilationUnit>& cu, bool training,
                              const torch::Tensor& weight, const torch::Tensor& bias) {
  torch::jit::Module m = MakeModule("__torch__.TorchBertLinear", cu, training);
  m.register_parameter("weight", weight, /*is_buffer=*/false);
  m.register_parameter("bias", bias, /*is_buffer=*/false);
  // aten::linear is what nn.Linear runs, so results match Python's head bit for bit.
  m.define(R"(
def forward(self, x):
    return torch.linear(x, self.weight, self.bias)
)");
  return m;
}

std::string FeaturesSource(const EncoderInfo& info, const std::string& pooling) {
  std::ostringstream src;
  src << "def features(self, input_ids, attention_mask):\n";
  src << "    out = self.encoder.forward(input_ids, attention_mask"
      << (info.arity == 3 ? ", torch.zeros_like(input_ids)" : "") << ")\n";
  if (info.outputKind == "tensor") {
    src << "    h = out\n";
  } else if (info.outputKind == "tuple") {
    src << "    h = out[0]\n";
  } else {
    src << "    h = out[" << Quote(*info.outputKey) << "]\n";
  }
  if (pooling == "cls") {
    src << "    return h[:, 0]\n";
  } else {
    src << "    m = attention_mask.unsqueeze(-1).to(h.dtype)\n";
    src << "    return (h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)\n";
  }
  return src.str();
}

const char* kHeadSource = R"(
def head_forward(self, x):
    x = self.head.dense.forward(x)
    x = torch.relu(x)
    x = torch.dropout(x, self.dropout_p, self.training)
    x = self.head.out_proj.forward(x)
    return torch.log_softmax(x, -1)

def forward(self, input_ids, attention_mask):
    return self.head_forward(self.features(input_ids, attention_mask))
)";

// The classifier's parameters that its output cannot reach, by name: a forward of the probe batch
// with every parameter requiring a gradient, then autograd.grad with allow_unused, whose
// undefined results are exactly the parameters outside the graph (e.g. the pooler under [CLS]
// pooling, an unused head inside the encoder file). Structural, not numeric: a zero gradient
// still counts as reached. Runs in eval mode (no dropout draws, so no random numbers are used)
// and restores every requires_grad flag.
// Sets requires_grad on every floating parameter for the probe and puts each flag back as it
// was when it goes out of scope, however the probe ends.
class RequiresGradForProbe {
 public:
  explicit RequiresGradForProbe(const std::vector<torch::jit::Named<torch::Tensor>>& named) {
    for (const auto& p : named) {
      saved_.emplace_back(p.value, p.value.requires_grad());
      if (p.value.is_floating_point()) p.value.set_requires_grad(true);
    }
  }
  ~RequiresGradForProbe() {
    for (auto& [tensor, flag] : saved_) tensor.set_requires_grad(flag);
  }
  RequiresGradForProbe(const RequiresGradForProbe&) = delete;
  RequiresGradForProbe& operator=(const RequiresGradForProbe&) = delete;

 private:
  std::vector<std::pair<torch::Tensor, bool>> saved_;
};

std::vector<std::string> UnreachedParameters(torch::jit::Module& classifier, const EncoderInfo& info) {
  std::vector<torch::jit::Named<torch::Tensor>> floating;
  for (const auto& p : classifier.named_parameters(/*recurse=*/true)) {
    if (p.value.is_floating_point()) floating.push_back(p);
  }
  std::vector<torch::Tensor> tensors;
  for (const auto& p : floating) tensors.push_back(p.value);
  std::vector<torch::Tensor> grads;
  {
    RequiresGradForProbe probe(floating);
    c10::AutoGradMode grad(true);
    auto longs = torch::TensorOptions().dtype(torch::kLong).device(info.device);
    std::vector<c10::IValue> inputs{torch::arange(1, 1 + kProbeBatch * kProbeSeq, longs).view({kProbeBatch, kProbeSeq}),
                                    torch::ones({kProbeBatch, kProbeSeq}, longs)};
    torch::Tensor out = classifier.get_method("forward")(std::move(inputs)).toTensor();
    grads = torch::autograd::grad({out.sum()}, tensors, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                  /*create_graph=*/false, /*allow_unused=*/true);
  }
  std::vector<std::string> unreached;
  for (size_t k = 0; k < floating.size(); ++k) {
    if (!grads[k].defined()) unreached.push_back(floating[k].name);
  }
  return unreached;
}

}  // namespace

Napi::Value BuildClassifier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    ModuleStatePtr encoderState = ScriptModule::Get(info[0], "buildClassifier: encoder");
    ClassifierSpec spec = ReadSpec(info[1]);

    std::lock_guard<std::mutex> lock(*encoderState->mutex);
    EncoderInfo encoder = Probe(*encoderState);
    if (encoder.dtype != torch::kFloat) {
      throw std::runtime_error(
          std::string("buildClassifier: the encoder computes in ") + c10::toString(encoder.dtype) +
          "; cast it to float32 first (ScriptModule.to(device, 'float32')): training keeps float32 "
          "weights and gets reduced precision from autocast");
    }
    // The new head and wrapper start in eval mode, not in whatever mode the encoder file was saved
    // in; the encoder's own flags are left as the caller set them. Whoever trains the classifier
    // says so (ScriptModule.train(true) sets every module), as the trainer does.
    const bool training = false;

    torch::Tensor denseW, denseB, outW, outB;
    {
      torch::NoGradGuard noGrad;
      at::manual_seed(spec.seed);
      denseW = torch::empty({spec.headHidden, encoder.hiddenSize});
      denseB = torch::empty({spec.headHidden});
      outW = torch::empty({spec.numClasses, spec.headHidden});
      outB = torch::empty({spec.numClasses});
      InitLinear(denseW, denseB);
      InitLinear(outW, outB);
    }

    auto cu = std::make_shared<torch::jit::CompilationUnit>();
    torch::jit::Module head = MakeModule("__torch__.TorchBertClassifierHead", cu, training);
    head.register_module("dense", MakeLinear(cu, training, AsParameter(denseW, encoder), AsParameter(denseB, encoder)));
    head.register_module("out_proj", MakeLinear(cu, training, AsParameter(outW, encoder), AsParameter(outB, encoder)));

    torch::jit::Module classifier = MakeModule("__torch__.TorchBertClassifier", cu, training);
    // The encoder is shared, not copied: training the classifier trains this encoder.
    classifier.register_module("encoder", encoderState->module);
    classifier.register_module("head", head);
    classifier.register_attribute("pooling", c10::StringType::get(), spec.pooling);
    classifier.register_attribute("num_labels", c10::IntType::get(), spec.numClasses);
    classifier.register_attribute("hidden_size", c10::IntType::get(), encoder.hiddenSize);
    classifier.register_attribute("dropout_p", c10::FloatType::get(), spec.dropout);
    classifier.define(FeaturesSource(encoder, spec.pooling) + kHeadSource);

    std::vector<std::string> unreached = UnreachedParameters(classifier, encoder);

    // Same mutex as the encoder: both handles reach the encoder's parameters.
    auto state = std::make_shared<ModuleState>(classifier, encoderState->mutex, encoder.device);

    Napi::Object encoderInfo = Napi::Object::New(env);
    encoderInfo.Set("arity", Napi::Number::New(env, encoder.arity));
    encoderInfo.Set("outputKind", Napi::String::New(env, encoder.outputKind));
    encoderInfo.Set("outputKey",
                    encoder.outputKey ? Napi::Value(Napi::String::New(env, *encoder.outputKey)) : env.Null());
    encoderInfo.Set("hiddenSize", Napi::Number::New(env, static_cast<double>(encoder.hiddenSize)));

    Napi::Object result = Napi::Object::New(env);
    result.Set("module", ScriptModule::Wrap(env, state, /*accountMemory=*/false));
    result.Set("encoder", encoderInfo);
    Napi::Array unused = Napi::Array::New(env, unreached.size());
    for (size_t i = 0; i < unreached.size(); ++i)
      unused.Set(static_cast<uint32_t>(i), Napi::String::New(env, unreached[i]));
    result.Set("unusedParameters", unused);
    return result;
  });
}

}  // namespace torch_bert
