// The c10d objects behind process_group.h, for the distributed layer's own files only (they
// include c10d's headers, which need Gloo's).
#pragma once

#ifdef TORCH_BERT_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <string>

namespace torch_bert {

// The joined group; throws a runtime_error naming `what` when not joined.
c10::intrusive_ptr<c10d::ProcessGroup> CurrentProcessGroup(const std::string& what);

// Whether the joined group sends CUDA tensors to NCCL (else to Gloo; false when not joined).
bool NcclForCuda();

// Waits for a collective, turning Gloo's failure (a peer gone, a timeout) into one line that
// says which collective failed on which rank and why.
void WaitCollective(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what);

// The same one line for a collective `what` that failed with `error` (also when its failure
// surfaces elsewhere, as the reducer's does at backward's end): which ranks stopped responding.
[[noreturn]] void ThrowCollectiveFailure(const std::string& what, const std::string& error);

}  // namespace torch_bert
#endif
