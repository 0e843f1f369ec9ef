// buildEncoder: a Hugging Face encoder (BERT, RoBERTa, DistilBERT) and optionally its MLM head,
// built natively as TorchScript from a config and the checkpoint's tensors
// (model/bert.h, model/distilbert.h, model/mlm_head.h). The N-API entry of native/model/.
#pragma once

#include <napi.h>

namespace torch_bert {

// buildEncoder(config, weights, device) -> { encoder, mlmHead }
Napi::Value BuildEncoder(const Napi::CallbackInfo& info);

}  // namespace torch_bert
