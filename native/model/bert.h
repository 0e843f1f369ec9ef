// BERT and RoBERTa encoders (transformers' BertModel, RobertaModel / XLMRobertaModel), built as
// TorchScript by ModelBuilder with their module and parameter names.
#pragma once

#include <torch/script.h>

#include "model/encoder_config.h"
#include "model/module_builder.h"

namespace torch_bert {

// bert: forward(input_ids, attention_mask, token_type_ids); roberta: forward(input_ids,
// attention_mask). Returns (last_hidden_state, pooler_output) with config.pooler, else
// last_hidden_state.
torch::jit::Module BuildBertModel(ModelBuilder& b, const EncoderConfig& config);

}  // namespace torch_bert
