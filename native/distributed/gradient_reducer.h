// Gradient averaging across the process group, as DistributedDataParallel's reducer does it:
// the gradients packed into buckets of about 25 MB (DDP's bucket_cap_mb), one all-reduce per
// bucket, all launched before the first is waited on (Gloo works on them in its own threads),
// then divided by the world size and copied back. Called on the window's last micro-batch,
// after backward and before unscaling, the norm and clipping (train/update.h), so clipping and
// the skip decision see the averaged gradients, the same on every rank.
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <vector>

namespace torch_bert {

// DDP's default bucket_cap_mb.
constexpr size_t kGradientBucketBytes = 25u << 20;

// Averages the gradients of `params` (same list, same order on every rank: the parameters that
// got a gradient) over the joined group, in place. Throws a runtime_error when not joined or when
// another rank fails or times out (distributed/process_group_internal.h's WaitCollective).
void AverageGradients(const std::vector<torch::Tensor>& params);

}  // namespace torch_bert
