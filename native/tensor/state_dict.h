// State dicts that Python's torch.save wrote in its zip format (torch >= 1.6), e.g. a Hugging
// Face pytorch_model.bin.
//
// libtorch 1.13's unpickler (torch::pickle_load) cannot read them: a real state dict is a
// collections.OrderedDict with a `_metadata` attribute, pickled with SETITEM and BUILD opcodes
// it does not implement. So this reads the pickle itself, with a restricted unpickler: the
// opcodes of protocol 2 that containers and numbers need, and only the globals a state dict
// names (OrderedDict, the tensor rebuild functions, the storage types). Any other global is
// refused, so no file can make it run code.
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace torch_bert {

// The flat {name: tensor} dict (a dict or OrderedDict), in file order. Tensors that shared a
// storage in Python share one here; views keep their offset and strides (checked to lie inside
// their storage). Throws std::runtime_error naming `path` for a legacy (pre-1.6, non-zip) file,
// anything that is not a zip archive, a pickle outside the subset, and anything but a dict of
// string -> tensor.
std::vector<std::pair<std::string, torch::Tensor>> ReadTorchStateDict(const std::string& path);

}  // namespace torch_bert
