// Per-environment state of the addon. Each Node environment (main thread, worker_threads)
// loads the addon separately and needs its own references to the constructors that native code
// calls to wrap results (AdamW is only ever constructed from JS, so it needs none; which class
// made an object is checked by type tags, wrap_tag.h, not by these constructors).
#pragma once

#include <napi.h>

namespace torch_bert {

struct AddonData {
  Napi::FunctionReference tensorConstructor;
  Napi::FunctionReference scriptModuleConstructor;
  Napi::FunctionReference loraAdaptersConstructor;
  Napi::FunctionReference bottleneckAdaptersConstructor;
};

inline AddonData& GetAddonData(Napi::Env env) {
  auto* data = env.GetInstanceData<AddonData>();
  if (data == nullptr) throw Napi::Error::New(env, "torch-bert: addon not initialised");
  return *data;
}

}  // namespace torch_bert
