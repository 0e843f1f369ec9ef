#include "module/classifier.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <cctype>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>

#include "addon/arguments.h"
#include "addon/errors.h"
#include "module/problem_type.h"
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
  // "mlp" (torch-bert's own head), "sequence-classification", "token-classification" or
  // "question-answering" (transformers' heads of `family`), or "prompt".
  std::string head;
  std::string family;  // bert | roberta | distilbert; only for transformers' heads
  double initializerRange;
  // "prompt" (LM-BFF): the checkpoint's MLM head, the tokenizer's mask id and the label words' ids.
  ModuleStatePtr mlmHead;
  int64_t maskTokenId = -1;
  std::vector<int64_t> labelTokenIds;
  // What forward returns and which loss trains it (module/problem_type.h).
  ProblemType problemType = ProblemType::kSingleLabel;
};

struct EncoderInfo {
  int arity;
  std::string outputKind;  // tensor | tuple | dict
  std::optional<std::string> outputKey;
  int64_t hiddenSize;
  c10::ScalarType dtype;
  c10::Device device;
  // Where the pooler output is (BertModel's second output), when the encoder returns one.
  std::optional<std::string> poolerAccess;
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
  s.head = !IsMissing(spec.Get("head")) ? ReadString(spec.Get("head"), fn + ".head") : "mlp";
  if (!IsMissing(spec.Get("problemType"))) {
    const std::string what = fn + ".problemType";
    try {
      s.problemType = ParseProblemType(ReadString(spec.Get("problemType"), what), what);
    } catch (const std::runtime_error& e) {
      ThrowError(value.Env(), e.what());
    }
  }
  s.initializerRange = 0.02;
  if (s.head == "sequence-classification" || s.head == "token-classification" || s.head == "question-answering") {
    s.family = ReadString(spec.Get("family"), fn + ".family");
    if (s.family != "bert" && s.family != "roberta" && s.family != "distilbert") {
      ThrowError(value.Env(), fn + ".family must be 'bert', 'roberta' or 'distilbert', got '" + s.family + "'");
    }
    if (!IsMissing(spec.Get("initializerRange"))) {
      s.initializerRange = ReadNumber(spec.Get("initializerRange"), fn + ".initializerRange");
      if (!(s.initializerRange > 0)) ThrowError(value.Env(), fn + ".initializerRange must be > 0");
    }
    // transformers' head pools its own way (the pooler, or the first token), or not at all (a row
    // per token).
    if (s.pooling != "cls") ThrowError(value.Env(), fn + ".pooling must be 'cls' with head '" + s.head + "'");
    // A word's class is one of several: a softmax over them (BertForTokenClassification's
    // cross-entropy).
    if ((s.head == "token-classification" || s.head == "question-answering") &&
        s.problemType != ProblemType::kSingleLabel) {
      ThrowError(value.Env(), fn + ".problemType must be 'single_label_classification' with head '" + s.head + "'");
    }
    // An answer's start and its end: the two logits of each token (qa_outputs).
    if (s.head == "question-answering" && s.numClasses != 2) {
      ThrowError(value.Env(), fn + ".numClasses must be 2 with head 'question-answering' (the start and end logits)");
    }
  } else if (s.head == "prompt") {
    // LM-BFF's head scores one label word of several: a softmax over them.
    if (s.problemType != ProblemType::kSingleLabel) {
      ThrowError(value.Env(), fn + ".problemType must be 'single_label_classification' with head 'prompt'");
    }
    s.mlmHead = ScriptModule::Get(spec.Get("mlmHead"), fn + ".mlmHead");
    s.maskTokenId = ReadInteger(spec.Get("maskTokenId"), fn + ".maskTokenId", 0, (int64_t{1} << 31) - 1);
    Napi::Array ids = ReadArray(spec.Get("labelTokenIds"), fn + ".labelTokenIds");
    for (uint32_t i = 0; i < ids.Length(); ++i) {
      s.labelTokenIds.push_back(
          ReadInteger(ids.Get(i), fn + ".labelTokenIds[" + std::to_string(i) + "]", 0, (int64_t{1} << 31) - 1));
    }
    if (static_cast<int64_t>(s.labelTokenIds.size()) != s.numClasses) {
      ThrowError(value.Env(), fn + ".labelTokenIds must hold numClasses ids (one label word per class)");
    }
  } else if (s.head != "mlp") {
    ThrowError(value.Env(),
               fn +
                   ".head must be 'mlp', 'sequence-classification', 'token-classification', 'question-answering' or "
                   "'prompt', got '" +
                   s.head + "'");
  }
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

// The number of tensors the encoder's forward takes: 2 (input_ids, attention_mask) or 3 (and token_type_ids).
int ForwardArity(const torch::jit::Method& method) {
  const auto& schema = method.function().getSchema();
  const size_t arity = schema.arguments().empty() ? 0 : schema.arguments().size() - 1;
  if (arity != 2 && arity != 3) {
    std::ostringstream os;
    os << "buildClassifier: the encoder's forward must take (input_ids, attention_mask) or "
          "(input_ids, attention_mask, token_type_ids); its schema is "
       << schema;
    throw std::runtime_error(os.str());
  }
  return static_cast<int>(arity);
}

// The encoder's output on a [2, 8] batch, in eval mode without autograd (its flags restored after).
c10::IValue ProbeOutput(torch::jit::Module& encoder, torch::jit::Method& method, int arity, const c10::Device& device) {
  auto longs = torch::TensorOptions().dtype(torch::kLong).device(device);
  std::vector<c10::IValue> inputs{torch::arange(1, 1 + kProbeBatch * kProbeSeq, longs).view({kProbeBatch, kProbeSeq}),
                                  torch::ones({kProbeBatch, kProbeSeq}, longs)};
  if (arity == 3) inputs.emplace_back(torch::zeros({kProbeBatch, kProbeSeq}, longs));
  TrainingModeSnapshot restore(encoder);
  for (const auto& m : encoder.modules()) SetTrainingFlag(m, false);
  torch::NoGradGuard noGrad;
  try {
    return method(std::move(inputs));
  } catch (const c10::Error& e) {
    throw std::runtime_error("buildClassifier: probing the encoder with input_ids of shape [2, 8] failed: " +
                             std::string(e.what_without_backtrace()));
  }
}

// The last hidden state in a probe's output (a tensor, or a tuple's or a dict's first item),
// noting in `info` the output's kind and where a pooler output is; undefined when there is none.
torch::Tensor HiddenStateOf(const c10::IValue& output, EncoderInfo& info) {
  auto isPooled = [](const c10::IValue& v) {
    return v.isTensor() && v.toTensor().dim() == 2 && v.toTensor().size(0) == kProbeBatch;
  };
  if (output.isTensor()) {
    info.outputKind = "tensor";
    return output.toTensor();
  }
  if (output.isTuple()) {
    const auto& elements = output.toTupleRef().elements();
    if (elements.empty() || !elements[0].isTensor()) return {};
    info.outputKind = "tuple";
    if (elements.size() >= 2 && isPooled(elements[1])) info.poolerAccess = "out[1]";
    return elements[0].toTensor();
  }
  if (output.isGenericDict()) {
    auto dict = output.toGenericDict();
    if (dict.empty() || !dict.begin()->key().isString() || !dict.begin()->value().isTensor()) return {};
    info.outputKind = "dict";
    info.outputKey = dict.begin()->key().toStringRef();
    auto pooled = dict.find(c10::IValue(std::string("pooler_output")));
    if (pooled != dict.end() && isPooled(pooled->value())) info.poolerAccess = "out[\"pooler_output\"]";
    return dict.begin()->value().toTensor();
  }
  return {};
}

// Runs the encoder once on a small batch to learn what it takes and returns.
EncoderInfo Probe(ModuleState& state) {
  torch::jit::Module& encoder = state.module;
  auto method = encoder.find_method("forward");
  if (!method) throw std::runtime_error("buildClassifier: the encoder has no forward method");
  const int arity = ForwardArity(*method);
  EncoderInfo info{arity, "", std::nullopt, 0, c10::ScalarType::Float, ModuleDevice(state), std::nullopt};
  const c10::IValue output = ProbeOutput(encoder, *method, arity, info.device);
  const torch::Tensor hidden = HiddenStateOf(output, info);
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

// `features`, or with `tokenTypes` `features_token_types`: the same pooling of the encoder's
// output, given the token type ids of text pairs instead of zeros (one text: all segment 0).
// Two methods, not one with an Optional argument: token pruning (graph/token_pruning.h) cannot
// follow the branch on None that an Optional needs.
std::string FeaturesSource(const EncoderInfo& info, const ClassifierSpec& spec, bool tokenTypes) {
  const std::string& pooling = spec.pooling;
  std::ostringstream src;
  if (tokenTypes) {
    src << "\ndef features_token_types(self, input_ids, attention_mask, token_type_ids):\n";
    src << "    out = self.encoder.forward(input_ids, attention_mask, token_type_ids)\n";
  } else {
    src << "\ndef features(self, input_ids, attention_mask):\n";
    src << "    out = self.encoder.forward(input_ids, attention_mask"
        << (info.arity == 3 ? ", torch.zeros_like(input_ids)" : "") << ")\n";
  }
  if (info.outputKind == "tensor") {
    src << "    h = out\n";
  } else if (info.outputKind == "tuple") {
    src << "    h = out[0]\n";
  } else {
    src << "    h = out[" << Quote(*info.outputKey) << "]\n";
  }
  if (spec.head == "token-classification" || spec.head == "question-answering") {
    // Every token's hidden state: forward picks the rows it scores.
    src << "    return h\n";
  } else if (spec.head == "prompt") {
    // The mask's row, found in the graph (the first position where input_ids is the mask id), so
    // that classifier.pt needs no position input. The gather is no `select(h, 1, 0)`: token
    // pruning (graph/token_pruning.h) finds nothing to narrow, and every row is computed.
    src << "    found = torch.eq(input_ids, self.mask_token_id).float()\n";
    src << "    pos = torch.argmax(found, 1)\n";
    src << "    index = pos.view(-1, 1, 1).expand(-1, 1, h.size(2))\n";
    src << "    return torch.gather(h, 1, index).squeeze(1)\n";
  } else if (spec.head == "sequence-classification" && spec.family == "bert") {
    // BertForSequenceClassification classifies the pooler output (tanh(dense(h[:, 0]))), which
    // belongs to the encoder: so `frozen` keeps the pooler frozen, as it keeps the encoder.
    src << "    return " << *info.poolerAccess << "\n";
  } else if (pooling == "cls") {
    src << "    return h[:, 0]\n";
  } else {
    src << "    m = attention_mask.unsqueeze(-1).to(h.dtype)\n";
    src << "    return (h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)\n";
  }
  return src.str();
}

const char* kForwardSource = R"(
def forward(self, input_ids, attention_mask):
    return self.head_forward(self.features(input_ids, attention_mask))
)";

// A text pair's forward (the encoder's token_type_ids given), beside `forward` for the reason
// FeaturesSource gives.
const char* kTokenTypesForwardSource = R"(
def forward_token_types(self, input_ids, attention_mask, token_type_ids):
    return self.head_forward(self.features_token_types(input_ids, attention_mask, token_type_ids))
)";

