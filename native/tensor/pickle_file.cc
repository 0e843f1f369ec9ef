#include "tensor/pickle_file.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/serialize.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace torch_bert {

namespace {

// The storage class torch.save names for a dtype (torch.<Name>Storage).
const char* StorageName(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Float:
      return "FloatStorage";
    case c10::ScalarType::Double:
      return "DoubleStorage";
    case c10::ScalarType::Half:
      return "HalfStorage";
    case c10::ScalarType::BFloat16:
      return "BFloat16Storage";
    case c10::ScalarType::Long:
      return "LongStorage";
    case c10::ScalarType::Int:
      return "IntStorage";
    case c10::ScalarType::Short:
      return "ShortStorage";
    case c10::ScalarType::Char:
      return "CharStorage";
    case c10::ScalarType::Byte:
      return "ByteStorage";
    case c10::ScalarType::Bool:
      return "BoolStorage";
    default:
      throw std::runtime_error(std::string("cannot save a tensor of dtype ") + c10::toString(type));
  }
}

// Protocol-2 pickle opcodes (Python's pickletools.py).
namespace op {
constexpr char kProto = '\x80';
constexpr char kStop = '.';
constexpr char kMark = '(';
constexpr char kEmptyDict = '}';
constexpr char kSetItems = 'u';
constexpr char kEmptyList = ']';
constexpr char kAppends = 'e';
constexpr char kEmptyTuple = ')';
constexpr char kTuple = 't';
constexpr char kGlobal = 'c';
constexpr char kReduce = 'R';
constexpr char kBinPersId = 'Q';
constexpr char kBinInt1 = 'K';
constexpr char kBinInt = 'J';
constexpr char kLong1 = '\x8a';
constexpr char kBinFloat = 'G';
constexpr char kBinUnicode = 'X';
constexpr char kNewTrue = '\x88';
constexpr char kNewFalse = '\x89';
}  // namespace op

class Pickler {
 public:
  std::vector<char> bytes;
  // Tensors in the order of their storage keys "0", "1", ...: contiguous CPU copies whose
  // storage holds exactly their elements.
  std::vector<torch::Tensor> tensors;

  void Op(char c) { bytes.push_back(c); }

  void Raw(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    bytes.insert(bytes.end(), p, p + n);
  }

  void Int(int64_t v) {
    if (v >= 0 && v < 256) {
      Op(op::kBinInt1);
      bytes.push_back(static_cast<char>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      Op(op::kBinInt);
      int32_t le = static_cast<int32_t>(v);
      Raw(&le, 4);  // little-endian on every platform libtorch ships for
    } else {
      Op(op::kLong1);
      bytes.push_back(8);
      Raw(&v, 8);  // two's complement, little-endian
    }
  }

  void Float(double v) {
    Op(op::kBinFloat);
    unsigned char be[8];
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    for (int i = 7; i >= 0; --i, bits >>= 8) be[i] = static_cast<unsigned char>(bits & 0xff);
    Raw(be, 8);
  }

  void String(const std::string& s) {
    Op(op::kBinUnicode);
    uint32_t n = static_cast<uint32_t>(s.size());
    Raw(&n, 4);
    Raw(s.data(), s.size());
  }

  void Global(const std::string& module, const std::string& name) {
    Op(op::kGlobal);
    Raw(module.data(), module.size());
    bytes.push_back('\n');
    Raw(name.data(), name.size());
    bytes.push_back('\n');
  }

  void IntTuple(c10::IntArrayRef values) {
    if (values.empty()) {
      Op(op::kEmptyTuple);
      return;
    }
    Op(op::kMark);
    for (int64_t v : values) Int(v);
    Op(op::kTuple);
  }

  // torch._utils._rebuild_tensor_v2(persistent storage, offset, size, stride, requires_grad,
  // OrderedDict()), as Python's torch.save writes a tensor.
  void Tensor(const torch::Tensor& value) {
    torch::Tensor t = value.detach().to(torch::kCPU).contiguous().clone();
    const std::string key = std::to_string(tensors.size());
    tensors.push_back(t);
    Global("torch._utils", "_rebuild_tensor_v2");
    Op(op::kMark);
    Op(op::kMark);
    String("storage");
    Global("torch", StorageName(t.scalar_type()));
    String(key);
    String("cpu");
    Int(t.numel());
    Op(op::kTuple);
    Op(op::kBinPersId);
    Int(0);
    IntTuple(t.sizes());
    IntTuple(t.strides());
    Op(op::kNewFalse);
    Global("collections", "OrderedDict");
    Op(op::kEmptyTuple);
    Op(op::kReduce);
    Op(op::kTuple);
    Op(op::kReduce);
  }

  void Value(const c10::IValue& v) {
    if (v.isTensor()) {
      Tensor(v.toTensor());
    } else if (v.isBool()) {
      Op(v.toBool() ? op::kNewTrue : op::kNewFalse);
    } else if (v.isInt()) {
      Int(v.toInt());
    } else if (v.isDouble()) {
      Float(v.toDouble());
    } else if (v.isString()) {
      String(v.toStringRef());
    } else if (v.isList()) {
      Op(op::kEmptyList);
      if (v.toListRef().empty()) return;
      Op(op::kMark);
      for (const auto& item : v.toListRef()) Value(item);
      Op(op::kAppends);
    } else {
      throw std::runtime_error("cannot save a value of type " + v.tagKind());
    }
  }
};

}  // namespace

