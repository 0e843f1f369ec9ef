// flock(2) for JS, which Node lacks: the lock Python's huggingface_hub (through the filelock
// package) takes on a download, so torch-bert and Python wait for each other (lib/models/hub-lock.ts).
#pragma once

#include <napi.h>

namespace torch_bert {

// Adds tryLockFile to `exports` (typed in lib/addon/binding.ts).
void RegisterFileLock(Napi::Env env, Napi::Object exports);

}  // namespace torch_bert
