#include "runtime/file_lock.h"

#include <sys/file.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>

#include "addon/arguments.h"
#include "addon/errors.h"

namespace torch_bert {

namespace {

// tryLockFile(fd): flock(fd, LOCK_EX | LOCK_NB). Never blocks: a blocking flock would stop the
// event loop for as long as another process downloads, so the caller polls. True when taken,
// false while another open file description holds it; any other failure (ENOLCK, a file system
// without flock) throws. The lock is released by closing the descriptor, or by the kernel when
// the process dies.
Napi::Value TryLockFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const int fd = static_cast<int>(ReadInteger(info[0], "tryLockFile: fd", 0, INT_MAX));
    int result;
    do {
      result = flock(fd, LOCK_EX | LOCK_NB);
    } while (result != 0 && errno == EINTR);
    if (result == 0) return Napi::Boolean::New(env, true);
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
    throw std::runtime_error("flock of file descriptor " + std::to_string(fd) + " failed: " + std::strerror(errno));
  });
}

}  // namespace

void RegisterFileLock(Napi::Env env, Napi::Object exports) {
  exports.Set("tryLockFile", Napi::Function::New<TryLockFile>(env, "tryLockFile"));
}

}  // namespace torch_bert
