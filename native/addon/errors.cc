#include "addon/errors.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <regex>
#include <vector>

namespace torch_bert {

namespace {

constexpr const char* kInterpreterHeader = "The following operation failed in the TorchScript interpreter.";

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) b++;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) e--;
  return s.substr(b, e - b);
}

// "RuntimeError: ...", "builtins.ValueError: ...": the line where the original error starts.
bool IsErrorLine(const std::string& line) {
  static const std::regex pattern(R"(^[A-Za-z_][\w.]*(Error|Exception): )");
  return std::regex_search(line, pattern);
}

}  // namespace

bool SummarizeInterpreterError(const std::string& what, std::string& line) {
  const size_t at = what.find(kInterpreterHeader);
  if (at == std::string::npos) return false;
  const std::vector<std::string> lines = SplitLines(what.substr(at));

  // The traceback sections: "serialized code" (the module's TorchScript, each frame's call
  // underlined with ~~~ <--- HERE) and "original code" (where it came from), then the error.
  size_t lastTraceback = 0;
  size_t originalCode = lines.size();
  for (size_t i = 0; i < lines.size(); i++) {
    if (lines[i].rfind("Traceback of TorchScript", 0) != 0) continue;
    lastTraceback = i;
    if (lines[i].rfind("Traceback of TorchScript, original code", 0) == 0) originalCode = i;
  }
  size_t errorLine = lines.size();
  for (size_t i = lastTraceback + 1; i < lines.size(); i++) {
    if (IsErrorLine(lines[i])) {
      errorLine = i;
      break;
    }
  }
  std::string error;
  for (size_t i = errorLine; i < lines.size(); i++) {
    std::string part = Trim(lines[i]);
    if (part.empty()) continue;
    error += (error.empty() ? "" : " ") + part;
  }
  if (error.empty()) return false;
  // The error's class ("RuntimeError: ") says nothing a user can act on.
  error = std::regex_replace(error, std::regex(R"(^[A-Za-z_][\w.]*(Error|Exception): )"), "");
  // A failure in a nested interpreter call repeats the header: the innermost one tells.
  std::string inner;
  if (SummarizeInterpreterError(error, inner)) error = inner;

  // Each frame's underlined call, outermost first: module calls ("(embeddings).forward",
  // "self.encoder.forward") give the module path, the last one is the failing operation.
  static const std::regex marker(R"(^\s*(~+)\s*<--- HERE\s*$)");
  static const std::regex moduleCall(R"(^\(?(?:self\.)?([A-Za-z_][\w.]*)\)?\.forward$)");
  std::vector<std::string> spans;
  const size_t serializedEnd = std::min(originalCode, errorLine);
  for (size_t i = 1; i < serializedEnd; i++) {
    std::smatch m;
    if (!std::regex_match(lines[i], m, marker)) continue;
    const size_t col = static_cast<size_t>(m.position(1));
    const size_t len = static_cast<size_t>(m.length(1));
    if (col < lines[i - 1].size()) spans.push_back(Trim(lines[i - 1].substr(col, len)));
  }
  std::string modulePath;
  for (size_t i = 0; i + 1 < spans.size(); i++) {
    std::smatch m;
    if (std::regex_match(spans[i], m, moduleCall)) modulePath += (modulePath.empty() ? "" : ".") + m[1].str();
  }
  line = what.substr(0, at) + error;
  if (!spans.empty()) {
    line += " (in " + spans.back() + (modulePath.empty() ? "" : ", module " + modulePath) + ")";
  }
  return true;
}

}  // namespace torch_bert
