// Files in torch.save's format (a zip archive holding a pickle), read and written with
// torch::pickle_save / torch::pickle_load: Python's torch.load reads what we write, and we
// read what Python's torch.save writes.
#pragma once

#include <torch/script.h>

#include <string>

namespace torch_bert {

// Throws std::runtime_error naming `path` and `what` (e.g. "tensors") on failure.
void WritePickleFile(const c10::IValue& value, const std::string& path, const std::string& what);
c10::IValue ReadPickleFile(const std::string& path, const std::string& what);

}  // namespace torch_bert
