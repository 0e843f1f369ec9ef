// The process group's JS functions: joining from torchrun's variables, the small collectives the
// TypeScript side needs (metrics and stop flags all-reduced, initial weights broadcast from rank
// 0) and leaving. They block the calling thread until every rank has taken part (or the
// group's timeout passes), as torch.distributed's are.
#pragma once

#include <napi.h>

namespace torch_bert {

// Adds distributedBackends, distributedJoin, distributedAllReduce,
// distributedAllReduceTensor, distributedBroadcast and
// distributedLeave to `exports`.
void RegisterDistributed(Napi::Env env, Napi::Object exports);

}  // namespace torch_bert
