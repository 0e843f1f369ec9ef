// Stands in for distributed autograd's context.h, which c10d's reducer.hpp includes but Debian's
// libtorch 1.13 (libtorch-dev) does not ship. reducer.hpp needs two names from it: the context
// pointer type, a shared_ptr member of the Reducer (its size does not depend on the pointee, so
// the Reducer's layout is the library's), and the gradient callback type it checks its own
// against. Nothing here is ever called. On the include path after everything else (CMakeLists.txt
// -idirafter, native/distributed/ only), so a libtorch that ships the real header uses it.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

namespace torch {
namespace distributed {
namespace autograd {

class DistAutogradContext {
 public:
  using GradCallback = std::function<bool(at::Tensor&)>;
};
using ContextPtr = std::shared_ptr<DistAutogradContext>;

}  // namespace autograd
}  // namespace distributed
}  // namespace torch
