#include "model/mlm_head.h"

#include <stdexcept>
#include <string>

namespace torch_bert {

namespace {

const std::string kBert = "__torch__.transformers.models.bert.modeling_bert.";
const std::string kRoberta = "__torch__.transformers.models.roberta.modeling_roberta.";
const std::string kDistil = "__torch__.transformers.models.distilbert.modeling_distilbert.";

// The decoder weight: the checkpoint's own when it differs from the word embeddings, else the
// word embedding parameter itself (transformers ties them: tie_word_embeddings).
torch::Tensor DecoderWeight(ModelBuilder& b, const EncoderConfig& c, const std::string& name,
                            const torch::Tensor& wordEmbeddings) {
  torch::Tensor own = b.weights().TakeOptional(name, {c.vocabSize, c.hiddenSize});
  if (own.defined() && !torch::equal(own.detach(), wordEmbeddings.detach())) return own;
  return wordEmbeddings;
}

// transformers ties the decoder's bias to the head's (decoder.bias = self.bias): a checkpoint may
// hold both names for one tensor. Accepted when equal, as the one `bias` parameter.
void CheckDecoderBias(ModelBuilder& b, const EncoderConfig& c, const std::string& name, const torch::Tensor& bias) {
  torch::Tensor decoderBias = b.weights().TakeOptional(name, {c.vocabSize});
  if (decoderBias.defined() && !torch::equal(decoderBias.detach(), bias.detach())) {
    throw std::runtime_error("buildEncoder: tensor '" + name +
                             "' differs from the head's bias; transformers ties the two (one tensor)");
  }
}

// BertPredictionHeadTransform: dense, hidden activation, LayerNorm.
torch::jit::Module BertPredictionHeadTransform(ModelBuilder& b, const EncoderConfig& c) {
  const std::string source =
      "\ndef forward(self, hidden_states):\n    hidden_states = self.dense.forward(hidden_states)\n"
      "    hidden_states = " +
      Activation(c.hiddenAct, "hidden_states") + "\n    return self.LayerNorm.forward(hidden_states)\n";
  return b.Make(kBert + "BertPredictionHeadTransform", source, [&](torch::jit::Module& m) {
    m.register_module("dense", b.Linear("cls.predictions.transform.dense", c.hiddenSize, c.hiddenSize));
    m.register_module("LayerNorm", b.LayerNorm("cls.predictions.transform.LayerNorm", c.hiddenSize, c.layerNormEps));
  });
}

// BertLMPredictionHead: transform, then the decoder with the head's bias.
torch::jit::Module BertLMPredictionHead(ModelBuilder& b, const EncoderConfig& c, const torch::Tensor& words) {
  static const char* kSource = R"(
def forward(self, hidden_states):
    hidden_states = self.transform.forward(hidden_states)
    return self.decoder.forward(hidden_states, self.bias)
)";
  return b.Make(kBert + "BertLMPredictionHead", kSource, [&](torch::jit::Module& m) {
    m.register_module("transform", BertPredictionHeadTransform(b, c));
    torch::Tensor bias = b.weights().Take("cls.predictions.bias", {c.vocabSize});
    CheckDecoderBias(b, c, "cls.predictions.decoder.bias", bias);
    m.register_module("decoder", b.TiedDecoder(DecoderWeight(b, c, "cls.predictions.decoder.weight", words)));
    m.register_parameter("bias", bias, false);
  });
}

// BertOnlyMLMHead: `predictions`.
torch::jit::Module BertOnlyMLMHead(ModelBuilder& b, const EncoderConfig& c, const torch::Tensor& words) {
  static const char* kSource = R"(
def forward(self, sequence_output):
    return self.predictions.forward(sequence_output)
)";
  return b.Make(kBert + "BertOnlyMLMHead", kSource,
                [&](torch::jit::Module& m) { m.register_module("predictions", BertLMPredictionHead(b, c, words)); });
}

// RobertaLMHead: dense, gelu (always erf GELU), layer_norm, decoder with the head's bias.
torch::jit::Module RobertaLMHead(ModelBuilder& b, const EncoderConfig& c, const torch::Tensor& words) {
  static const char* kSource = R"(
def forward(self, features):
    x = self.dense.forward(features)
    x = torch.gelu(x)
    x = self.layer_norm.forward(x)
    return self.decoder.forward(x, self.bias)
)";
  return b.Make(kRoberta + "RobertaLMHead", kSource, [&](torch::jit::Module& m) {
    m.register_module("dense", b.Linear("lm_head.dense", c.hiddenSize, c.hiddenSize));
    m.register_module("layer_norm", b.LayerNorm("lm_head.layer_norm", c.hiddenSize, c.layerNormEps));
    torch::Tensor bias = b.weights().Take("lm_head.bias", {c.vocabSize});
    CheckDecoderBias(b, c, "lm_head.decoder.bias", bias);
    m.register_module("decoder", b.TiedDecoder(DecoderWeight(b, c, "lm_head.decoder.weight", words)));
    m.register_parameter("bias", bias, false);
  });
}

// transformers' activation module (DistilBertForMaskedLM's `activation`, get_activation(name)):
// no parameters, forward = ACT2FN[name]. A module of its own, so that the prompt head
// (module/classifier.cc) reuses the head's activation without knowing the config.
torch::jit::Module ActivationModule(ModelBuilder& b, const std::string& name) {
  return b.Make("__torch__.transformers.activations.ACT2FN_" + name,
                "\ndef forward(self, x):\n    return " + Activation(name, "x") + "\n", [](torch::jit::Module&) {});
}

// DistilBertForMaskedLM's head: vocab_transform, activation, vocab_layer_norm (eps 1e-12),
// vocab_projector (its own bias).
torch::jit::Module DistilBertMLMHead(ModelBuilder& b, const EncoderConfig& c, const torch::Tensor& words) {
  const std::string source =
      "\ndef forward(self, hidden_states):\n    x = self.vocab_transform.forward(hidden_states)\n"
      "    x = self.activation.forward(x)\n"
      "    x = self.vocab_layer_norm.forward(x)\n    return self.vocab_projector.forward(x)\n";
  return b.Make(kDistil + "DistilBertMLMHead", source, [&](torch::jit::Module& m) {
    m.register_module("vocab_transform", b.Linear("vocab_transform", c.hiddenSize, c.hiddenSize));
    m.register_module("activation", ActivationModule(b, c.hiddenAct));
    m.register_module("vocab_layer_norm", b.LayerNorm("vocab_layer_norm", c.hiddenSize, c.layerNormEps));
    m.register_module("vocab_projector", b.LinearWithWeight(DecoderWeight(b, c, "vocab_projector.weight", words),
                                                            "vocab_projector.bias", c.vocabSize));
  });
}

}  // namespace

torch::jit::Module BuildMlmHead(ModelBuilder& b, const EncoderConfig& c, const torch::Tensor& words) {
  switch (c.family) {
    case EncoderFamily::kBert:
      return BertOnlyMLMHead(b, c, words);
    case EncoderFamily::kRoberta:
      return RobertaLMHead(b, c, words);
    case EncoderFamily::kDistilBert:
      return DistilBertMLMHead(b, c, words);
  }
  throw std::logic_error("BuildMlmHead: unknown family");
}

}  // namespace torch_bert
