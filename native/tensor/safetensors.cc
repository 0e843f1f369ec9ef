#include "tensor/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <unordered_set>

namespace torch_bert {

namespace {

// The reference implementation's limit (MAX_HEADER_SIZE): a larger header is refused before it
// is read, so a hostile length cannot make us allocate or parse gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Tensor bytes are read in pieces of at most this size (a single read() may return less than
// asked, and Linux caps one at about 2 GB).
constexpr uint64_t kReadPiece = 64ull << 20;

struct DTypeCode {
  const char* code;
  c10::ScalarType type;
};

// The format's dtypes that libtorch has. The format also names U16/U32/U64 and float8 types,
// which libtorch 1.13 lacks: those are refused as unsupported.
constexpr DTypeCode kDTypes[] = {
    {"F64", c10::ScalarType::Double},    {"F32", c10::ScalarType::Float}, {"F16", c10::ScalarType::Half},
    {"BF16", c10::ScalarType::BFloat16}, {"I64", c10::ScalarType::Long},  {"I32", c10::ScalarType::Int},
    {"I16", c10::ScalarType::Short},     {"I8", c10::ScalarType::Char},   {"U8", c10::ScalarType::Byte},
    {"BOOL", c10::ScalarType::Bool},
};

std::string Quoted(const std::string& s) {
  return "'" + s + "'";
}

std::string ReadPrefix(const std::string& path) {
  return "cannot read safetensors file '" + path + "': ";
}

// ---- The header's JSON ------------------------------------------------------------------------
//
// A parser for exactly the header's grammar: one object whose values are either the
// `__metadata__` object of strings or a tensor object {dtype: string, shape: [uint...],
// data_offsets: [uint, uint]}. Driven by that schema, it never recurses, so no input can
// exhaust the stack, and each value is checked for its type where it is read.

class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& prefix) : s_(text), prefix_(prefix) {}

  [[noreturn]] void Fail(const std::string& why) const { throw std::runtime_error(prefix_ + why); }

  [[noreturn]] void FailAt(const std::string& why) const {
    Fail("header is not valid: " + why + " at byte " + std::to_string(pos_) + " of the header");
  }

