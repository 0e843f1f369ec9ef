// The configuration of a Hugging Face encoder built natively (NativeEncoderConfig in
// lib/addon/binding.ts): what transformers' BertConfig / RobertaConfig / DistilBertConfig say about
// the shapes and the math, already mapped to one vocabulary by the caller (lib/ reads
// config.json and refuses what this layer does not build). No N-API.
#pragma once

#include <cstdint>
#include <string>

namespace torch_bert {

enum class EncoderFamily { kBert, kRoberta, kDistilBert };

struct EncoderConfig {
  EncoderFamily family = EncoderFamily::kBert;
  std::string familyName;  // as given: 'bert' | 'roberta' | 'distilbert'
  int64_t vocabSize = 0;
  int64_t hiddenSize = 0;
  int64_t numLayers = 0;
  int64_t numHeads = 0;
  int64_t intermediateSize = 0;
  int64_t maxPositions = 0;
  // bert: type_vocab_size; roberta: 1 (row 0 is always added); distilbert: 0 (none).
  int64_t typeVocabSize = 0;
  double layerNormEps = 1e-12;
  int64_t padTokenId = 0;
  // transformers' ACT2FN key: gelu | gelu_new | gelu_pytorch_tanh | relu | silu.
  std::string hiddenAct = "gelu";
  bool pooler = false;
  bool mlmHead = false;
  // bert/roberta: hidden_dropout_prob and attention_probs_dropout_prob; distilbert: dropout and
  // attention_dropout. transformers' default for all three is 0.1.
  double hiddenDropout = 0.1;
  double attentionDropout = 0.1;
};

// Throws std::runtime_error naming the first bad field ("buildEncoder: config.numHeads ...").
void ValidateEncoderConfig(const EncoderConfig& config);

// "bert" -> kBert, ...; throws for other names.
EncoderFamily ParseEncoderFamily(const std::string& name);

}  // namespace torch_bert
