// Checkpoint files as Hugging Face ships them, for JS: safetensors (tensor/safetensors.h) read
// and written, and zip-format torch.save state dicts (pytorch_model.bin) read.
#pragma once

#include <napi.h>

namespace torch_bert {

// Adds readSafetensors, readSafetensorsHeader, writeSafetensors and readTorchStateDict to
// `exports` (typed in lib/addon/binding.ts).
void RegisterWeightFiles(Napi::Env env, Napi::Object exports);

}  // namespace torch_bert
