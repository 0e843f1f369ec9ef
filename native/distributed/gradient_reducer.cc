#include "distributed/gradient_reducer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_set>

#include "distributed/process_group.h"
#include "distributed/process_group_internal.h"

#ifdef TORCH_BERT_GLOO
#include <torch/csrc/distributed/c10d/comm.hpp>
// Debian's libtorch 1.13 ships reducer.hpp without the distributed-autograd header it includes;
// distributed/shim/ stands in for it (reached only when the real one is missing).
#include <torch/csrc/distributed/c10d/reducer.hpp>
#endif

namespace torch_bert {

#ifdef TORCH_BERT_GLOO

namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// What one averaged backward's buckets did, for the benchmark (TORCH_BERT_DDP_TIMING set: one
// JSON line on stderr per averaged backward): when each bucket's all-reduce was launched by the
// hooks and when it completed, in ms since backward started. The last launch is when backward's
// computation ended; whatever the finish comes later than that is communication the overlap did
// not hide.
struct BucketTimes {
  std::mutex mutex;
  Clock::time_point start;
  struct Bucket {
    size_t bytes = 0;
    double launched = 0;
    double done = -1;
  };
  std::vector<Bucket> buckets;
  // The futures launched by this backward: after a failure, whether a collective failed.
  std::vector<c10::intrusive_ptr<c10::ivalue::Future>> futures;
};

// The reducer's communication: the bucket divided by the world size, then summed over the ranks
// (DDP's default allreduce hook does the same; the built-in path divides while copying into the
// bucket, which is the same for a world size that is a power of two). As a hook, the launch and
// the completion of every bucket are seen.
class AveragingHook : public c10d::CommHookInterface {
 public:
  AveragingHook(c10::intrusive_ptr<c10d::ProcessGroup> group, std::shared_ptr<BucketTimes> times)
      : group_(std::move(group)), times_(std::move(times)) {}

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    at::Tensor& buffer = bucket.getBufferRef();
    buffer.div_(group_->getSize());
    // The launch is timed before the all-reduce is queued: on a busy machine Gloo's threads may
    // finish it before this thread runs again.
    const double launched = MillisecondsSince(times_->start);
    std::vector<at::Tensor> tensors{buffer};
    c10::intrusive_ptr<c10::ivalue::Future> future = group_->allreduce(tensors)->getFuture();
    size_t index = 0;
    {
      std::lock_guard<std::mutex> lock(times_->mutex);
      index = times_->buckets.size();
      times_->buckets.push_back({static_cast<size_t>(buffer.numel()) * buffer.element_size(), launched, -1});
      times_->futures.push_back(future);
    }
    // Outside the lock: a future already completed runs the callback at once, on this thread.
    std::shared_ptr<BucketTimes> times = times_;
    future->addCallback([times, index](c10::ivalue::Future&) {
      std::lock_guard<std::mutex> lock(times->mutex);
      times->buckets[index].done = MillisecondsSince(times->start);
    });
    return future;
  }

  at::Tensor parseHookResult(const c10::IValue& result) override { return result.toTensorVector()[0]; }

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  std::shared_ptr<BucketTimes> times_;
};

// The Reducer, with a look at its own state: whether the last backward was finalized.
class Reducer : public c10d::Reducer {
 public:
  using c10d::Reducer::Reducer;
  // prepare_for_backward arms the hooks; finalize_backward, queued by the hook of the last
  // bucket, disarms them once every bucket is averaged.
  bool Finalized() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return !expect_autograd_hooks_;
  }
};

std::unique_ptr<Reducer> MakeReducer(const std::vector<torch::Tensor>& params,
                                     const c10::intrusive_ptr<c10d::ProcessGroup>& group) {
  // DDP's assignment: by dtype and size in the parameters' order (1 MB first, then 25 MB), the
  // list of buckets reversed, since backward produces the last parameters' gradients first.
  const std::vector<size_t> limits{static_cast<size_t>(c10d::kDefaultFirstBucketBytes), kGradientBucketBytes};
  auto [indices, sizes] = c10d::compute_bucket_assignment_by_size(params, limits, std::vector<bool>(params.size()));
  std::reverse(indices.begin(), indices.end());
  std::reverse(sizes.begin(), sizes.end());
  // No unused-parameter search (the trainer freezes what the loss does not reach, so every
  // bucket fills), gradients copied into the buckets rather than made views of them (the update
  // drops .grad after every step, train/update.h).
#if TORCH_VERSION_MAJOR >= 2
  return std::make_unique<Reducer>(params, std::move(indices), group, std::vector<bool>(params.size()),
                                   static_cast<int64_t>(kGradientBucketBytes), /*find_unused_parameters=*/false,
                                   /*gradient_as_bucket_view=*/false, std::unordered_map<size_t, std::string>{},
                                   c10d::kDefaultFirstBucketBytes, /*skip_all_reduce_unused_params=*/false,
                                   /*use_python_reducer=*/false, std::vector<int64_t>{});
#else
  return std::make_unique<Reducer>(params, std::move(indices), std::move(sizes), group,
                                   std::vector<bool>(params.size()), static_cast<int64_t>(kGradientBucketBytes),
                                   /*find_unused_parameters=*/false, /*gradient_as_bucket_view=*/false,
                                   std::unordered_map<size_t, std::string>{}, c10d::kDefaultFirstBucketBytes);
#endif
}

