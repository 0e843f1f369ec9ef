// One AdamW step over all parameters in a single pass per parameter.
//
// Why: torch::optim::AdamW (like Python's torch.optim.AdamW on the CPU in 1.13) updates each
// parameter with about nine element-wise kernels (weight decay, two moment updates, sqrt,
// divide, add eps, addcdiv) and two temporaries, so a step streams every parameter, gradient
// and moment through memory ~9 times. For BERT the optimizer then costs a tenth of a training
// step, more for small shapes whose word embeddings dominate the parameter count. Here each
// element is read once and written once: the same arithmetic, in the same order, as
// torch::optim::AdamW::step, on the same state objects (so save/load, resume and the
// optimizer's state_dict are unchanged).
//
// Used for float32, contiguous, dense CPU parameters without amsgrad; anything else goes through
// torch::optim::AdamW::step unchanged. Results equal torch's to within float rounding (the fused
// loop may contract a multiply-add into one FMA where ATen's kernels round twice).
#pragma once

#include <torch/torch.h>

#include <optional>

namespace torch_bert {

// optimizer.step(), fused where possible (see above). Call under the optimizer's mutex.
void AdamWStep(torch::optim::AdamW& optimizer);

// Whether the fused step takes every parameter with a gradient (else AdamWStep runs torch's).
bool FusedAdamWApplies(torch::optim::AdamW& optimizer);

// The fused step (FusedAdamWApplies must hold), with two more things done in the same pass
// over the gradients, which a training batch would otherwise stream through memory again:
// `clipCoefficient` multiplies each gradient as it is read (clip_grad_norm_'s coefficient, applied
// as its grad.mul_ would, so the update is the same); `gradNorm`: also return the global L2
// norm of the gradients as read (before `clipCoefficient`), summed in double (NaN and Inf
// propagate). The gradients themselves are left as they were.
std::optional<double> FusedAdamWStep(torch::optim::AdamW& optimizer, float clipCoefficient, bool gradNorm);

}  // namespace torch_bert
