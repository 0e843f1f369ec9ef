#include "train/fused_adamw.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <type_traits>

namespace torch_bert {

namespace {

struct Coefficients {
  float decay;  // 1 - lr * weight_decay
  float beta1;
  float oneMinusBeta1;
  float beta2;
  float oneMinusBeta2;
  float sqrtCorrection2;  // sqrt(1 - beta2^step)
  float eps;
  float negStepSize;      // -lr / (1 - beta1^step)
  float clipCoefficient;  // clip_grad_norm_'s coefficient (1: none)
  bool applyDecay;
};

// The element loop, in torch::optim::AdamW::step's order of operations. Compiled for AVX2+FMA
// and for the baseline, the best chosen at load time (GCC function multi-versioning), so one
// prebuilt binary serves every x86-64 CPU. The loop is memory-bound; vectorising it matters
// less than touching each element once.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("avx2,fma", "default")))
#endif
void UpdateElements(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
                    Coefficients c) {
  for (int64_t i = 0; i < n; ++i) {
    float param = c.applyDecay ? p[i] * c.decay : p[i];
    // As clip_grad_norm_'s grad.mul_(coefficient): one float multiply (exact for 1).
    const float grad = g[i] * c.clipCoefficient;
    const float expAvg = m[i] * c.beta1 + grad * c.oneMinusBeta1;
    const float expAvgSq = v[i] * c.beta2 + c.oneMinusBeta2 * (grad * grad);
    const float denom = __builtin_sqrtf(expAvgSq) / c.sqrtCorrection2 + c.eps;
    param = param + c.negStepSize * (expAvg / denom);
    m[i] = expAvg;
    v[i] = expAvgSq;
    p[i] = param;
  }
}

// The sum of squares of g[0..n): eight float lanes (so that it vectorises without reordering
// what the compiler may not reorder), added up in double.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("avx2,fma", "default")))
#endif
double
SumOfSquares(const float* __restrict g, int64_t n) {
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) lanes[k] += g[i + k] * g[i + k];
  }
  double sum = 0;
  for (; i < n; ++i) sum += static_cast<double>(g[i]) * g[i];
  for (float lane : lanes) sum += lane;
  return sum;
}

// Elements per block when the gradient norm is taken in the same pass: a block's gradient is
// still in L2 when its squares are summed (64 KiB of float32).
constexpr int64_t kNormBlock = 16384;

bool Fusable(const torch::Tensor& p, const torch::Tensor& grad) {
  return p.device().is_cpu() && p.scalar_type() == torch::kFloat && grad.scalar_type() == torch::kFloat &&
         !grad.is_sparse() && p.is_contiguous() && grad.is_contiguous() && grad.sizes() == p.sizes();
}