  void SkipSpace() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }

  bool AtEnd() const { return pos_ >= s_.size(); }

  char Peek() const { return AtEnd() ? '\0' : s_[pos_]; }

  // What the value starting here is, for messages.
  std::string Found() const {
    if (AtEnd()) return "the end of the header";
    switch (s_[pos_]) {
      case '{':
        return "an object";
      case '[':
        return "an array";
      case '"':
        return "a string";
      case 't':
      case 'f':
        return "a boolean";
      case 'n':
        return "null";
      default:
        if (s_[pos_] == '-' || (s_[pos_] >= '0' && s_[pos_] <= '9')) return "a number";
        return "the character '" + std::string(1, s_[pos_]) + "'";
    }
  }

  void Expect(char c, const std::string& context) {
    SkipSpace();
    if (Peek() != c) FailAt("expected '" + std::string(1, c) + "' " + context + ", found " + Found());
    ++pos_;
  }

  // After an item of an object or array: true when another follows (','), false at `close`.
  bool More(char close, const std::string& context) {
    SkipSpace();
    if (Peek() == ',') {
      ++pos_;
      return true;
    }
    if (Peek() == close) {
      ++pos_;
      return false;
    }
    FailAt("expected ',' or '" + std::string(1, close) + "' " + context + ", found " + Found());
  }

  // `value` is the value's name for messages ("the dtype of tensor 'x'").
  std::string String(const std::string& value) {
    SkipSpace();
    if (Peek() != '"') Fail(value + " must be a string, found " + Found());
    ++pos_;
    std::string out;
    while (true) {
      if (AtEnd()) FailAt("unterminated string");
      unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) FailAt("control character in a string");
      if (c == '\\') {
        Escape(out);
      } else if (c < 0x80) {
        out.push_back(static_cast<char>(c));
        ++pos_;
      } else {
        Utf8Sequence(out);
      }
    }
  }

  // A non-negative integer that fits int64 (every size and offset must fit libtorch's).
  uint64_t Integer(const std::string& value) {
    SkipSpace();
    if (Peek() == '-') Fail(value + " must be a non-negative integer, found a negative number");
    if (!(Peek() >= '0' && Peek() <= '9')) Fail(value + " must be a non-negative integer, found " + Found());
    const size_t start = pos_;
    uint64_t v = 0;
    bool tooLarge = false;
    while (!AtEnd() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      const uint64_t digit = static_cast<uint64_t>(s_[pos_] - '0');
      if (v > (static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - digit) / 10) tooLarge = true;
      if (!tooLarge) v = v * 10 + digit;
      ++pos_;
    }
    if (Peek() == '.' || Peek() == 'e' || Peek() == 'E')
      Fail(value + " must be a non-negative integer, found a number with a fraction or exponent");
    if (pos_ - start > 1 && s_[start] == '0') FailAt("a number with a leading zero");
    if (tooLarge) Fail(value + " is too large (at most 2^63 - 1)");
    return v;
  }

 private:
  unsigned Hex4() {
    if (s_.size() - pos_ < 4) FailAt("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<unsigned>(c - 'A' + 10);
      } else {
        FailAt("invalid \\u escape");
      }
    }
    return v;
  }

  static void AppendUtf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  void Escape(std::string& out) {
    ++pos_;  // the backslash
    if (AtEnd()) FailAt("unterminated string");
    char c = s_[pos_++];
    switch (c) {
      case '"':
      case '\\':
      case '/':
        out.push_back(c);
        return;
      case 'b':
        out.push_back('\b');
        return;
      case 'f':
        out.push_back('\f');
        return;
      case 'n':
        out.push_back('\n');
        return;
      case 'r':
        out.push_back('\r');
        return;
      case 't':
        out.push_back('\t');
        return;
      case 'u': {
        unsigned cp = Hex4();
        if (cp >= 0xDC00 && cp <= 0xDFFF) FailAt("unpaired UTF-16 surrogate in a \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (s_.size() - pos_ < 2 || s_[pos_] != '\\' || s_[pos_ + 1] != 'u')
            FailAt("unpaired UTF-16 surrogate in a \\u escape");
          pos_ += 2;
          unsigned low = Hex4();
          if (low < 0xDC00 || low > 0xDFFF) FailAt("unpaired UTF-16 surrogate in a \\u escape");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        AppendUtf8(out, cp);
        return;
      }
      default:
        --pos_;
        FailAt("invalid escape in a string");
    }
  }

  // One multi-byte UTF-8 sequence starting at pos_: shortest form, no surrogates, <= U+10FFFF.
  void Utf8Sequence(std::string& out) {
    const unsigned char lead = static_cast<unsigned char>(s_[pos_]);
    size_t length;
    unsigned cp;
    unsigned min;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2, cp = lead & 0x1F, min = 0x80;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3, cp = lead & 0x0F, min = 0x800;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4, cp = lead & 0x07, min = 0x10000;
    } else {
      FailAt("invalid UTF-8");
    }
    if (s_.size() - pos_ < length) FailAt("invalid UTF-8");
    for (size_t i = 1; i < length; ++i) {
      const unsigned char c = static_cast<unsigned char>(s_[pos_ + i]);
      if ((c & 0xC0) != 0x80) FailAt("invalid UTF-8");
      cp = (cp << 6) | (c & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) FailAt("invalid UTF-8");
    out.append(s_.data() + pos_, length);
    pos_ += length;
  }

  std::string_view s_;
  const std::string& prefix_;
  size_t pos_ = 0;
};

c10::ScalarType DTypeFromCode(const std::string& code, HeaderParser& parser, const std::string& tensor) {
  for (const auto& d : kDTypes) {
    if (code == d.code) return d.type;
  }
  std::string known;
  for (const auto& d : kDTypes) known += std::string(known.empty() ? "" : ", ") + d.code;
  parser.Fail("tensor " + Quoted(tensor) + ": unsupported dtype " + Quoted(code) + " (supported: " + known + ")");
}

