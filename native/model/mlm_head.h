// The masked-language-model heads (transformers' BertOnlyMLMHead, RobertaLMHead and
// DistilBertForMaskedLM's vocab_* modules), built as TorchScript by ModelBuilder:
// forward(hidden_states) -> logits [B, T, vocab]. Parameter names are the checkpoint's keys
// without the family's prefix (`cls.`, `lm_head.`, none).
#pragma once

#include <torch/script.h>

#include "model/encoder_config.h"
#include "model/module_builder.h"

namespace torch_bert {

// `wordEmbeddings`: the encoder's word embedding parameter. The decoder weight is that very
// tensor (tied: training one trains the other) unless the checkpoint holds a decoder weight
// that differs from it.
torch::jit::Module BuildMlmHead(ModelBuilder& b, const EncoderConfig& config, const torch::Tensor& wordEmbeddings);

}  // namespace torch_bert