// A token classifier's forward: the head on the rows of `positions` (flat indices into the
// [B, T] batch: the labelled words' first tokens, train/batch.h) only, as the MLM model runs its
// head on the masked rows; transformers' BertForTokenClassification runs it on every token and
// its loss ignores the others (label -100), the same loss and gradients.
//
// `forward_all_tokens` is the whole BertForTokenClassification, for a TorchScript file of the
// classifier (torch.jit.load, C++ libtorch: no positions to make): every token's
// log-probabilities over the tags, [B, T, tags].
const char* kTokenForwardSource = R"(
def forward(self, input_ids, attention_mask, positions):
    h = self.features(input_ids, attention_mask)
    return self.head_forward(h.reshape(-1, h.size(-1)).index_select(0, positions))

def forward_all_tokens(self, input_ids, attention_mask):
    return self.head_forward(self.features(input_ids, attention_mask))
)";

// A question-answering model (BertForQuestionAnswering, RobertaForQuestionAnswering,
// DistilBertForQuestionAnswering): `span_logits` is transformers' model, every token's start and
// end logits [B, T, 2]. `forward` gives the rows the loss reads: the [2B, T] start and end rows
// (start of text 0, end of text 0, start of text 1, ...) at `positions` (all 2B of them in
// training, train/batch.h), log-softmax over every position of the padded row as transformers'
// CrossEntropyLoss takes it. Their nll against the labels (s0, e0, s1, e1, ...) is the mean over
// 2B rows, which is transformers' (start_loss + end_loss) / 2.
std::string QaForwardSource(bool tokenTypes) {
  const std::string suffix = tokenTypes ? "_token_types" : "";
  const std::string params = tokenTypes ? "input_ids, attention_mask, token_type_ids" : "input_ids, attention_mask";
  std::ostringstream src;
  src << "\ndef span_logits" << suffix << "(self, " << params << "):\n";
  src << "    return self.head_forward(self.features" << suffix << "(" << params << "))\n";
  src << "\ndef forward" << suffix << "(self, " << params << ", positions):\n";
  src << "    x = self.span_logits" << suffix << "(" << params << ")\n";
  src << "    rows = x.transpose(1, 2).reshape(-1, x.size(1))\n";
  src << "    return torch.log_softmax(rows.index_select(0, positions), -1)\n";
  return src.str();
}

