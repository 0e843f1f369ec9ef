// DistilBERT's encoder (transformers' DistilBertModel), built as TorchScript by ModelBuilder
// with its module and parameter names.
#pragma once

#include <torch/script.h>

#include "model/encoder_config.h"
#include "model/module_builder.h"

namespace torch_bert {

// forward(input_ids, attention_mask) -> last_hidden_state.
torch::jit::Module BuildDistilBertModel(ModelBuilder& b, const EncoderConfig& config);

}  // namespace torch_bert
