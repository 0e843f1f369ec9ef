#include "distributed/process_group.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "distributed/process_group_internal.h"

#ifdef TORCH_BERT_GLOO
#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <optional>

#include <torch/version.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

#ifdef TORCH_BERT_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace torch_bert {

namespace {

std::string Variable(const char* name) {
  const char* value = std::getenv(name);
  if (!value || !*value)
    throw std::runtime_error(std::string("distributed: the environment variable ") + name + " is not set");
  return value;
}

int IntegerVariable(const char* name, int min, int max) {
  const std::string text = Variable(name);
  char* end = nullptr;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (*end != '\0' || value < min || value > max) {
    std::ostringstream message;
    message << "distributed: " << name << "='" << text << "' is not an integer in [" << min << ", " << max << "]";
    throw std::runtime_error(message.str());
  }
  return static_cast<int>(value);
}

std::string Seconds(std::chrono::milliseconds timeout) {
  std::ostringstream out;
  out << static_cast<double>(timeout.count()) / 1000 << " s";
  return out.str();
}

#ifdef TORCH_BERT_GLOO
struct Joined {
  RankEnvironment env;
  std::chrono::milliseconds timeout{0};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  // Whether the group routes CUDA tensors to NCCL (else CUDA tensors go to Gloo).
  bool ncclForCuda = false;
};

std::mutex joinedMutex;
std::unique_ptr<Joined> joined;

bool IsLoopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

// Gloo's device: the interface named by GLOO_SOCKET_IFNAME (as torch.distributed reads it),
// loopback when the master is on loopback (one machine), else this host's address.
std::shared_ptr<::gloo::transport::Device> GlooDevice(const std::string& masterAddr) {
  if (const char* name = std::getenv("GLOO_SOCKET_IFNAME"); name && *name) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(name);
  }
  if (IsLoopback(masterAddr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// torchrun with its static rendezvous serves the store itself (TORCHELASTIC_USE_AGENT_STORE=True),
// on MASTER_PORT: every rank, rank 0 included, is then a client, under the prefix of the
// launch's attempt, as torch.distributed's env:// rendezvous does.
bool AgentServesStore() {
  const char* value = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  return value && std::string(value) == "True";
}

// The group over a Gloo backend. libtorch 2.0 split c10d's ProcessGroup from its Backends:
// 1.13's ProcessGroupGloo is the group itself; 2.x's is a Backend that a ProcessGroup routes
// tensors to by device (as torch.distributed.init_process_group("gloo") sets it up: CPU and
// CUDA tensors to Gloo; NCCL takes CUDA's place afterwards where it is used, AddNccl). The
// Reducer and the collectives take the ProcessGroup either way.
c10::intrusive_ptr<c10d::ProcessGroup> GlooGroup(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                 const c10::intrusive_ptr<c10d::ProcessGroupGloo::Options>& options) {
#if TORCH_VERSION_MAJOR >= 2
  auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
  auto group = c10::make_intrusive<c10d::ProcessGroup>(store, rank, size);
  group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, backend);
  group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::GLOO, backend);
  group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
  return group;
#else
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
#endif
}

#ifdef TORCH_BERT_NCCL
// Whether this rank's CUDA tensors can go to NCCL: NCCL (2.5 on) refuses two ranks on one GPU
// ("Duplicate GPU detected"), so every local rank needs a GPU of its own, cuda:LOCAL_RANK.
// Otherwise (fewer GPUs than local ranks, or none) CUDA tensors stay on Gloo, which copies
// them through host memory.
bool NcclUsable(const RankEnvironment& env) {
  const int gpus = c10::cuda::device_count();
  return gpus > 0 && env.localWorldSize <= gpus;
}

// Adds NCCL for CUDA tensors, as init_process_group("cpu:gloo,cuda:nccl") does: the small
// Float64 all-reduces on CPU tensors stay on Gloo, the gradient buckets and the broadcasts of
// CUDA weights go to NCCL. The rank's device becomes current first, as torchrun's scripts do
// with torch.cuda.set_device(LOCAL_RANK): NCCL creates its communicators, lazily at the first
// collective, on the current device. `timeout` is NCCL's collective timeout (its watchdog's).
void AddNccl(c10d::ProcessGroup& group, const c10::intrusive_ptr<c10d::Store>& store, const RankEnvironment& env,
             std::chrono::milliseconds timeout) {
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(env.localRank));
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  auto backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env.rank, env.worldSize, options);
  group.setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, backend);
}
#endif

