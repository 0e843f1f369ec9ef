#include "pickle_file.h"

#include <torch/serialize.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

namespace torch_bert {

void WritePickleFile(const c10::IValue& value, const std::string& path, const std::string& what) {
  const std::string prefix = "cannot write " + what + " to '" + path + "': ";
  std::vector<char> bytes;
  try {
    bytes = torch::pickle_save(value);
  } catch (const c10::Error& e) {
    throw std::runtime_error(prefix + e.what_without_backtrace());
  }
  // Write a sibling file and rename it, so a reader never sees a half-written file.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(prefix + "cannot open the file for writing");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      throw std::runtime_error(prefix + "write failed");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw std::runtime_error(prefix + ec.message());
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