SafetensorsMetadata ParseMetadata(HeaderParser& p) {
  SafetensorsMetadata metadata;
  std::unordered_set<std::string> keys;
  p.SkipSpace();
  if (p.Peek() != '{') p.Fail("__metadata__ must be an object of strings, found " + p.Found());
  p.Expect('{', "");
  p.SkipSpace();
  if (p.Peek() == '}') {
    p.Expect('}', "");
    return metadata;
  }
  do {
    std::string key = p.String("a key of __metadata__");
    if (!keys.insert(key).second) p.Fail("__metadata__ has the key " + Quoted(key) + " twice");
    p.Expect(':', "after a key of __metadata__");
    std::string value = p.String("__metadata__[" + Quoted(key) + "]");
    metadata.emplace_back(std::move(key), std::move(value));
  } while (p.More('}', "in __metadata__"));
  return metadata;
}

uint64_t ElementSize(c10::ScalarType type) {
  return static_cast<uint64_t>(c10::elementSize(type));
}

// A JSON array of non-negative integers (a shape, data_offsets); `what` names it in errors.
std::vector<uint64_t> ParseIntegers(HeaderParser& p, const std::string& what) {
  p.SkipSpace();
  if (p.Peek() != '[') p.Fail(what + " must be an array of integers, found " + p.Found());
  p.Expect('[', "");
  std::vector<uint64_t> values;
  p.SkipSpace();
  if (p.Peek() == ']') {
    p.Expect(']', "");
    return values;
  }
  do {
    // The length is bounded by the header's size, itself bounded by kMaxHeaderBytes.
    values.push_back(p.Integer("an entry of " + what));
  } while (p.More(']', "in " + what));
  return values;
}

// The entry's byte range: two offsets, in order, inside the data buffer, spanning exactly the
// shape's elements of its dtype.
void CheckExtent(HeaderParser& p, const std::string& what, SafetensorsEntry& entry,
                 const std::vector<uint64_t>& offsets, uint64_t dataSize) {
  if (offsets.size() != 2)
    p.Fail(what + ": data_offsets must be two integers [begin, end], found " + std::to_string(offsets.size()));
  entry.begin = offsets[0];
  entry.end = offsets[1];
  if (entry.begin > entry.end)
    p.Fail(what + ": data_offsets begin " + std::to_string(entry.begin) + " is after end " + std::to_string(entry.end));
  if (entry.end > dataSize) {
    p.Fail(what + ": data_offsets end " + std::to_string(entry.end) + " is past the end of the data buffer (" +
           std::to_string(dataSize) + " bytes)");
  }
  // numel x element size, checked for overflow: the product must not wrap to a small number
  // that happens to match the byte range. Zero dimensions are left out of the check, so that
  // libtorch's own size arithmetic (strides) cannot overflow for an empty tensor either.
  uint64_t bytes = ElementSize(entry.dtype);
  bool empty = false;
  for (int64_t d : entry.shape) {
    const uint64_t dim = static_cast<uint64_t>(d);
    if (dim == 0) {
      empty = true;
      continue;
    }
    if (bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / dim)
      p.Fail(what + ": the shape's size overflows");
    bytes *= dim;
  }
  if (empty) bytes = 0;
  if (bytes != entry.end - entry.begin) {
    p.Fail(what + ": data_offsets span " + std::to_string(entry.end - entry.begin) + " bytes but shape x dtype is " +
           std::to_string(bytes) + " bytes");
  }
}

