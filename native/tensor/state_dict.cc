#include "tensor/state_dict.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <unordered_map>

namespace torch_bert {

namespace {

// A value on the unpickler's stack. Containers are shared (memo entries and the stack refer
// to the same object, as in Python), so a dict filled after it was memoized is seen filled.
struct Node;
using Value = std::shared_ptr<Node>;

struct Node {
  enum Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kStorage, kTensor } kind = kNone;
  int64_t i = 0;
  double f = 0;
  std::string s;                                       // string; global "module.name"
  std::vector<Value> items;                            // tuple, list; dict as key, value, key, value...
  c10::ScalarType dtype = c10::ScalarType::Undefined;  // storage
  at::Storage storage;
  torch::Tensor tensor;
};

Value Make(Node::Kind kind) {
  auto v = std::make_shared<Node>();
  v->kind = kind;
  return v;
}

const char* KindName(Node::Kind kind) {
  static const char* names[] = {"None", "bool", "int",    "float",   "str",   "tuple",
                                "list", "dict", "global", "storage", "tensor"};
  return names[kind];
}

// torch.<Name>Storage, as torch.save names a storage's dtype.
const std::map<std::string, c10::ScalarType>& StorageTypes() {
  static const std::map<std::string, c10::ScalarType> types = {
      {"torch.FloatStorage", c10::ScalarType::Float}, {"torch.DoubleStorage", c10::ScalarType::Double},
      {"torch.HalfStorage", c10::ScalarType::Half},   {"torch.BFloat16Storage", c10::ScalarType::BFloat16},
      {"torch.LongStorage", c10::ScalarType::Long},   {"torch.IntStorage", c10::ScalarType::Int},
      {"torch.ShortStorage", c10::ScalarType::Short}, {"torch.CharStorage", c10::ScalarType::Char},
      {"torch.ByteStorage", c10::ScalarType::Byte},   {"torch.BoolStorage", c10::ScalarType::Bool},
  };
  return types;
}

class Unpickler {
 public:
  Unpickler(const std::string& pickle, caffe2::serialize::PyTorchStreamReader& reader) : p_(pickle), reader_(reader) {}