// The classifier's methods: features, head_forward and forward; and where the encoder takes
// token_type_ids, their text-pair variants (a prompt's pairs are in its template, one segment;
// a token classifier reads single texts; a question and its context are a pair).
std::string ClassifierSource(const EncoderInfo& encoder, const ClassifierSpec& spec, const std::string& headSource) {
  if (spec.head == "token-classification")
    return FeaturesSource(encoder, spec, false) + headSource + kTokenForwardSource;
  if (spec.head == "question-answering") {
    std::string source = FeaturesSource(encoder, spec, false) + headSource + QaForwardSource(false);
    if (encoder.arity == 3) source += FeaturesSource(encoder, spec, true) + QaForwardSource(true);
    return source;
  }
  std::string source = FeaturesSource(encoder, spec, false) + headSource + kForwardSource;
  if (encoder.arity == 3 && spec.head != "prompt")
    source += FeaturesSource(encoder, spec, true) + kTokenTypesForwardSource;
  return source;
}

// The last line of a head's head_forward, on its logits x: log-probabilities for single-label
// classification, else the logits themselves (multi-label: the loss applies the sigmoid;
// regression: they are the values), as transformers' heads return them.
std::string OutputSource(ProblemType problem) {
  return problem == ProblemType::kSingleLabel ? "    return torch.log_softmax(x, -1)\n" : "    return x\n";
}

