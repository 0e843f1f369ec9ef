// Gradient averaging across the process group with DistributedDataParallel's own engine, c10d's
// Reducer: the trainable parameters packed into buckets of about 25 MB (DDP's bucket_cap_mb; the
// first one 1 MB), in the reverse of the parameters' order as DDP builds them (backward produces
// the last layers' gradients first). Autograd hooks on the parameters' gradient accumulators
// launch a bucket's all-reduce as soon as its last gradient is ready, while backward goes on
// computing the earlier layers' gradients; at backward's end the reducer waits for every bucket
// and copies the averaged gradients back into the parameters' .grad. After the first averaged
// backward the buckets are rebuilt once in the order the gradients actually came (rank 0's order
// broadcast), as DDP does.
//
// Only the window's last micro-batch arms the hooks (DDP's no_sync for the others: their
// gradients add up in .grad and the last backward's hooks read the sum), so accumulation
// communicates once per optimizer step. Averaged before unscaling, the norm, clipping and the skip
// decision (train/update.h), so those see the same gradients on every rank.
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

namespace torch_bert {

// DDP's default bucket_cap_mb.
constexpr size_t kGradientBucketBytes = 25u << 20;

// One trainee's reducer, built once over its trainable parameters (unique tensors: a tied weight
// once) in the same order on every rank; keeps its hooks on them until destroyed. Throws a
// runtime_error when the process has not joined a group (or the build has no distributed backend).
class GradientReducer {
 public:
  explicit GradientReducer(const std::vector<torch::Tensor>& params);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Runs `backward` with the hooks armed: when it returns, every parameter's .grad holds the
  // group's mean. Returns false when backward left a parameter without a gradient (the reducer
  // then waits for a bucket that never fills: it cannot be used again). A rank that fails or
  // times out during the all-reduces is a runtime_error naming it (process_group_internal.h).
  bool AveragingBackward(const std::function<void()>& backward);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Data-parallel agreement on a micro-batch's loss, before backward: 0 when the loss is finite on
// every rank, else the group's non-finite value (NaN, or ±Inf when that is what the ranks had),
// the same on every rank. One all-reduce of one number.
double GroupNonFiniteLoss(double loss);

}  // namespace torch_bert
