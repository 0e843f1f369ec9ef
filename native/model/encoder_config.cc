#include "model/encoder_config.h"

#include <stdexcept>

namespace torch_bert {

namespace {

[[noreturn]] void Bad(const std::string& field, const std::string& why) {
  throw std::runtime_error("buildEncoder: config." + field + " " + why);
}

void Positive(const std::string& field, int64_t value) {
  if (value < 1) Bad(field, "must be a positive integer, got " + std::to_string(value));
}

void Probability(const std::string& field, double value) {
  if (!(value >= 0 && value < 1)) Bad(field, "must be in [0, 1), got " + std::to_string(value));
}

}  // namespace

EncoderFamily ParseEncoderFamily(const std::string& name) {
  if (name == "bert") return EncoderFamily::kBert;
  if (name == "roberta") return EncoderFamily::kRoberta;
  if (name == "distilbert") return EncoderFamily::kDistilBert;
  Bad("family", "must be 'bert', 'roberta' or 'distilbert', got '" + name + "'");
}

void ValidateEncoderConfig(const EncoderConfig& c) {
  Positive("vocabSize", c.vocabSize);
  Positive("hiddenSize", c.hiddenSize);
  Positive("numLayers", c.numLayers);
  Positive("numHeads", c.numHeads);
  Positive("intermediateSize", c.intermediateSize);
  Positive("maxPositions", c.maxPositions);
  if (c.hiddenSize % c.numHeads != 0) {
    Bad("numHeads",
        "(" + std::to_string(c.numHeads) + ") must divide config.hiddenSize (" + std::to_string(c.hiddenSize) + ")");
  }
  if (c.family == EncoderFamily::kDistilBert) {
    if (c.typeVocabSize != 0) Bad("typeVocabSize", "must be 0 for distilbert (it has no token types)");
    if (c.pooler) Bad("pooler", "must be false for distilbert (it has no pooler)");
  } else {
    Positive("typeVocabSize", c.typeVocabSize);
  }
  if (!(c.layerNormEps > 0)) Bad("layerNormEps", "must be > 0, got " + std::to_string(c.layerNormEps));
  if (c.padTokenId < 0 || c.padTokenId >= c.vocabSize) {
    Bad("padTokenId", "must be in [0, vocabSize), got " + std::to_string(c.padTokenId));
  }
  if (c.family == EncoderFamily::kRoberta && c.padTokenId + 2 > c.maxPositions) {
    Bad("maxPositions",
        "must leave room for positions after padTokenId (roberta's position ids start at padTokenId + 1)");
  }
  if (c.hiddenAct != "gelu" && c.hiddenAct != "gelu_new" && c.hiddenAct != "gelu_pytorch_tanh" &&
      c.hiddenAct != "relu" && c.hiddenAct != "silu") {
    Bad("hiddenAct", "must be one of gelu, gelu_new, gelu_pytorch_tanh, relu, silu; got '" + c.hiddenAct + "'");
  }
  Probability("hiddenDropoutProb", c.hiddenDropout);
  Probability("attentionDropoutProb", c.attentionDropout);
}

}  // namespace torch_bert