// transformers' question-answering heads: `qa_outputs` on each token's last hidden state, its
// two outputs the start and end logits, returned as logits. DistilBertForQuestionAnswering
// applies dropout (qa_dropout) first; BERT's and RoBERTa's none (their dropout_p is 0).
const char* kQaHeadSource = R"(
def head_forward(self, x):
    x = torch.dropout(x, self.dropout_p, self.training)
    return self.head.qa_outputs.forward(x)
)";

const char* kMlpHeadSource = R"(
def head_forward(self, x):
    x = self.head.dense.forward(x)
    x = torch.relu(x)
    x = torch.dropout(x, self.dropout_p, self.training)
    x = self.head.out_proj.forward(x)
)";

// transformers' token-classification heads (BertForTokenClassification,
// RobertaForTokenClassification, DistilBertForTokenClassification: the same for the three), on
// each token's last hidden state.
const char* kTokenHeadSource = R"(
def head_forward(self, x):
    x = torch.dropout(x, self.dropout_p, self.training)
    x = self.head.classifier.forward(x)
)";

// transformers' sequence-classification heads, in their order of operations and with their module
// names (BertForSequenceClassification, RobertaClassificationHead,
// DistilBertForSequenceClassification), from the features: the pooler output for BERT, the first
// token's hidden state for RoBERTa and DistilBERT. transformers returns logits; OutputSource
// ends each head with the classifier's output (module/problem_type.h).
const char* kBertHeadSource = R"(
def head_forward(self, x):
    x = torch.dropout(x, self.dropout_p, self.training)
    x = self.head.classifier.forward(x)
)";