// A join's failure said in its own words (too few ranks, stopped on request): ConnectStore's
// handler passes it on unwrapped.
struct JoinError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Set by CancelJoin (Ctrl-C, the launcher's stop) while a join waits or is queued; cleared by
// ClearJoinCancel when a join is queued (not when it starts: a cancel may come in between).
std::atomic<bool> joinCancelled{false};

void ThrowIfCancelled() {
  if (joinCancelled.load()) throw JoinError("distributed: the rendezvous was stopped before every rank joined");
}

using Clock = std::chrono::steady_clock;

// addr:port's TCP addresses (getaddrinfo's list, freed with the pointer); null when it does not resolve.
using Addresses = std::unique_ptr<addrinfo, decltype(&freeaddrinfo)>;
Addresses Resolve(const std::string& addr, uint16_t port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(addr.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) found = nullptr;
  return Addresses(found, &freeaddrinfo);
}

// What a connection to addr:port found: nothing (refused, or not accepted within `wait`), a peer
// that waits to be asked, as c10d's store server does, or one that spoke or hung up first (an SSH
// or mail server's banner, a proxy without a backend), which no store does. c10d's client would
// read such bytes as its answers: a background thread of 1.13's took a banner for a length and
// aborted the process (std::bad_alloc, SIGABRT). The connection is closed after the look (1.13's
// store server takes a client that leaves without a word in its stride).
enum class Peer { kNone, kWaits, kSpoke, kHungUp };

// A connected socket's peer: whether it spoke or hung up within `listen` of the connection.
Peer FirstWord(int fd, std::chrono::milliseconds listen) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(listen.count())) != 1) return Peer::kWaits;
  char byte = 0;
  return recv(fd, &byte, 1, MSG_PEEK) > 0 ? Peer::kSpoke : Peer::kHungUp;
}

Peer Probe(const std::string& addr, uint16_t port, std::chrono::milliseconds wait) {
  const Addresses found = Resolve(addr, port);
  Peer peer = Peer::kNone;
  for (const addrinfo* a = found.get(); a && peer == Peer::kNone; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    bool accepted = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
    if (!accepted && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int error = 0;
      socklen_t size = sizeof(error);
      accepted = poll(&p, 1, static_cast<int>(wait.count())) == 1 &&
                 getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 && error == 0;
    }
    // A banner comes with the accept; on another host a round trip later: `wait` covers both.
    if (accepted) peer = FirstWord(fd, wait);
    close(fd);
  }
  return peer;
}