void WriteTorchSaveFile(const std::vector<std::pair<std::string, c10::IValue>>& entries, const std::string& path,
                        const std::string& what) {
  const std::string prefix = "cannot write " + what + " to '" + path + "': ";
  std::vector<char> archive;
  try {
    Pickler pickler;
    pickler.Op(op::kProto);
    pickler.bytes.push_back(2);
    pickler.Op(op::kEmptyDict);
    if (!entries.empty()) {
      pickler.Op(op::kMark);
      for (const auto& [name, value] : entries) {
        pickler.String(name);
        pickler.Value(value);
      }
      pickler.Op(op::kSetItems);
    }
    pickler.Op(op::kStop);

    caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t n) -> size_t {
      const char* p = static_cast<const char*>(data);
      archive.insert(archive.end(), p, p + n);
      return n;
    });
    for (size_t i = 0; i < pickler.tensors.size(); ++i) {
      const torch::Tensor& t = pickler.tensors[i];
      writer.writeRecord("data/" + std::to_string(i), t.data_ptr(),
                         static_cast<size_t>(t.numel()) * static_cast<size_t>(t.element_size()));
    }
    writer.writeRecord("data.pkl", pickler.bytes.data(), pickler.bytes.size());
    writer.writeEndOfFile();
  } catch (const c10::Error& e) {
    throw std::runtime_error(prefix + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw std::runtime_error(prefix + e.what());
  }

  WriteFileBytes(path, archive.data(), archive.size(), prefix);
}

void WriteFileBytes(const std::string& path, const char* data, size_t size, const std::string& prefix) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(prefix + std::strerror(errno));
  size_t written = 0;
  int error = 0;
  while (written < size) {
    ssize_t n = ::write(fd, data + written, size - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = errno;
      break;
    }
    written += static_cast<size_t>(n);
  }
  // close reports what a network filesystem defers (e.g. a quota exceeded).
  if (::close(fd) != 0 && error == 0) error = errno;
  std::error_code ec;
  if (error == 0) std::filesystem::rename(tmp, path, ec);
  if (error != 0 || ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw std::runtime_error(prefix + (error != 0 ? std::strerror(error) : ec.message()));
  }
}

c10::IValue ReadPickleFile(const std::string& path, const std::string& what) {
  const std::string prefix = "cannot load " + what + " from '" + path + "': ";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw std::runtime_error(prefix + "no such file");
  if (!std::filesystem::is_regular_file(path, ec)) throw std::runtime_error(prefix + "not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(prefix + "cannot open the file");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error(prefix + "read failed");
  try {
    return torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    throw std::runtime_error(prefix + e.what_without_backtrace() + " (is it a file written by torch.save?)");
  } catch (const std::exception& e) {
    throw std::runtime_error(prefix + e.what() + " (is it a file written by torch.save?)");
  }
}

}  // namespace torch_bert
