// State for exact resume: named tensors to and from torch.save files, and the random
// generators' state.
#pragma once

#include <napi.h>

namespace torch_bert {

// Adds saveTensors, loadTensors, getRngState and setRngState to `exports`.
void RegisterTrainingState(Napi::Env env, Napi::Object exports);

}  // namespace torch_bert