// One tensor's entry of the header: an object of exactly dtype, shape and data_offsets.
SafetensorsEntry ParseTensor(HeaderParser& p, std::string name, uint64_t dataSize) {
  const std::string what = "tensor " + Quoted(name);
  SafetensorsEntry entry;
  entry.name = std::move(name);
  p.SkipSpace();
  if (p.Peek() != '{') p.Fail(what + " must be an object {dtype, shape, data_offsets}, found " + p.Found());
  p.Expect('{', "");
  bool hasDType = false, hasShape = false, hasOffsets = false;
  std::vector<uint64_t> offsets;
  p.SkipSpace();
  if (p.Peek() == '}') p.Fail(what + ": missing dtype, shape and data_offsets");
  do {
    std::string field = p.String("a field name of " + what);
    p.Expect(':', "after a field name of " + what);
    bool* seen = field == "dtype"          ? &hasDType
                 : field == "shape"        ? &hasShape
                 : field == "data_offsets" ? &hasOffsets
                                           : nullptr;
    if (seen == nullptr) p.Fail(what + ": unknown field " + Quoted(field) + " (expected dtype, shape, data_offsets)");
    if (*seen) p.Fail(what + " has the field " + Quoted(field) + " twice");
    if (field == "dtype") {
      entry.dtype = DTypeFromCode(p.String("the dtype of " + what), p, entry.name);
    } else if (field == "shape") {
      const std::vector<uint64_t> shape = ParseIntegers(p, "the shape of " + what);
      entry.shape.assign(shape.begin(), shape.end());
    } else {
      offsets = ParseIntegers(p, "the data_offsets of " + what);
    }
    *seen = true;
  } while (p.More('}', "in " + what));
  if (!hasDType) p.Fail(what + ": missing dtype");
  if (!hasShape) p.Fail(what + ": missing shape");
  if (!hasOffsets) p.Fail(what + ": missing data_offsets");
  CheckExtent(p, what, entry, offsets, dataSize);
  return entry;
}

// The tensors must cover the data buffer exactly: sorted by offset, each begins where the
// previous one ends, and the last ends at the buffer's end (as the reference checks).
void CheckCoverage(const SafetensorsHeader& header, uint64_t dataSize, const std::string& prefix) {
  std::vector<size_t> order(header.tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto& x = header.tensors[a];
    const auto& y = header.tensors[b];
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  uint64_t position = 0;
  const SafetensorsEntry* previous = nullptr;
  for (size_t i : order) {
    const SafetensorsEntry& t = header.tensors[i];
    if (t.begin < position) {
      throw std::runtime_error(prefix + "tensor " + Quoted(t.name) + " overlaps tensor " + Quoted(previous->name) +
                               " (bytes " + std::to_string(t.begin) + " to " + std::to_string(position) + ")");
    }
    if (t.begin > position) {
      throw std::runtime_error(prefix + "the data buffer has a hole of " + std::to_string(t.begin - position) +
                               " bytes before tensor " + Quoted(t.name) + " (at byte " + std::to_string(position) +
                               ")");
    }
    position = t.end;
    previous = &t;
  }
  if (position != dataSize) {
    throw std::runtime_error(prefix + "the tensors cover " + std::to_string(position) +
                             " bytes of the data buffer but it holds " + std::to_string(dataSize) +
                             " bytes (trailing bytes no tensor claims)");
  }
}

// The 8-byte length prefix, checked against the file's size; returns the header's length.
uint64_t HeaderLength(const unsigned char* prefix8, uint64_t fileSize, const std::string& prefix) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | prefix8[i];
  if (n > kMaxHeaderBytes) {
    throw std::runtime_error(prefix + "header length " + std::to_string(n) + " is over the limit of " +
                             std::to_string(kMaxHeaderBytes) + " bytes (not a safetensors file, or a corrupt one)");
  }
  if (n > fileSize - 8) {
    throw std::runtime_error(prefix + "header length " + std::to_string(n) + " runs past the end of the file (" +
                             std::to_string(fileSize) + " bytes)");
  }
  return n;
}

// An open file descriptor, closed on scope exit.
struct FileHandle {
  int fd = -1;
  ~FileHandle() {
    if (fd >= 0) ::close(fd);
  }
};

// Opens `path` and returns its size; throws for a missing, unreadable or non-regular file or
// one too short to hold the length prefix.
uint64_t OpenFile(const std::string& path, FileHandle& file, const std::string& prefix) {
  file.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (file.fd < 0) throw std::runtime_error(prefix + std::strerror(errno));
  struct stat st;
  if (::fstat(file.fd, &st) != 0) throw std::runtime_error(prefix + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw std::runtime_error(prefix + "not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    throw std::runtime_error(prefix + "the file is " + std::to_string(size) +
                             " bytes, shorter than the 8-byte header length");
  }
  return size;
}