// A client's store, once the master accepts connections: until then the join looks every 100 ms,
// checking the cancel between looks, until the deadline. 1.13's client would retry its connect
// alone until its timeout, which nothing interrupts, logging an error line at every try.
c10::intrusive_ptr<c10d::Store> ConnectClient(const RankEnvironment& env, c10d::TCPStoreOptions options,
                                              Clock::time_point deadline, const std::string& where) {
  const auto timeout = options.timeout;
  Peer peer;
  while ((peer = Probe(env.masterAddr, env.masterPort, std::chrono::milliseconds(100))) == Peer::kNone) {
    ThrowIfCancelled();
    if (Clock::now() >= deadline) {
      throw JoinError("distributed: rank " + std::to_string(env.rank) + " cannot reach the master at " + where +
                      " within " + Seconds(timeout) +
                      " (nothing accepted a connection there: is rank 0 started, with the same MASTER_ADDR and "
                      "MASTER_PORT?)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (peer != Peer::kWaits) {
    throw JoinError(
        "distributed: rank " + std::to_string(env.rank) + ": something at " + where +
        " accepted the connection but did not answer as the rendezvous store (" +
        (peer == Peer::kSpoke ? "it spoke first, in another protocol" : "it closed the connection at once") +
        "): is MASTER_PORT the port rank 0 serves?");
  }
  // Whole seconds (1.13 truncates the connect's timeout to seconds); the store's own, for its waits, is the join's.
  options.timeout = std::max<std::chrono::milliseconds>(
      std::chrono::seconds(1), std::chrono::duration_cast<std::chrono::seconds>(deadline - Clock::now()));
  auto store = c10::make_intrusive<c10d::TCPStore>(env.masterAddr, options);
  store->setTimeout(timeout);
  return store;
}

// Whether a connected socket's peer is `a` (address and port). c10d's client connects IPv6
// sockets, so an IPv4 master is their peer as an IPv4-mapped address (::ffff:127.0.0.1).
bool SamePeer(const sockaddr_storage& peer, const sockaddr* a) {
  if (peer.ss_family == AF_INET6 && a->sa_family == AF_INET) {
    const auto& p = reinterpret_cast<const sockaddr_in6&>(peer);
    const auto* q = reinterpret_cast<const sockaddr_in*>(a);
    return IN6_IS_ADDR_V4MAPPED(&p.sin6_addr) && p.sin6_port == q->sin_port &&
           std::memcmp(&p.sin6_addr.s6_addr[12], &q->sin_addr.s_addr, 4) == 0;
  }
  if (peer.ss_family != a->sa_family) return false;
  if (a->sa_family == AF_INET) {
    const auto& p = reinterpret_cast<const sockaddr_in&>(peer);
    const auto* q = reinterpret_cast<const sockaddr_in*>(a);
    return p.sin_port == q->sin_port && p.sin_addr.s_addr == q->sin_addr.s_addr;
  }
  if (a->sa_family == AF_INET6) {
    const auto& p = reinterpret_cast<const sockaddr_in6&>(peer);
    const auto* q = reinterpret_cast<const sockaddr_in6*>(a);
    return p.sin6_port == q->sin6_port && std::memcmp(&p.sin6_addr, &q->sin6_addr, sizeof(in6_addr)) == 0;
  }
  return false;
}

// Shuts down this process's connections to addr:port (found through /proc/self/fd): a read
// blocked on one of them returns.
void ShutDownConnectionsTo(const std::string& addr, uint16_t port) {
  const Addresses found = Resolve(addr, port);
  if (!found) return;
  if (DIR* fds = opendir("/proc/self/fd")) {
    while (const dirent* entry = readdir(fds)) {
      char* end = nullptr;
      const long fd = std::strtol(entry->d_name, &end, 10);
      sockaddr_storage peer{};
      socklen_t size = sizeof(peer);
      if (*end != '\0' || getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &size) != 0) continue;
      for (const addrinfo* a = found.get(); a; a = a->ai_next) {
        if (SamePeer(peer, a->ai_addr)) shutdown(static_cast<int>(fd), SHUT_RDWR);
      }
    }
    closedir(fds);
  }
}

// 1.13's store client reads its answers without a timeout, so something on the master's port that
// accepts and never answers (another service, a proxy) held the join until that peer closed. From
// the start of a join until its end, the watchdog shuts this process's connections to the master
// down once the join is overdue (its deadline, and the grace within which the join's own waits
// end with their own message) or cancelled for a moment: the blocked read returns, and the join
// fails with `Fired()` set.
class StoreWatchdog {
 public:
  StoreWatchdog(const RankEnvironment& env, Clock::time_point overdue)
      : thread_([this, addr = env.masterAddr, port = env.masterPort, overdue] { Watch(addr, port, overdue); }) {}
  ~StoreWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  bool Fired() {
    std::lock_guard<std::mutex> lock(mutex_);
    return fired_;
  }

 private:
  void Watch(const std::string& addr, uint16_t port, Clock::time_point overdue) {
    std::unique_lock<std::mutex> lock(mutex_);
    std::optional<Clock::time_point> cancelledAt;
    while (!done_) {
      if (!cancelledAt && joinCancelled.load()) cancelledAt = Clock::now();
      if (Clock::now() >= overdue || (cancelledAt && Clock::now() >= *cancelledAt + std::chrono::seconds(1))) {
        // Under the lock: a join that has ended (done_) is never cut.
        fired_ = true;
        ShutDownConnectionsTo(addr, port);
        return;
      }
      wake_.wait_for(lock, std::chrono::milliseconds(100));
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;
  bool fired_ = false;
  std::thread thread_;
};

// The join's own keys in the store (Gloo's are under "gloo/").
const std::string kWorldSizeKey = "torch-bert/world-size";
const std::string kRefusedKey = "torch-bert/refused";
const std::string kJoinedKey = "torch-bert/joined";

// A rank that cannot join says why in the store before it throws, so that the ranks still waiting
// for it stop at once with the same message (CheckEveryRankJoined) instead of at the timeout.
[[noreturn]] void Refuse(c10d::Store& store, const std::string& message) {
  store.set(kRefusedKey, std::vector<uint8_t>(message.begin(), message.end()));
  throw JoinError(message);
}

// Rank 0's world size, which every other rank compares with its own (AgreeOnWorldSize). Set by the
// server rank as soon as its store serves, before any rank can count itself in.
void PublishWorldSize(c10d::Store& store, const RankEnvironment& env) {
  const std::string size = std::to_string(env.worldSize);
  store.set(kWorldSizeKey, std::vector<uint8_t>(size.begin(), size.end()));
}

// A client's first exchange with the store: the world size rank 0 published, awaited (rank 0 sets
// it a moment after its store serves) and compared with this rank's. `check` is the first request
// because its answer is one byte that c10d validates: a peer that is not the store yet waited to
// be asked (a web server, a store of another PyTorch) fails it with an error, where a read of a
// number or a value takes whatever bytes come (a count that passes, a length to allocate).
void AgreeOnWorldSize(c10d::Store& store, const RankEnvironment& env, Clock::time_point deadline,
                      const std::string& where) {
  while (!store.check({kWorldSizeKey}) && Clock::now() < deadline) {
    ThrowIfCancelled();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!store.check({kWorldSizeKey})) return;  // Not published by the deadline: the count says so.
  const std::vector<uint8_t> value = store.get(kWorldSizeKey);
  const std::string size(value.begin(), value.end());
  if (size == std::to_string(env.worldSize)) return;
  Refuse(store, "distributed: rank " + std::to_string(env.rank) + " has WORLD_SIZE=" + std::to_string(env.worldSize) +
                    " but rank 0 (serving the rendezvous on " + where + ") has WORLD_SIZE=" + size +
                    ": start every rank with the same WORLD_SIZE");
}

// Each rank number joins once (rank 0's is, by its port: ThrowIfPortInUse): a second process with the same RANK (a
// launch that started one twice) would count itself in for a rank that is missing, and Gloo's rendezvous would then
// pair it with the others under the first one's keys (measured: "Connect timeout" after 30 s, or both training as one
// rank).
void ClaimRank(c10d::Store& store, const RankEnvironment& env, const std::string& where) {
  const std::string rank = std::to_string(env.rank);
  if (store.add("torch-bert/rank/" + rank, 1) == 1) return;
  Refuse(store, "distributed: two processes joined the rendezvous on " + where + " as rank " + rank + " (RANK=" + rank +
                    " was started twice): give each process its own RANK, 0 to " + std::to_string(env.worldSize - 1));
}

// The reason a rank that could not join left in the store (Refuse), if one did.
std::optional<std::string> Refusal(c10d::Store& store) {
  if (!store.check({kRefusedKey})) return std::nullopt;
  const std::vector<uint8_t> value = store.get(kRefusedKey);
  return std::string(value.begin(), value.end());
}

// Every rank counts itself in once its store is connected, then waits for the count. 1.13's
// TCPStore server waits for its clients up to the timeout and then returns as if they had all
// come (2.x throws), so rank 0 alone went on to Gloo's rendezvous and waited a second timeout
// there, to fail with "could not connect to the other ranks (Socket Timeout)". The store's own
// wait is therefore off (ConnectStore) and the wait here is the only one: bounded by the timeout
// from the join's start (at least a moment, for a rank that connected at its very end), checking
// the cancel and another rank's refusal between its looks, it says how many ranks came. Gloo's
// rendezvous, which nothing interrupts, then starts with every rank there.
c10::intrusive_ptr<c10d::Store> CheckEveryRankJoined(c10::intrusive_ptr<c10d::Store> store, const RankEnvironment& env,
                                                     Clock::time_point start, std::chrono::milliseconds timeout,
                                                     const std::string& where) {
  int64_t joinedRanks = store->add(kJoinedKey, 1);
  const auto deadline = std::max(start + timeout, Clock::now() + std::chrono::seconds(1));
  while (joinedRanks < env.worldSize && Clock::now() < deadline) {
    ThrowIfCancelled();
    if (const auto refusal = Refusal(*store)) {
      // The store closes with rank 0: it lingers a moment so that the other waiting ranks, which
      // look every 10 ms, read the reason too rather than lose the master.
      if (env.rank == 0) std::this_thread::sleep_for(std::chrono::seconds(1));
      throw JoinError(*refusal);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    joinedRanks = store->add(kJoinedKey, 0);
  }
  if (joinedRanks < env.worldSize) {
    throw JoinError("distributed: only " + std::to_string(joinedRanks) + " of " + std::to_string(env.worldSize) +
                    " ranks joined the rendezvous on " + where + " within " + Seconds(timeout) +
                    " (each rank needs the same WORLD_SIZE, MASTER_ADDR and MASTER_PORT)");
  }
  return store;
}

// Whether a listening socket can be bound to `port` on the wildcard address of `family` (as
// c10d's server binds it, SO_REUSEADDR); `inUse` is set when the bind failed for EADDRINUSE.
bool CanBind(int family, uint16_t port, bool& inUse) {
  const int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  sockaddr_storage addr{};
  if (family == AF_INET6) {
    auto& a = reinterpret_cast<sockaddr_in6&>(addr);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(port);
  } else {
    auto& a = reinterpret_cast<sockaddr_in&>(addr);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(port);
  }
  const socklen_t size = family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  const bool bound = bind(fd, reinterpret_cast<sockaddr*>(&addr), size) == 0 && listen(fd, 1) == 0;
  inUse = inUse || (!bound && errno == EADDRINUSE);
  close(fd);
  return bound;
}

// Rank 0's port taken, found before c10d's server tries it: its attempt logs three lines of its
// own (glog warnings on bind) before the error. A port taken between this look and c10d's bind
// still ends in ConnectStore's message, those lines included.
void ThrowIfPortInUse(const RankEnvironment& env, const std::string& where) {
  bool inUse = false;
  if (CanBind(AF_INET6, env.masterPort, inUse) || CanBind(AF_INET, env.masterPort, inUse) || !inUse) return;
  throw JoinError("distributed: rank 0 cannot serve the rendezvous on " + where +
                  ": the port is already in use (by another program, or by a rank 0 already started: give each "
                  "process its own RANK, or choose another MASTER_PORT)");
}

// How far a client's join got, which says what a failure of the store means: before the store
// answered (kHandshake), the peer is not the store; after (kJoining), the master went away.
enum class Stage { kConnecting, kHandshake, kJoining };

// A client's store (ConnectClient), its first exchange (AgreeOnWorldSize) and its rank claimed;
// `stage` follows it.
c10::intrusive_ptr<c10d::Store> JoinAsClient(const RankEnvironment& env, const c10d::TCPStoreOptions& options,
                                             Clock::time_point deadline, const std::string& where, Stage& stage) {
  auto store = ConnectClient(env, options, deadline, where);
  stage = Stage::kHandshake;
  AgreeOnWorldSize(*store, env, deadline, where);
  stage = Stage::kJoining;
  ClaimRank(*store, env, where);
  return store;
}

// A failure of the join, other than its own (JoinError), in one line that says what happened.
[[noreturn]] void ThrowJoinFailure(const RankEnvironment& env, const c10d::TCPStoreOptions& options,
                                   const std::string& what, Stage stage, const std::string& where) {
  const std::string line = what.substr(0, what.find('\n'));
  const std::string rank = std::to_string(env.rank);
  if (options.isServer && (what.find("in use") != std::string::npos || what.find("EADDRINUSE") != std::string::npos)) {
    throw std::runtime_error("distributed: rank 0 cannot serve the rendezvous on " + where +
                             ": the port is already in use (choose another MASTER_PORT)");
  }
  if (options.isServer) {
    throw std::runtime_error("distributed: rank 0 cannot serve the rendezvous on " + where + " (" + line +
                             "): not every rank joined within " + Seconds(options.timeout));
  }
  if (stage == Stage::kHandshake && !AgentServesStore()) {
    // c10d's complaints about an answer it did not expect ("ready or not_ready response expected")
    // name its protocol's messages; the system's errors (a reset) say what the peer did.
    const std::string answer = line.find("expected") != std::string::npos ? "it answered in another protocol" : line;
    throw std::runtime_error("distributed: rank " + rank + ": something at " + where +
                             " accepted the connection but did not answer as the rendezvous store (" + answer +
                             "): is MASTER_PORT the port rank 0 serves?");
  }
  if (stage == Stage::kJoining) {
    throw std::runtime_error("distributed: rank " + rank + " lost the master at " + where + " during the rendezvous (" +
                             line +
                             "): rank 0 ended before every rank joined; see its error, then start every rank again");
  }
  // torchrun's agent serves the store from its own PyTorch, and c10d's store protocol changed in
  // 2.x (a client's first message validates the server): a torchrun of another PyTorch than
  // this libtorch accepts the connection and then resets it, until the timeout.
  const std::string agent =
      AgentServesStore()
          ? "; the store is torchrun's: launch with the torchrun of PyTorch " + std::string(TORCH_VERSION) +
                " (this libtorch's; another version's store speaks another protocol), or with torch-bert's "
                "--nproc-per-node"
          : "";
  throw std::runtime_error("distributed: rank " + rank + " cannot reach the master at " + where + " within " +
                           Seconds(options.timeout) + " (" + line + ")" + agent);
}

c10::intrusive_ptr<c10d::Store> ConnectStore(const RankEnvironment& env, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions options;
  options.port = env.masterPort;
  options.isServer = env.rank == 0 && !AgentServesStore();
  options.numWorkers = static_cast<size_t>(env.worldSize);
  // Without torchrun's agent, the join's own count (CheckEveryRankJoined) waits for the ranks, once
  // and against one deadline: 1.13's server wait returns at its timeout as if every rank had come.
  options.waitWorkers = AgentServesStore();
  options.timeout = timeout;
  const std::string where = env.masterAddr + ":" + std::to_string(env.masterPort);
  const auto start = Clock::now();
  // Ranks that connect to rank 0's store (torchrun's agent store is its own): see StoreWatchdog. The
  // grace lets the join's own waits, which end by the deadline, say why first.
  std::optional<StoreWatchdog> watchdog;
  if (!options.isServer && !AgentServesStore()) watchdog.emplace(env, start + timeout + std::chrono::seconds(3));
  Stage stage = Stage::kConnecting;
  try {
    if (AgentServesStore()) {
      auto store = ConnectClient(env, options, start + timeout, where);
      const char* restarts = std::getenv("TORCHELASTIC_RESTART_COUNT");
      return c10::make_intrusive<c10d::PrefixStore>(std::string("/worker/attempt_") + (restarts ? restarts : "0"),
                                                    store);
    }
    c10::intrusive_ptr<c10d::Store> store;
    if (options.isServer) {
      ThrowIfPortInUse(env, where);
      store = c10::make_intrusive<c10d::TCPStore>(env.masterAddr, options);
      PublishWorldSize(*store, env);
    } else {
      store = JoinAsClient(env, options, start + timeout, where, stage);
    }
    return CheckEveryRankJoined(store, env, start, timeout, where);
  } catch (const JoinError&) {
    throw;
  } catch (const std::exception& e) {
    if (watchdog && watchdog->Fired()) {
      ThrowIfCancelled();
      throw JoinError("distributed: rank " + std::to_string(env.rank) + ": something at " + where +
                      " accepted the connection but did not answer as the rendezvous store within " + Seconds(timeout) +
                      " (is MASTER_PORT the port rank 0 serves?)");
    }
    ThrowJoinFailure(env, options, e.what(), stage, where);
  }
}
#endif

}  // namespace

RankEnvironment ReadRankEnvironment() {
  RankEnvironment env;
  env.worldSize = IntegerVariable("WORLD_SIZE", 1, 1 << 20);
  env.rank = IntegerVariable("RANK", 0, env.worldSize - 1);
  env.localWorldSize = std::getenv("LOCAL_WORLD_SIZE") ? IntegerVariable("LOCAL_WORLD_SIZE", 1, env.worldSize) : 1;
  env.localRank = std::getenv("LOCAL_RANK") ? IntegerVariable("LOCAL_RANK", 0, env.localWorldSize - 1) : 0;
  env.masterAddr = Variable("MASTER_ADDR");
  env.masterPort = static_cast<uint16_t>(IntegerVariable("MASTER_PORT", 1, 65535));
  return env;
}

std::vector<std::string> AvailableBackends() {
#ifdef TORCH_BERT_NCCL
  return {"gloo", "nccl"};
#elif defined(TORCH_BERT_GLOO)
  return {"gloo"};
#else
  return {};
#endif
}

#ifdef TORCH_BERT_GLOO

RankEnvironment JoinProcessGroup(std::chrono::milliseconds timeout) {
  std::lock_guard<std::mutex> lock(joinedMutex);
  if (joined) throw std::runtime_error("distributed: this process has already joined a process group");
  RankEnvironment env = ReadRankEnvironment();
  auto state = std::make_unique<Joined>();
  state->env = env;
  state->timeout = timeout;
  state->store = ConnectStore(env, timeout);
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  options->devices.push_back(GlooDevice(env.masterAddr));
  options->threads = 2;
  try {
    // Under a prefix, so that the keys the failure check writes never meet Gloo's.
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("gloo", state->store);
    state->group = GlooGroup(prefixed, env.rank, env.worldSize, options);
#ifdef TORCH_BERT_NCCL
    if (NcclUsable(env)) {
      AddNccl(*state->group, c10::make_intrusive<c10d::PrefixStore>("nccl", state->store), env, timeout);
      state->ncclForCuda = true;
    }
#endif
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw std::runtime_error("distributed: rank " + std::to_string(env.rank) +
                             " could not connect to the other ranks within " + Seconds(timeout) + " (" +
                             what.substr(0, what.find('\n')) + ")");
  }
  joined = std::move(state);
  return env;
}

void CancelJoin() {
  joinCancelled = true;
}

void ClearJoinCancel() {
  joinCancelled = false;
}

void UseRankDevice() {
#ifdef TORCH_BERT_NCCL
  std::lock_guard<std::mutex> lock(joinedMutex);
  if (joined && joined->ncclForCuda) c10::cuda::set_device(static_cast<c10::DeviceIndex>(joined->env.localRank));
#endif
}

bool InProcessGroup() {
  std::lock_guard<std::mutex> lock(joinedMutex);
  return joined != nullptr;
}

const RankEnvironment& GroupEnvironment() {
  std::lock_guard<std::mutex> lock(joinedMutex);
  if (!joined) throw std::runtime_error("distributed: this process has not joined a process group");
  return joined->env;
}

void LeaveProcessGroup() {
  std::unique_ptr<Joined> leaving;
  {
    std::lock_guard<std::mutex> lock(joinedMutex);
    leaving = std::move(joined);
  }
  // Gloo's threads and connections close with the group, the store after it.
  if (leaving) {
    leaving->group.reset();
    leaving->store.reset();
  }
}

c10::intrusive_ptr<c10d::ProcessGroup> CurrentProcessGroup(const std::string& what) {
  std::lock_guard<std::mutex> lock(joinedMutex);
  if (!joined) throw std::runtime_error(what + ": this process has not joined a process group (distributed)");
  return joined->group;
}

bool NcclForCuda() {
  std::lock_guard<std::mutex> lock(joinedMutex);
  return joined && joined->ncclForCuda;
}

std::string GroupBackend() {
  return NcclForCuda() ? "cpu:gloo,cuda:nccl" : "gloo";
}

namespace {

// After a collective failed: which ranks are gone. Every surviving rank checks in under a key of
// its own and waits a moment for the others; the ranks that never check in are named. When the
// store itself is gone, so is rank 0, which serves it.
std::string MissingRanks(const Joined& state) {
  try {
    const std::string me = "failed/" + std::to_string(state.env.rank);
    state.store->set(me, std::vector<uint8_t>{1});
    std::vector<int> missing;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    for (;;) {
      missing.clear();
      for (int r = 0; r < state.env.worldSize; ++r) {
        if (!state.store->check({"failed/" + std::to_string(r)})) missing.push_back(r);
      }
      if (missing.empty() || std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (missing.empty()) return "";
    std::string out = missing.size() == 1 ? "rank " : "ranks ";
    for (size_t i = 0; i < missing.size(); ++i) out += (i ? ", " : "") + std::to_string(missing[i]);
    return out;
  } catch (...) {
    return "rank 0";
  }
}

}  // namespace

void ThrowCollectiveFailure(const std::string& what, const std::string& error) {
  const std::string reason = error.substr(0, error.find('\n'));
  Joined* state = nullptr;
  {
    std::lock_guard<std::mutex> lock(joinedMutex);
    state = joined.get();
  }
  if (!state) throw std::runtime_error("distributed: " + what + " failed: " + reason);
  const std::string gone = MissingRanks(*state);
  const std::string who = gone.empty() ? "another rank" : gone;
  throw std::runtime_error("distributed: " + who + " stopped responding; rank " + std::to_string(state->env.rank) +
                           "'s " + what + " failed (timeout " + Seconds(state->timeout) + "): " + reason);
}

void WaitCollective(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
  try {
    work->wait();
  } catch (const std::exception& e) {
    ThrowCollectiveFailure(what, e.what());
  }
}

#else

RankEnvironment JoinProcessGroup(std::chrono::milliseconds) {
  throw std::runtime_error(
      "distributed: this build of torch-bert has no CPU backend (Gloo's headers were not found when it was built: "
      "install libgloo-dev and rebuild)");
}
void CancelJoin() {}
void ClearJoinCancel() {}
void UseRankDevice() {}
bool InProcessGroup() {
  return false;
}
std::string GroupBackend() {
  return "gloo";
}
const RankEnvironment& GroupEnvironment() {
  throw std::runtime_error("distributed: this process has not joined a process group");
}
void LeaveProcessGroup() {}

#endif

}  // namespace torch_bert