// The key under which torch::optim keeps a parameter's state: the TensorImpl address as a
// string in libtorch 1.x (c10::guts::to_string, i.e. ostream <<), the address itself in 2.x.
template <typename Key>
Key StateKey(const torch::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream out;
    out << p.unsafeGetTensorImpl();
    return out.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

// The AdamW state of `p` in `state` (optimizer.state()), created as torch::optim::AdamW
// creates it where it has none, its moments made what UpdateElements takes.
template <typename State>
torch::optim::AdamWParamState& FloatState(State& state, const torch::Tensor& p) {
  using Key = typename State::key_type;
  const Key key = StateKey<Key>(p);
  auto found = state.find(key);
  if (found == state.end()) {
    // As torch::optim::AdamW initialises it.
    auto fresh = std::make_unique<torch::optim::AdamWParamState>();
    fresh->step(0);
    fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    found = state.emplace(key, std::move(fresh)).first;
  }
  auto& s = static_cast<torch::optim::AdamWParamState&>(*found->second);
  torch::Tensor& expAvg = s.exp_avg();
  torch::Tensor& expAvgSq = s.exp_avg_sq();
  if (!expAvg.is_contiguous() || !expAvgSq.is_contiguous() || expAvg.scalar_type() != torch::kFloat ||
      expAvgSq.scalar_type() != torch::kFloat) {
    // Loaded state of another layout: make it the parameter's (values unchanged).
    expAvg = expAvg.to(torch::kFloat).contiguous();
    expAvgSq = expAvgSq.to(torch::kFloat).contiguous();
  }
  return s;
}

// UpdateElements' constants for a parameter of the group with `options` at `step` (its bias
// corrections), computed in double and rounded once to float.
Coefficients StepCoefficients(const torch::optim::AdamWOptions& options, int64_t step, float clipCoefficient) {
  const double beta1 = std::get<0>(options.betas());
  const double beta2 = std::get<1>(options.betas());
  const double correction1 = 1 - std::pow(beta1, step);
  const double correction2 = 1 - std::pow(beta2, step);
  Coefficients c;
  c.applyDecay = options.weight_decay() != 0;
  c.decay = static_cast<float>(1 - options.lr() * options.weight_decay());
  c.beta1 = static_cast<float>(beta1);
  c.oneMinusBeta1 = static_cast<float>(1 - beta1);
  c.beta2 = static_cast<float>(beta2);
  c.oneMinusBeta2 = static_cast<float>(1 - beta2);
  c.sqrtCorrection2 = static_cast<float>(std::sqrt(correction2));
  c.eps = static_cast<float>(options.eps());
  c.negStepSize = static_cast<float>(-(options.lr() / correction1));
  c.clipCoefficient = clipCoefficient;
  return c;
}

// TORCH_BERT_FUSED_ADAMW=0 restores torch::optim::AdamW::step (for comparison).
bool FusedEnabled() {
  static const bool enabled = [] {
    const char* value = std::getenv("TORCH_BERT_FUSED_ADAMW");
    return value == nullptr || std::string(value) != "0";
  }();
  return enabled;
}

}  // namespace

bool FusedAdamWApplies(torch::optim::AdamW& optimizer) {
  if (!FusedEnabled()) return false;
  // Any parameter the fused loop cannot take: torch does the whole step (mixing would update
  // the fused parameters twice).
  for (auto& group : optimizer.param_groups()) {
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      if (options.amsgrad() || !Fusable(p, p.grad())) return false;
    }
  }
  return true;
}

void AdamWStep(torch::optim::AdamW& optimizer) {
  if (!FusedAdamWApplies(optimizer)) {
    optimizer.step();
    return;
  }
  FusedAdamWStep(optimizer, 1.0f, false);
}

std::optional<double> FusedAdamWStep(torch::optim::AdamW& optimizer, float clipCoefficient, bool gradNorm) {
  double sumOfSquares = 0;
  torch::NoGradGuard noGrad;
  auto& state = optimizer.state();
  for (auto& group : optimizer.param_groups()) {
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      torch::optim::AdamWParamState& s = FloatState(state, p);
      s.step(s.step() + 1);
      const Coefficients c = StepCoefficients(options, s.step(), clipCoefficient);
      torch::Tensor& expAvg = s.exp_avg();
      torch::Tensor& expAvgSq = s.exp_avg_sq();
      float* param = p.data_ptr<float>();
      const float* grad = p.grad().data_ptr<float>();
      float* m = expAvg.data_ptr<float>();
      float* v = expAvgSq.data_ptr<float>();
      const int64_t n = p.numel();
      if (!gradNorm) {
        UpdateElements(param, grad, m, v, n, c);
      } else {
        for (int64_t at = 0; at < n; at += kNormBlock) {
          const int64_t len = std::min(kNormBlock, n - at);
          UpdateElements(param + at, grad + at, m + at, v + at, len, c);
          sumOfSquares += SumOfSquares(grad + at, len);
        }
      }
      // As an in-place op would: autograd then refuses to use a stale saved copy of p.
      p.unsafeGetTensorImpl()->bump_version();
      expAvg.unsafeGetTensorImpl()->bump_version();
      expAvgSq.unsafeGetTensorImpl()->bump_version();
    }
  }
  if (!gradNorm) return std::nullopt;
  return std::sqrt(sumOfSquares);
}

}  // namespace torch_bert