const char* kRobertaHeadSource = R"(
def head_forward(self, x):
    x = torch.dropout(x, self.dropout_p, self.training)
    x = self.head.dense.forward(x)
    x = torch.tanh(x)
    x = torch.dropout(x, self.dropout_p, self.training)
    x = self.head.out_proj.forward(x)
)";

const char* kDistilBertHeadSource = R"(
def head_forward(self, x):
    x = self.head.pre_classifier.forward(x)
    x = torch.relu(x)
    x = torch.dropout(x, self.dropout_p, self.training)
    x = self.head.classifier.forward(x)
)";

// LM-BFF's head (Gao et al. 2021) on the mask row: the MLM head's transform, then its decoder
// restricted to the label words' rows (weight and bias), log-softmax over those words alone.
// The transform's modules are the MLM head's own (shared, as the encoder is), so `frozen` trains
// exactly them. The decoder weight stays the encoder's word embedding tensor when the checkpoint
// ties them (read in the graph, so `full` trains the label words' embeddings as LM-BFF does); an
// untied decoder's label rows become `head.label_decoder.weight`, and the bias's label rows
// `head.label_decoder.bias` (LM-BFF trains the whole MLM head, bias included). Which
// technique trains them is lib/training/trainable.ts's decision, as for every parameter.
struct PromptHead {
  std::string transformSource;  // the body of head_forward up to the decoder, on x
  std::vector<std::pair<std::string, torch::jit::Module>> modules;
  torch::Tensor decoderWeight;
  torch::Tensor decoderBias;
};

bool HasModule(const torch::jit::Module& m, const std::string& name) {
  return m.hasattr(name) && m.attr(name).isModule();
}

PromptHead ReadMlmHead(const torch::jit::Module& mlm) {
  PromptHead p;
  if (HasModule(mlm, "predictions")) {
    // BertOnlyMLMHead: predictions.transform (dense, activation, LayerNorm), predictions.decoder, predictions.bias.
    torch::jit::Module predictions = mlm.attr("predictions").toModule();
    p.modules.emplace_back("transform", predictions.attr("transform").toModule());
    p.transformSource = "    x = self.head.transform.forward(x)\n";
    p.decoderWeight = predictions.attr("decoder").toModule().attr("weight").toTensor();
    p.decoderBias = predictions.attr("bias").toTensor();
  } else if (HasModule(mlm, "dense") && HasModule(mlm, "layer_norm") && HasModule(mlm, "decoder")) {
    // RobertaLMHead: dense, erf GELU, layer_norm, decoder with the head's bias.
    p.modules.emplace_back("dense", mlm.attr("dense").toModule());
    p.modules.emplace_back("layer_norm", mlm.attr("layer_norm").toModule());
    p.transformSource =
        "    x = self.head.dense.forward(x)\n    x = torch.gelu(x)\n    x = self.head.layer_norm.forward(x)\n";
    p.decoderWeight = mlm.attr("decoder").toModule().attr("weight").toTensor();
    p.decoderBias = mlm.attr("bias").toTensor();
  } else if (HasModule(mlm, "vocab_transform") && HasModule(mlm, "activation") && HasModule(mlm, "vocab_layer_norm") &&
             HasModule(mlm, "vocab_projector")) {
    // DistilBertForMaskedLM's head: vocab_transform, activation (the config's), vocab_layer_norm,
    // vocab_projector (a Linear with its own bias; its weight tied to the word embeddings).
    p.modules.emplace_back("vocab_transform", mlm.attr("vocab_transform").toModule());
    p.modules.emplace_back("activation", mlm.attr("activation").toModule());
    p.modules.emplace_back("vocab_layer_norm", mlm.attr("vocab_layer_norm").toModule());
    p.transformSource =
        "    x = self.head.vocab_transform.forward(x)\n    x = self.head.activation.forward(x)\n"
        "    x = self.head.vocab_layer_norm.forward(x)\n";
    torch::jit::Module projector = mlm.attr("vocab_projector").toModule();
    p.decoderWeight = projector.attr("weight").toTensor();
    p.decoderBias = projector.attr("bias").toTensor();
  } else {
    throw std::runtime_error(
        "buildClassifier: head 'prompt' takes a BERT (BertOnlyMLMHead), RoBERTa (RobertaLMHead) or DistilBERT "
        "(vocab_transform, activation, vocab_layer_norm, vocab_projector) MLM head; this mlmHead is none of them");
  }
  return p;
}

