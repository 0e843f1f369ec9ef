// buildMlmModel: an encoder and its masked-language-model head (both from one buildEncoder
// call, the head's decoder tied to the word embeddings) as one TorchScript module whose forward
// runs the head on the masked tokens only:
//   forward(input_ids, attention_mask, masked_positions) -> log-probabilities [M, vocab]
// where masked_positions are flat indices into the [B, T] batch. The decoder (hidden -> vocab,
// the costliest matrix of the model) thus runs for M rows, not B * T; the training step's loss
// (NLL of these rows against their original ids) is transformers' cross-entropy averaged over
// the masked tokens.
#pragma once

#include <napi.h>

namespace torch_bert {

// buildMlmModel(encoder, head) -> { module, tiedParameters: [alias, name][] }: `alias` is a
// parameter name whose tensor is the one of the earlier `name` (the tied decoder weight).
Napi::Value BuildMlmModel(const Napi::CallbackInfo& info);

}  // namespace torch_bert
