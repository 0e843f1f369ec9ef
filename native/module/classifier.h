// buildClassifier: wraps a TorchScript encoder in a classification head, as a TorchScript
// module that Python can load with torch.jit.load. Its methods: forward(input_ids,
// attention_mask) -> [B, C] log-probabilities (logits or values for spec.problemType
// multi-label classification or regression: module/problem_type.h), features (the pooled [B, H] input of the head) and
// head_forward; where the encoder's forward takes token_type_ids (BERT), also
// forward_token_types and features_token_types(input_ids, attention_mask, token_type_ids), for
// text pairs.
// A token classifier (spec.head 'token-classification') classifies tokens, not texts:
// forward(input_ids, attention_mask, positions) -> [M, C] log-probabilities, a row per position
// (flat indices into the [B, T] batch, train/batch.h); features returns every token's hidden
// state [B, T, H].
#pragma once

#include <napi.h>

namespace torch_bert {

// buildClassifier(encoder, spec) -> { module, encoder: EncoderInfo }
Napi::Value BuildClassifier(const Napi::CallbackInfo& info);

}  // namespace torch_bert