void ReportTimes(BucketTimes& times, double backwardMs) {
  std::lock_guard<std::mutex> lock(times.mutex);
  std::ostringstream line;
  line << "torch-bert ddp-timing {\"backwardMs\":" << backwardMs << ",\"buckets\":[";
  for (size_t i = 0; i < times.buckets.size(); ++i) {
    const auto& b = times.buckets[i];
    line << (i ? "," : "") << "{\"bytes\":" << b.bytes << ",\"launchMs\":" << b.launched << ",\"doneMs\":" << b.done
         << "}";
  }
  line << "]}\n";
  std::fputs(line.str().c_str(), stderr);
}

}  // namespace

struct GradientReducer::State {
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::shared_ptr<BucketTimes> times = std::make_shared<BucketTimes>();
  std::unique_ptr<Reducer> reducer;
  bool report = false;
  bool first = true;
};

GradientReducer::GradientReducer(const std::vector<torch::Tensor>& params) : state_(std::make_unique<State>()) {
  if (params.empty()) throw std::runtime_error("gradient averaging: no trainable parameters");
  state_->group = CurrentProcessGroup("gradient averaging");
  state_->reducer = MakeReducer(params, state_->group);
  state_->reducer->register_comm_hook(std::make_unique<AveragingHook>(state_->group, state_->times));
  const char* timing = std::getenv("TORCH_BERT_DDP_TIMING");
  state_->report = timing && *timing && std::string(timing) != "0";
}

GradientReducer::~GradientReducer() = default;

bool GradientReducer::AveragingBackward(const std::function<void()>& backward) {
  Reducer& reducer = *state_->reducer;
  BucketTimes& times = *state_->times;
  try {
    // From the second averaged backward on: the buckets in the order the first one's gradients
    // came (once; rank 0's order broadcast, so a collective every rank takes at the same step).
    if (!state_->first) reducer.rebuild_buckets();
    state_->first = false;
    {
      std::lock_guard<std::mutex> lock(times.mutex);
      times.buckets.clear();
      times.futures.clear();
      times.start = Clock::now();
    }
    reducer.prepare_for_backward({});
    backward();
  } catch (const std::exception& e) {
    // A collective that failed (a rank gone, a timeout) surfaces here from the reducer's wait at
    // backward's end: said as every other collective's failure is. Anything else is rethrown.
    std::string failure;
    {
      std::lock_guard<std::mutex> lock(times.mutex);
      for (const auto& future : times.futures) {
        if (future->completed() && future->hasError()) {
          failure = future->tryRetrieveErrorMessage();
          break;
        }
      }
    }
    if (!failure.empty()) ThrowCollectiveFailure("gradient all-reduce", failure);
    throw;
  }
  if (!reducer.Finalized()) return false;
  if (state_->report) ReportTimes(times, MillisecondsSince(times.start));
  return true;
}

double GroupNonFiniteLoss(double loss) {
  auto group = CurrentProcessGroup("non-finite loss agreement");
  torch::Tensor value = torch::full({1}, std::isfinite(loss) ? 0.0 : loss, torch::kFloat64);
  std::vector<torch::Tensor> tensors{value};
  WaitCollective(group->allreduce(tensors), "non-finite loss agreement");
  return value.item<double>();
}

#else

struct GradientReducer::State {};

GradientReducer::GradientReducer(const std::vector<torch::Tensor>&) {
  throw std::runtime_error("gradient averaging: this build of torch-bert has no distributed backend");
}
GradientReducer::~GradientReducer() = default;
bool GradientReducer::AveragingBackward(const std::function<void()>&) {
  throw std::runtime_error("gradient averaging: this build of torch-bert has no distributed backend");
}
double GroupNonFiniteLoss(double) {
  throw std::runtime_error("distributed: this build of torch-bert has no distributed backend");
}

#endif

}  // namespace torch_bert