// Reads exactly `n` bytes at file offset `at` into `dst`; a file that ends sooner (truncated
// since it was opened) is an error, never a short tensor.
void ReadAt(const FileHandle& file, void* dst, uint64_t n, uint64_t at, const std::string& prefix) {
  uint64_t done = 0;
  while (done < n) {
    const size_t piece = static_cast<size_t>(std::min(kReadPiece, n - done));
    const ssize_t r = ::pread(file.fd, static_cast<char*>(dst) + done, piece, static_cast<off_t>(at + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) throw std::runtime_error(prefix + (r < 0 ? std::strerror(errno) : "the file is shorter than it was"));
    done += static_cast<uint64_t>(r);
  }
}

// The validated header of an open file of `size` bytes; sets `dataStart` to the file offset of
// the data buffer.
SafetensorsHeader ReadHeader(const FileHandle& file, uint64_t size, uint64_t& dataStart, const std::string& prefix) {
  unsigned char length[8];
  ReadAt(file, length, 8, 0, prefix);
  const uint64_t n = HeaderLength(length, size, prefix);
  std::string json(static_cast<size_t>(n), '\0');
  ReadAt(file, json.data(), n, 8, prefix);
  dataStart = 8 + n;
  return ParseSafetensorsHeader(json, size - dataStart, prefix);
}

void WriteAll(std::ofstream& out, const void* data, uint64_t n) {
  // std::streamsize is signed: write in pieces well inside its range.
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const uint64_t piece = std::min<uint64_t>(n, 1ull << 30);
    out.write(p, static_cast<std::streamsize>(piece));
    p += piece;
    n -= piece;
  }
}

void AppendJsonString(std::string& out, const std::string& s) {
  static const char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20) {
      out += "\\u00";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  out.push_back('"');
}

}  // namespace

const char* SafetensorsDTypeCode(c10::ScalarType type) {
  for (const auto& d : kDTypes) {
    if (d.type == type) return d.code;
  }
  throw std::runtime_error(std::string("safetensors has no dtype for ") + c10::toString(type));
}

SafetensorsHeader ParseSafetensorsHeader(std::string_view json, uint64_t dataSize, const std::string& prefix) {
  HeaderParser p(json, prefix);
  SafetensorsHeader header;
  std::unordered_set<std::string> names;
  p.SkipSpace();
  if (p.Peek() != '{') p.Fail("the header must be a JSON object, found " + p.Found());
  p.Expect('{', "");
  p.SkipSpace();
  if (p.Peek() == '}') {
    p.Expect('}', "");
  } else {
    do {
      std::string key = p.String("a key of the header");
      p.Expect(':', "after a key of the header");
      if (!names.insert(key).second) {
        p.Fail(key == "__metadata__" ? "the header has __metadata__ twice"
                                     : "tensor " + Quoted(key) + " appears twice");
      }
      if (key == "__metadata__") {
        header.metadata = ParseMetadata(p);
      } else {
        header.tensors.push_back(ParseTensor(p, std::move(key), dataSize));
      }
    } while (p.More('}', "in the header"));
  }
  // The reference writer pads the header with spaces to a multiple of 8 bytes.
  p.SkipSpace();
  if (!p.AtEnd()) p.FailAt("trailing characters after the header's object");
  CheckCoverage(header, dataSize, prefix);
  return header;
}

SafetensorsHeader ReadSafetensorsHeader(const std::string& path) {
  const std::string prefix = ReadPrefix(path);
  FileHandle file;
  const uint64_t size = OpenFile(path, file, prefix);
  uint64_t dataStart = 0;
  return ReadHeader(file, size, dataStart, prefix);
}

