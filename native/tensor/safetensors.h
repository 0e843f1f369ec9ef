// Files in Hugging Face's safetensors format (https://github.com/huggingface/safetensors): an
// 8-byte little-endian header length N, N bytes of UTF-8 JSON naming every tensor's dtype,
// shape and byte range, then the tensors' bytes. Hub checkpoints ship in it; unlike a pickle it
// holds no code, so reading one must be safe for any file: every byte of the header is
// validated before a tensor byte is touched, and every failure is a std::runtime_error naming
// the file (and the tensor), never a read outside the file.
//
// The header is checked as the reference implementation does (tensors exactly cover the byte
// buffer, in any order, without overlaps or holes; the byte range matches shape x dtype) and a
// little more strictly where it is lenient: duplicate keys and unknown fields are errors.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace torch_bert {

// `__metadata__`: string keys and values, in file order.
using SafetensorsMetadata = std::vector<std::pair<std::string, std::string>>;

struct SafetensorsEntry {
  std::string name;
  c10::ScalarType dtype;
  std::vector<int64_t> shape;
  // Byte range in the data buffer (the bytes after the header), end exclusive.
  uint64_t begin = 0;
  uint64_t end = 0;
};

struct SafetensorsHeader {
  // In the order the header lists them.
  std::vector<SafetensorsEntry> tensors;
  std::optional<SafetensorsMetadata> metadata;
};

// The header's dtype code ("F32", "BF16", ...) for a libtorch dtype; throws for dtypes the
// format has no code for.
const char* SafetensorsDTypeCode(c10::ScalarType type);

// Parses and validates `json` (the N header bytes) for a data buffer of `dataSize` bytes.
// Throws std::runtime_error starting with `prefix` (which names the file).
SafetensorsHeader ParseSafetensorsHeader(std::string_view json, uint64_t dataSize, const std::string& prefix);

// The validated header of the file at `path`, reading only the header's bytes.
SafetensorsHeader ReadSafetensorsHeader(const std::string& path);

// Every tensor of the file at `path`, in header order, as CPU tensors in the file's dtypes,
// each read straight into its own storage (no mapping, no intermediate buffer).
// `metadata` (optional) receives `__metadata__`.
std::vector<std::pair<std::string, torch::Tensor>> ReadSafetensors(const std::string& path,
                                                                   std::optional<SafetensorsMetadata>* metadata);

// Writes `tensors` (any device) in the given order, as contiguous CPU bytes in their dtypes,
// with `metadata` as `__metadata__` when given. The file is replaced atomically (a sibling
// temporary file, renamed).
void WriteSafetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::optional<SafetensorsMetadata>& metadata);

}  // namespace torch_bert
