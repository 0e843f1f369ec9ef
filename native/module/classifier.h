// buildClassifier: wraps a TorchScript encoder in a classification head, as a TorchScript
// module that Python can load with torch.jit.load.
#pragma once

#include <napi.h>

namespace torch_bert {

// buildClassifier(encoder, spec) -> { module, encoder: EncoderInfo }
Napi::Value BuildClassifier(const Napi::CallbackInfo& info);

}  // namespace torch_bert