// `self.encoder.<name>` for the encoder parameter that is `weight` itself, when its name is a
// TorchScript attribute path; empty otherwise.
std::string TiedEncoderPath(const torch::jit::Module& encoder, const torch::Tensor& weight) {
  for (const auto& p : encoder.named_parameters(/*recurse=*/true)) {
    if (!p.value.is_same(weight)) continue;
    std::string path = "self.encoder";
    std::string part;
    std::istringstream parts(p.name);
    while (std::getline(parts, part, '.')) {
      if (part.empty() || std::isdigit(static_cast<unsigned char>(part[0]))) return "";
      path += "." + part;
    }
    return path;
  }
  return "";
}

std::string PromptHeadSource(const PromptHead& p, const std::string& weightPath) {
  std::ostringstream src;
  src << "\ndef head_forward(self, x):\n" << p.transformSource;
  if (weightPath.empty()) {
    src << "    w = self.head.label_decoder.weight\n";
  } else {
    src << "    w = torch.index_select(" << weightPath << ", 0, self.label_token_ids)\n";
  }
  src << "    x = torch.linear(x, w, self.head.label_decoder.bias)\n";
  src << OutputSource(ProblemType::kSingleLabel);
  return src.str();
}

// One Linear of a head: its module name and [out, in].
struct HeadLinear {
  std::string name;
  int64_t out;
  int64_t in;
};

std::vector<HeadLinear> HeadLayout(const ClassifierSpec& spec, int64_t hidden) {
  if (spec.head == "mlp") return {{"dense", spec.headHidden, hidden}, {"out_proj", spec.numClasses, spec.headHidden}};
  if (spec.head == "question-answering") return {{"qa_outputs", 2, hidden}};
  if (spec.head == "token-classification" || spec.family == "bert") return {{"classifier", spec.numClasses, hidden}};
  if (spec.family == "roberta") return {{"dense", hidden, hidden}, {"out_proj", spec.numClasses, hidden}};
  return {{"pre_classifier", hidden, hidden}, {"classifier", spec.numClasses, hidden}};
}

std::string HeadSource(const ClassifierSpec& spec) {
  if (spec.head == "question-answering") return kQaHeadSource;
  const char* body = spec.head == "mlp"                    ? kMlpHeadSource
                     : spec.head == "token-classification" ? kTokenHeadSource
                     : spec.family == "bert"               ? kBertHeadSource
                     : spec.family == "roberta"            ? kRobertaHeadSource
                                                           : kDistilBertHeadSource;
  return body + OutputSource(spec.problemType);
}

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
    // A token classifier's forward classifies the rows it is given: every one; a
    // question-answering model's scores every start and end row.
    const std::string& kind = classifier.attr("head_kind").toStringRef();
    if (kind == "token-classification") inputs.emplace_back(torch::arange(kProbeBatch * kProbeSeq, longs));
    if (kind == "question-answering") inputs.emplace_back(torch::arange(2 * kProbeBatch, longs));
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

