// Files in torch.save's format: a zip archive (caffe2's PyTorchStreamWriter) holding a
// protocol-2 pickle of a dict, and the tensors' bytes as separate records.
//
// Writing uses a small pickler of our own rather than torch::pickle_save, whose output carries
// TorchScript type tags (torch.jit._pickle.restore_type_tag) that PyTorch >= 2.6 refuses to load
// with torch.load's default weights_only=True. Ours emits exactly what Python's torch.save
// does for a dict of tensors and plain values, so any torch.load reads it, and so does
// torch::pickle_load, which also reads what Python's torch.save writes.
#pragma once

#include <torch/script.h>

#include <string>
#include <utility>
#include <vector>

namespace torch_bert {

// Writes {name: value} in order. Values: tensors (saved as contiguous CPU copies, without
// autograd), ints, floats, bools, strings and lists of those. Throws std::runtime_error naming
// `path` and `what` (e.g. "tensors") on failure; the file is replaced atomically.
void WriteTorchSaveFile(const std::vector<std::pair<std::string, c10::IValue>>& entries, const std::string& path,
                        const std::string& what);

// Writes `size` bytes to `path` through a sibling file renamed into place, so a reader never
// sees a half-written file. Throws std::runtime_error `prefix` + the system's reason (e.g. "No
// space left on device"), the sibling removed. Archives are built in memory and written with
// this: libtorch's own file writer throws again from its destructor when a write fails (a full
// disk), which ends the process (std::terminate) instead of failing the save.
void WriteFileBytes(const std::string& path, const char* data, size_t size, const std::string& prefix);

// Reads a torch.save file (ours or Python's). Throws std::runtime_error naming `path` and `what`.
c10::IValue ReadPickleFile(const std::string& path, const std::string& what);

}  // namespace torch_bert
