#include "distributed/gradient_reducer.h"

#include <stdexcept>

#include "distributed/process_group.h"
#include "distributed/process_group_internal.h"

namespace torch_bert {

#ifdef TORCH_BERT_GLOO

namespace {

// One bucket: gradients of one dtype packed into one flat tensor.
struct Bucket {
  std::vector<torch::Tensor> grads;
  size_t bytes = 0;
  torch::Tensor flat;
  c10::intrusive_ptr<c10d::Work> work;
};

std::vector<Bucket> Buckets(const std::vector<torch::Tensor>& params) {
  std::vector<Bucket> buckets;
  for (const auto& p : params) {
    const torch::Tensor grad = p.grad();
    const size_t bytes = static_cast<size_t>(grad.numel()) * grad.element_size();
    const bool fits = !buckets.empty() && buckets.back().grads.front().scalar_type() == grad.scalar_type() &&
                      buckets.back().bytes + bytes <= kGradientBucketBytes;
    if (!fits) buckets.emplace_back();
    buckets.back().grads.push_back(grad);
    buckets.back().bytes += bytes;
  }
  return buckets;
}

}  // namespace

void AverageGradients(const std::vector<torch::Tensor>& params) {
  auto group = CurrentProcessGroup("gradient averaging");
  const int worldSize = group->getSize();
  if (worldSize == 1 || params.empty()) return;
  torch::NoGradGuard noGrad;
  std::vector<Bucket> buckets = Buckets(params);
  for (auto& bucket : buckets) {
    std::vector<torch::Tensor> flats;
    flats.reserve(bucket.grads.size());
    for (const auto& g : bucket.grads) flats.push_back(g.reshape({-1}));
    bucket.flat = torch::cat(flats);
    std::vector<torch::Tensor> tensors{bucket.flat};
    bucket.work = group->allreduce(tensors);
  }
  for (auto& bucket : buckets) {
    WaitCollective(bucket.work, "gradient all-reduce");
    bucket.flat.div_(worldSize);
    int64_t offset = 0;
    for (auto& g : bucket.grads) {
      g.copy_(bucket.flat.narrow(0, offset, g.numel()).view_as(g));
      offset += g.numel();
    }
  }
}

#else

void AverageGradients(const std::vector<torch::Tensor>&) {
  throw std::runtime_error("gradient averaging: this build of torch-bert has no distributed backend");
}

#endif

}  // namespace torch_bert