// Each tensor's bytes are read (pread) straight into its own storage, in file order. Not a
// mapping copied out: in this project's VMs a page fault is dear, and a mapping faults every
// 4 KB page of the file on top of the tensors' own pages (measured on a bert-base-shaped file:
// bench/safetensors-read.mjs, README "Loading a checkpoint"). Reading also keeps the process
// safe from a file truncated while it is read (a mapping would SIGBUS; a read comes back short
// and is an error), and adds nothing but the tensors to its RSS.
std::vector<std::pair<std::string, torch::Tensor>> ReadSafetensors(const std::string& path,
                                                                   std::optional<SafetensorsMetadata>* metadata) {
  const std::string prefix = ReadPrefix(path);
  FileHandle file;
  const uint64_t size = OpenFile(path, file, prefix);
  uint64_t dataStart = 0;
  SafetensorsHeader header = ReadHeader(file, size, dataStart, prefix);
  ::posix_fadvise(file.fd, 0, 0, POSIX_FADV_SEQUENTIAL);

  std::vector<size_t> order(header.tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return header.tensors[a].begin < header.tensors[b].begin; });
  std::vector<torch::Tensor> tensors(header.tensors.size());
  for (size_t i : order) {
    const SafetensorsEntry& e = header.tensors[i];
    torch::Tensor t;
    try {
      t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    } catch (const c10::Error& err) {
      throw std::runtime_error(prefix + "tensor " + Quoted(e.name) + ": " + err.what_without_backtrace());
    }
    ReadAt(file, t.data_ptr(), e.end - e.begin, dataStart + e.begin, prefix + "tensor " + Quoted(e.name) + ": ");
    tensors[i] = std::move(t);
  }

  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i)
    out.emplace_back(std::move(header.tensors[i].name), std::move(tensors[i]));
  if (metadata != nullptr) *metadata = std::move(header.metadata);
  return out;
}

void WriteSafetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::optional<SafetensorsMetadata>& metadata) {
  const std::string prefix = "cannot write safetensors file '" + path + "': ";
  std::string json = "{";
  bool first = true;
  auto separator = [&]() {
    if (!first) json.push_back(',');
    first = false;
  };
  if (metadata) {
    separator();
    json += "\"__metadata__\":{";
    std::unordered_set<std::string> keys;
    for (size_t i = 0; i < metadata->size(); ++i) {
      const auto& [key, value] = (*metadata)[i];
      if (!keys.insert(key).second) throw std::runtime_error(prefix + "metadata key " + Quoted(key) + " appears twice");
      if (i > 0) json.push_back(',');
      AppendJsonString(json, key);
      json.push_back(':');
      AppendJsonString(json, value);
    }
    json.push_back('}');
  }
  std::unordered_set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const std::string what = "tensor " + Quoted(name) + ": ";
    if (name == "__metadata__") throw std::runtime_error(prefix + "'__metadata__' cannot name a tensor");
    if (!names.insert(name).second) throw std::runtime_error(prefix + "tensor " + Quoted(name) + " appears twice");
    if (!t.defined()) throw std::runtime_error(prefix + what + "undefined tensor");
    const char* code;
    try {
      code = SafetensorsDTypeCode(t.scalar_type());
    } catch (const std::exception& e) {
      throw std::runtime_error(prefix + what + e.what());
    }
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * static_cast<uint64_t>(t.element_size());
    separator();
    AppendJsonString(json, name);
    json += ":{\"dtype\":\"";
    json += code;
    json += "\",\"shape\":[";
    for (int64_t d = 0; d < t.dim(); ++d) json += (d ? "," : "") + std::to_string(t.size(d));
    json += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  json.push_back('}');
  // Padded with spaces to a multiple of 8, as the reference writer does: the data buffer then
  // starts 8-aligned in the file.
  json.append((8 - json.size() % 8) % 8, ' ');

  const std::string tmp = path + ".tmp";
  auto fail = [&](const std::string& why) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw std::runtime_error(prefix + why);
  };
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(prefix + "cannot open '" + tmp + "' for writing");
    unsigned char length[8];
    uint64_t n = json.size();
    for (int i = 0; i < 8; ++i, n >>= 8) length[i] = static_cast<unsigned char>(n & 0xff);
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(json.data(), static_cast<std::streamsize>(json.size()));
    try {
      for (const auto& [name, t] : tensors) {
        // One tensor at a time on the CPU, so a GPU model is never copied whole.
        torch::Tensor cpu = t.detach().to(torch::kCPU).contiguous();
        WriteAll(out, cpu.data_ptr(), static_cast<uint64_t>(cpu.numel()) * static_cast<uint64_t>(cpu.element_size()));
        if (!out) break;
      }
    } catch (const c10::Error& e) {
      out.close();
      fail(e.what_without_backtrace());
    }
    out.close();
    if (!out) fail("write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail(ec.message());
}

}  // namespace torch_bert