  Value Run() {
    while (true) {
      const unsigned char op = Byte();
      switch (op) {
        case 0x80:  // PROTO
          Byte();
          break;
        case 0x95:  // FRAME (protocol 4)
          Bytes(8);
          break;
        case '.':  // STOP
          if (stack_.size() != 1) Fail("malformed pickle (STOP with " + std::to_string(stack_.size()) + " values)");
          return stack_.back();
        case '(':
          marks_.push_back(stack_.size());
          break;
        case '}':
          stack_.push_back(Make(Node::kDict));
          break;
        case ']':
          stack_.push_back(Make(Node::kList));
          break;
        case ')':
          stack_.push_back(Make(Node::kTuple));
          break;
        case 'N':
          stack_.push_back(Make(Node::kNone));
          break;
        case 0x88:
        case 0x89: {
          Value v = Make(Node::kBool);
          v->i = op == 0x88;
          stack_.push_back(v);
          break;
        }
        case 'K':
          PushInt(Byte());
          break;
        case 'M': {
          const std::string b = Bytes(2);
          PushInt(static_cast<unsigned char>(b[0]) | (static_cast<unsigned char>(b[1]) << 8));
          break;
        }
        case 'J': {
          int32_t v;
          std::memcpy(&v, Bytes(4).data(), 4);  // little-endian, as the platforms libtorch ships for
          PushInt(v);
          break;
        }
        case 0x8a: {  // LONG1
          const size_t n = Byte();
          if (n > 8) Fail("an integer wider than 64 bits");
          const std::string b = Bytes(n);
          uint64_t u = 0;
          for (size_t k = 0; k < n; ++k) u |= static_cast<uint64_t>(static_cast<unsigned char>(b[k])) << (8 * k);
          if (n > 0 && n < 8 && (static_cast<unsigned char>(b[n - 1]) & 0x80)) u |= ~uint64_t{0} << (8 * n);
          PushInt(static_cast<int64_t>(u));
          break;
        }
        case 'G': {
          const std::string b = Bytes(8);
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<unsigned char>(b[k]);
          Value v = Make(Node::kFloat);
          std::memcpy(&v->f, &bits, 8);
          stack_.push_back(v);
          break;
        }
        case 'X': {  // BINUNICODE
          uint32_t n;
          std::memcpy(&n, Bytes(4).data(), 4);
          PushString(Bytes(n));
          break;
        }
        case 0x8c:  // SHORT_BINUNICODE (protocol 4)
          PushString(Bytes(Byte()));
          break;
        case 'q':
          memo_[Byte()] = Top();
          break;
        case 'r': {
          uint32_t n;
          std::memcpy(&n, Bytes(4).data(), 4);
          memo_[n] = Top();
          break;
        }
        case 0x94:  // MEMOIZE (protocol 4)
          memo_[static_cast<uint32_t>(memo_.size())] = Top();
          break;
        case 'h':
          Get(Byte());
          break;
        case 'j': {
          uint32_t n;
          std::memcpy(&n, Bytes(4).data(), 4);
          Get(n);
          break;
        }
        case 't': {
          Value t = Make(Node::kTuple);
          t->items = PopMark();
          stack_.push_back(t);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {
          const size_t n = op - 0x84;
          if (stack_.size() < n) Fail("malformed pickle (stack underflow)");
          Value t = Make(Node::kTuple);
          t->items.assign(stack_.end() - n, stack_.end());
          stack_.resize(stack_.size() - n);
          stack_.push_back(t);
          break;
        }
        case 'a': {
          Value v = Pop();
          Expect(Top(), Node::kList, "APPEND")->items.push_back(v);
          break;
        }
        case 'e': {
          std::vector<Value> items = PopMark();
          Value list = Expect(Top(), Node::kList, "APPENDS");
          list->items.insert(list->items.end(), items.begin(), items.end());
          break;
        }
        case 's': {
          Value v = Pop();
          Value k = Pop();
          Value dict = Expect(Top(), Node::kDict, "SETITEM");
          dict->items.push_back(k);
          dict->items.push_back(v);
          break;
        }
        case 'u': {
          std::vector<Value> items = PopMark();
          if (items.size() % 2) Fail("malformed pickle (SETITEMS with an odd count)");
          Value dict = Expect(Top(), Node::kDict, "SETITEMS");
          dict->items.insert(dict->items.end(), items.begin(), items.end());
          break;
        }
        case 'c': {
          Value g = Make(Node::kGlobal);
          const std::string module = Line();  // two statements: operands of + are unsequenced
          g->s = module + "." + Line();
          if (g->s != "collections.OrderedDict" && g->s != "torch._utils._rebuild_tensor_v2" &&
              g->s != "torch._utils._rebuild_parameter" && StorageTypes().count(g->s) == 0) {
            Fail("it references " + g->s +
                 ", which a state dict of tensors does not need (only tensors and containers are read)");
          }
          stack_.push_back(g);
          break;
        }
        case 'Q':
          stack_.push_back(PersistentLoad(Pop()));
          break;
        case 'R': {
          Value args = Expect(Pop(), Node::kTuple, "REDUCE");
          Value fn = Expect(Pop(), Node::kGlobal, "REDUCE");
          stack_.push_back(Reduce(fn->s, args->items));
          break;
        }
        case 'b': {  // BUILD: an OrderedDict's attributes (a state dict's _metadata) are not kept
          Pop();
          if (Top()->kind != Node::kDict && Top()->kind != Node::kTensor)
            Fail(std::string("malformed pickle (BUILD on a ") + KindName(Top()->kind) + ")");
          break;
        }
        default:
          Fail("unsupported pickle opcode 0x" + Hex(op) + " at byte " + std::to_string(pos_ - 1));
      }
    }
  }

 private:
  [[noreturn]] void Fail(const std::string& why) const { throw std::runtime_error(why); }

  static std::string Hex(unsigned v) {
    const char* d = "0123456789abcdef";
    return std::string{d[(v >> 4) & 0xF], d[v & 0xF]};
  }

  unsigned char Byte() {
    if (pos_ >= p_.size()) Fail("truncated pickle");
    return static_cast<unsigned char>(p_[pos_++]);
  }

  std::string Bytes(size_t n) {
    if (p_.size() - pos_ < n) Fail("truncated pickle");
    std::string out = p_.substr(pos_, n);
    pos_ += n;
    return out;
  }

  std::string Line() {
    const size_t end = p_.find('\n', pos_);
    if (end == std::string::npos) Fail("truncated pickle");
    std::string out = p_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return out;
  }

  void PushInt(int64_t v) {
    Value n = Make(Node::kInt);
    n->i = v;
    stack_.push_back(n);
  }

  void PushString(std::string s) {
    Value n = Make(Node::kString);
    n->s = std::move(s);
    stack_.push_back(n);
  }

  Value Top() {
    if (stack_.empty()) Fail("malformed pickle (stack underflow)");
    return stack_.back();
  }

  Value Pop() {
    Value v = Top();
    stack_.pop_back();
    return v;
  }

  void Get(uint32_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) Fail("malformed pickle (memo key " + std::to_string(key) + " unset)");
    stack_.push_back(it->second);
  }