// The encoder must compute in float32, and BERT's sequence-classification head needs its pooler output.
void CheckEncoderForHead(const EncoderInfo& encoder, const ClassifierSpec& spec) {
  if (encoder.dtype != torch::kFloat) {
    throw std::runtime_error(std::string("buildClassifier: the encoder computes in ") + c10::toString(encoder.dtype) +
                             "; cast it to float32 first (ScriptModule.to(device, 'float32')): training keeps float32 "
                             "weights and gets reduced precision from autocast");
  }
  if (spec.head == "sequence-classification" && spec.family == "bert" && !encoder.poolerAccess) {
    throw std::runtime_error(
        "buildClassifier: head 'sequence-classification' of BERT (BertForSequenceClassification) classifies the "
        "pooler output, but this encoder returns none (its forward must return (last_hidden_state, "
        "pooler_output), as BertModel with its pooler does); got " +
        std::string(encoder.outputKind == "tensor" ? "only the last hidden state"
                                                   : "no [batch, hidden] pooler output"));
  }
}

// The head's Linear layers, initialised from the seed: transformers' _init_weights for its own
// heads (sequence and token classification: normal(0, initializer_range), zero bias), nn.Linear's
// default for the MLP head.
std::vector<std::pair<torch::Tensor, torch::Tensor>> InitHeadWeights(const std::vector<HeadLinear>& layout,
                                                                     const ClassifierSpec& spec) {
  torch::NoGradGuard noGrad;
  at::manual_seed(spec.seed);
  std::vector<std::pair<torch::Tensor, torch::Tensor>> weights;
  for (const HeadLinear& l : layout) {
    torch::Tensor w = torch::empty({l.out, l.in});
    torch::Tensor b = torch::empty({l.out});
    if (spec.head != "mlp") {
      w.normal_(0, spec.initializerRange);
      b.zero_();
    } else {
      InitLinear(w, b);
    }
    weights.emplace_back(w, b);
  }
  return weights;
}

// The prompt head: the MLM head's transform registered under `head`, the label words' rows of
// its decoder as `head.label_decoder` (the weight only where it is not the encoder's tied word
// embeddings) and the label ids as a buffer; returns the head's TorchScript source.
std::string AttachPromptHead(torch::jit::Module& classifier, torch::jit::Module& head,
                             const std::shared_ptr<torch::jit::CompilationUnit>& cu, const ModuleState& encoderState,
                             const EncoderInfo& encoder, const ClassifierSpec& spec, bool training) {
  PromptHead prompt = ReadMlmHead(spec.mlmHead->module);
  const int64_t vocab = prompt.decoderWeight.size(0);
  if (prompt.decoderWeight.dim() != 2 || prompt.decoderWeight.size(1) != encoder.hiddenSize ||
      prompt.decoderBias.dim() != 1 || prompt.decoderBias.size(0) != vocab) {
    throw std::runtime_error(
        "buildClassifier: the MLM head's decoder does not map the encoder's hidden size to a vocabulary");
  }
  for (int64_t id : spec.labelTokenIds) {
    if (id >= vocab) {
      throw std::runtime_error("buildClassifier: label token id " + std::to_string(id) +
                               " is outside the MLM head's vocabulary of " + std::to_string(vocab));
    }
  }
  for (auto& [name, module] : prompt.modules) head.register_module(name, module);
  torch::Tensor ids = torch::tensor(spec.labelTokenIds, torch::kLong).to(encoder.device);
  torch::NoGradGuard noGrad;
  classifier.register_buffer("label_token_ids", ids);
  // Copies of the label words' rows (AsParameter detaches): training them leaves the MLM
  // head's full-vocabulary tensors as the checkpoint has them.
  torch::jit::Module decoder = MakeModule("__torch__.TorchBertLabelDecoder", cu, training);
  decoder.register_parameter("bias", AsParameter(prompt.decoderBias.index_select(0, ids), encoder),
                             /*is_buffer=*/false);
  const std::string weightPath = TiedEncoderPath(encoderState.module, prompt.decoderWeight);
  if (weightPath.empty()) {
    decoder.register_parameter("weight", AsParameter(prompt.decoderWeight.index_select(0, ids), encoder),
                               /*is_buffer=*/false);
  }
  head.register_module("label_decoder", decoder);
  classifier.register_attribute("mask_token_id", c10::IntType::get(), spec.maskTokenId);
  return PromptHeadSource(prompt, weightPath);
}