  std::vector<Value> PopMark() {
    if (marks_.empty() || marks_.back() > stack_.size()) Fail("malformed pickle (no MARK)");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<Value> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }

  Value Expect(const Value& v, Node::Kind kind, const char* where) {
    if (v->kind != kind) {
      Fail(std::string("malformed pickle (") + where + " expected a " + KindName(kind) + ", found a " +
           KindName(v->kind) + ")");
    }
    return v;
  }

  int64_t IntAt(const std::vector<Value>& items, size_t i, const char* what) {
    if (i >= items.size() || items[i]->kind != Node::kInt) Fail(std::string("malformed tensor (") + what + ")");
    return items[i]->i;
  }

  // ('storage', torch.<Type>Storage, key, location, numel): the record data/<key>, read once
  // per key so that tensors sharing it in Python share it here.
  Value PersistentLoad(const Value& pid) {
    const auto& t = Expect(pid, Node::kTuple, "a persistent id")->items;
    if (t.size() != 5 || t[0]->kind != Node::kString || t[0]->s != "storage" || t[1]->kind != Node::kGlobal ||
        t[2]->kind != Node::kString) {
      Fail("malformed pickle (a persistent id that is not a storage)");
    }
    auto type = StorageTypes().find(t[1]->s);
    if (type == StorageTypes().end()) Fail("malformed pickle (storage type " + t[1]->s + ")");
    auto cached = storages_.find(t[2]->s);
    if (cached != storages_.end()) return cached->second;
    const std::string record = "data/" + t[2]->s;
    if (!reader_.hasRecord(record)) Fail("the archive has no record " + record);
    auto [data, size] = reader_.getRecord(record);
    Value s = Make(Node::kStorage);
    s->dtype = type->second;
    s->storage =
        at::Storage(at::Storage::use_byte_size_t(), static_cast<int64_t>(size), std::move(data), nullptr, false);
    storages_[t[2]->s] = s;
    return s;
  }

  Value Reduce(const std::string& fn, const std::vector<Value>& args) {
    if (fn == "collections.OrderedDict") {
      if (!args.empty()) Fail("malformed pickle (OrderedDict with arguments)");
      return Make(Node::kDict);
    }
    if (fn == "torch._utils._rebuild_parameter") {
      if (args.empty() || args[0]->kind != Node::kTensor) Fail("malformed parameter");
      return args[0];
    }
    if (fn != "torch._utils._rebuild_tensor_v2") Fail("malformed pickle (calls " + fn + ")");
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if (args.size() < 4 || args[0]->kind != Node::kStorage || args[2]->kind != Node::kTuple ||
        args[3]->kind != Node::kTuple || args[2]->items.size() != args[3]->items.size()) {
      Fail("malformed tensor (the arguments of _rebuild_tensor_v2)");
    }
    const Node& storage = *args[0];
    const int64_t offset = IntAt(args, 1, "offset");
    std::vector<int64_t> sizes, strides;
    for (size_t k = 0; k < args[2]->items.size(); ++k) {
      sizes.push_back(IntAt(args[2]->items, k, "size"));
      strides.push_back(IntAt(args[3]->items, k, "stride"));
    }
    // The view must lie inside its storage: libtorch would otherwise grow or overrun it.
    const int64_t element = static_cast<int64_t>(c10::elementSize(storage.dtype));
    const int64_t capacity = static_cast<int64_t>(storage.storage.nbytes()) / element;
    if (offset < 0) Fail("malformed tensor (negative offset)");
    bool empty = false;
    int64_t last = offset;  // the largest element index the view touches
    for (size_t k = 0; k < sizes.size(); ++k) {
      if (sizes[k] < 0 || strides[k] < 0) Fail("malformed tensor (negative size or stride)");
      if (sizes[k] == 0) empty = true;
    }
    if (!empty) {
      for (size_t k = 0; k < sizes.size(); ++k) {
        if (strides[k] != 0 && sizes[k] - 1 > (std::numeric_limits<int64_t>::max() - last) / strides[k])
          Fail("malformed tensor (size overflows)");
        last += (sizes[k] - 1) * strides[k];
      }
      if (last >= capacity) Fail("malformed tensor (a view past the end of its storage)");
    }
    Value t = Make(Node::kTensor);
    t->tensor = torch::empty({0}, torch::TensorOptions().dtype(storage.dtype));
    t->tensor.set_(storage.storage, empty ? 0 : offset, sizes, strides);
    return t;
  }

  const std::string& p_;
  caffe2::serialize::PyTorchStreamReader& reader_;
  size_t pos_ = 0;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Value> memo_;
  std::unordered_map<std::string, Value> storages_;
};

// Throws unless `path` is a regular file in torch.save's zip format, saying so where it is in
// the legacy format (which would otherwise fail as a corrupt archive).
void CheckZipArchive(const std::string& path, const std::string& prefix) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw std::runtime_error(prefix + "no such file");
  if (!std::filesystem::is_regular_file(path, ec)) throw std::runtime_error(prefix + "not a regular file");
  // torch.save's zip format starts with a zip local file header; the legacy format (torch <
  // 1.6, or _use_new_zipfile_serialization=False) is a bare pickle stream, opcode PROTO first.
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(prefix + "cannot open the file");
  char magic[4] = {0, 0, 0, 0};
  in.read(magic, 4);
  if (std::memcmp(magic, "PK\x03\x04", 4) != 0) {
    if (static_cast<unsigned char>(magic[0]) == 0x80) {
      throw std::runtime_error(prefix +
                               "it is in torch.save's legacy (non-zip) format, which is not supported; re-save it "
                               "with torch >= 1.6 (torch.save(torch.load(f), f)) or convert it to safetensors");
    }
    throw std::runtime_error(prefix + "not a torch.save zip archive");
  }
}

// The archive's data.pkl unpickled, its tensors on the archive's records; any failure, libtorch's
// reader's included, as a std::runtime_error after `prefix`.
Value UnpickleArchive(const std::string& path, const std::string& prefix) {
  try {
    // Records are read from the file one at a time (the archive is never held whole).
    caffe2::serialize::PyTorchStreamReader reader(path);
    auto [data, size] = reader.getRecord("data.pkl");
    const std::string pickle(static_cast<const char*>(data.get()), size);
    return Unpickler(pickle, reader).Run();
  } catch (const c10::Error& e) {
    throw std::runtime_error(prefix + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw std::runtime_error(prefix + e.what());
  }
}

// The entries of `root`, in order; throws unless it is a dict of string keys to tensors.
std::vector<std::pair<std::string, torch::Tensor>> DictOfTensors(const Node& root, const std::string& prefix) {
  if (root.kind != Node::kDict)
    throw std::runtime_error(prefix + "it does not hold a dict of tensors (found a " + KindName(root.kind) + ")");
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (size_t k = 0; k + 1 < root.items.size(); k += 2) {
    const Node& key = *root.items[k];
    const Node& value = *root.items[k + 1];
    if (key.kind != Node::kString) {
      throw std::runtime_error(prefix + "it does not hold a dict of tensors (it has a " + KindName(key.kind) + " key)");
    }
    if (value.kind != Node::kTensor) {
      throw std::runtime_error(prefix + "it does not hold a dict of tensors ('" + key.s + "' is a " +
                               KindName(value.kind) + ")");
    }
    tensors.emplace_back(key.s, value.tensor);
  }
  return tensors;
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> ReadTorchStateDict(const std::string& path) {
  const std::string prefix = "cannot load a state dict from '" + path + "': ";
  CheckZipArchive(path, prefix);
  const Value root = UnpickleArchive(path, prefix);
  return DictOfTensors(*root, prefix);
}

}  // namespace torch_bert