// buildClassifier's result: { module, encoder: { arity, outputKind, outputKey, hiddenSize }, unusedParameters }.
Napi::Object BuildResult(Napi::Env env, const ModuleStatePtr& state, const EncoderInfo& encoder,
                         const std::vector<std::string>& unreached) {
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
}

}  // namespace

Napi::Value BuildClassifier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    ModuleStatePtr encoderState = ScriptModule::Get(info[0], "buildClassifier: encoder");
    ClassifierSpec spec = ReadSpec(info[1]);

    std::lock_guard<std::mutex> lock(*encoderState->mutex);
    // The MLM head of buildEncoder shares the encoder's mutex; another one is held as well.
    std::unique_lock<std::mutex> headLock;
    if (spec.mlmHead && spec.mlmHead->mutex != encoderState->mutex) {
      headLock = std::unique_lock<std::mutex>(*spec.mlmHead->mutex);
    }
    EncoderInfo encoder = Probe(*encoderState);
    CheckEncoderForHead(encoder, spec);
    // The new head and wrapper start in eval mode, not in whatever mode the encoder file was saved
    // in; the encoder's own flags are left as the caller set them. Whoever trains the classifier
    // says so (ScriptModule.train(true) sets every module), as the trainer does.
    const bool training = false;

    // The head: its Linear layers (none for the prompt head, which reuses the MLM head's).
    const bool promptHead = spec.head == "prompt";
    const std::vector<HeadLinear> layout =
        promptHead ? std::vector<HeadLinear>{} : HeadLayout(spec, encoder.hiddenSize);
    const auto weights = InitHeadWeights(layout, spec);
    auto cu = std::make_shared<torch::jit::CompilationUnit>();
    torch::jit::Module head = MakeModule("__torch__.TorchBertClassifierHead", cu, training);
    for (size_t k = 0; k < layout.size(); ++k) {
      head.register_module(layout[k].name, MakeLinear(cu, training, AsParameter(weights[k].first, encoder),
                                                      AsParameter(weights[k].second, encoder)));
    }
    torch::jit::Module classifier = MakeModule("__torch__.TorchBertClassifier", cu, training);
    const std::string headSource =
        promptHead ? AttachPromptHead(classifier, head, cu, *encoderState, encoder, spec, training) : HeadSource(spec);

    // The classifier: the encoder (shared, not copied: training the classifier trains this
    // encoder), the head, and their methods.
    classifier.register_module("encoder", encoderState->module);
    classifier.register_module("head", head);
    const bool perToken = spec.head == "token-classification" || spec.head == "question-answering";
    const std::string pooling = promptHead ? std::string("mask") : perToken ? std::string("tokens") : spec.pooling;
    classifier.register_attribute("pooling", c10::StringType::get(), pooling);
    classifier.register_attribute("num_labels", c10::IntType::get(), spec.numClasses);
    classifier.register_attribute("hidden_size", c10::IntType::get(), encoder.hiddenSize);
    classifier.register_attribute("dropout_p", c10::FloatType::get(), spec.dropout);
    classifier.register_attribute("head_kind", c10::StringType::get(), spec.head);
    classifier.register_attribute("problem_type", c10::StringType::get(),
                                  std::string(ProblemTypeName(spec.problemType)));
    classifier.define(ClassifierSource(encoder, spec, headSource));

    std::vector<std::string> unreached = UnreachedParameters(classifier, encoder);
    // Same mutex as the encoder: both handles reach the encoder's parameters.
    auto state = std::make_shared<ModuleState>(classifier, encoderState->mutex, encoder.device);
    return BuildResult(env, state, encoder, unreached);
  });
}

}  // namespace torch_bert
