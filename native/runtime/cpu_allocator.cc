#include "runtime/cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "addon/errors.h"

namespace torch_bert {

namespace {

// The header before each block's data: keeps the data 64-byte aligned, as libtorch requires.
constexpr size_t kHeaderBytes = 64;
constexpr size_t kMinCachedBytes = size_t{256} << 10;
// New cached-size blocks are rounded up to this, so that shapes that differ a little (dynamic
// padding changes the sequence length from batch to batch) can share blocks.
constexpr size_t kRoundingBytes = size_t{64} << 10;
constexpr uint64_t kDefaultLimitMiB = 1024;
constexpr size_t kHugePageBytes = size_t{2} << 20;

struct Header {
  size_t capacity;   // bytes of data after the header
  void* allocation;  // what malloc returned, to free (the header's own address for cached sizes)
};

// A block below kMinCachedBytes: malloc'd with room to put the data on a 64-byte boundary
// after the header. c10::alloc_cpu's posix_memalign takes glibc's slow path on every call (no
// per-thread cache; each block carved out of a larger chunk, the rest freed again), and a
// tiny encoder's training step allocates hundreds of small tensors: tiny LoRA step at 1x8,
// worker-thread time in fwd+bwd 1.5-3% lower (perf: malloc's share of the worker's samples
// 11.8% -> 10.9%). Freed by Delete, never cached.
void* AllocateSmall(size_t n) {
  // malloc aligns to alignof(max_align_t); at most kHeaderBytes - that is skipped to align.
  void* allocation = std::malloc(n + 2 * kHeaderBytes - alignof(std::max_align_t));
  // As c10::alloc_cpu's failure, which runtime/device_errors.h reports as out of memory.
  TORCH_CHECK(allocation != nullptr, "DefaultCPUAllocator: not enough memory: you tried to allocate ", n, " bytes.");
  const auto start = reinterpret_cast<uintptr_t>(allocation) + kHeaderBytes;
  char* data = reinterpret_cast<char*>((start + kHeaderBytes - 1) / kHeaderBytes * kHeaderBytes);
  auto* header = reinterpret_cast<Header*>(data - kHeaderBytes);
  header->capacity = n;
  header->allocation = allocation;
  return data;
}

class CachingCpuAllocator;
// The installed allocator (static lifetime), or null.
CachingCpuAllocator* gInstance = nullptr;

class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(uint64_t limitBytes) : limitBytes_(limitBytes) {}

  // libtorch 1.x declares allocate() const, 2.3+ non-const: both are defined (an overload each),
  // so the one that exists in the base is overridden whichever libtorch this is built against.
  c10::DataPtr allocate(size_t n) const {
    void* data = const_cast<CachingCpuAllocator*>(this)->Allocate(n);
    return {data, data, &Delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DataPtr allocate(size_t n) { return static_cast<const CachingCpuAllocator*>(this)->allocate(n); }

  // Pure virtual since libtorch 2.3 (a plain member before): CPU memory copies as memcpy, as
  // libtorch's default CPU allocator does.
  void copy_data(void* dest, const void* src, std::size_t count) const {
    if (count > 0) std::memcpy(dest, src, count);
  }

  c10::DeleterFnPtr raw_deleter() const override { return &Delete; }

  CpuCacheStats Stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    CpuCacheStats s = stats_;
    s.installed = true;
    s.limitBytes = limitBytes_;
    s.cachedBytes = cachedBytes_;
    s.cachedBlocks = free_.size();
    s.hugePages = hugePages_;
    s.hugePageBlocks = hugePageBlocks_.load(std::memory_order_relaxed);
    return s;
  }

  void Empty() {
    FreeBlocks blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      byAge_.clear();
      cachedBytes_ = 0;
    }
    for (auto& [capacity, block] : blocks) c10::free_cpu(block.base);
  }

 private:
  static void Delete(void* data) {
    if (data == nullptr) return;
    void* base = static_cast<char*>(data) - kHeaderBytes;
    size_t capacity = static_cast<Header*>(base)->capacity;
    if (capacity < kMinCachedBytes) {
      std::free(static_cast<Header*>(base)->allocation);
      return;
    }
    gInstance->Release(base, capacity);
  }

  void* Allocate(size_t n) {
    if (n < kMinCachedBytes) return AllocateSmall(n);
    std::unique_lock<std::mutex> lock(mutex_);
    // Best fit: the smallest cached block that holds n, if at most twice n (a larger one would
    // waste more than it saves).
    auto it = free_.lower_bound(n);
    if (it != free_.end() && it->first <= 2 * n) {
      void* base = it->second.base;
      cachedBytes_ -= it->first;
      byAge_.erase(it->second.freedAt);
      free_.erase(it);
      ++stats_.hits;
      return static_cast<char*>(base) + kHeaderBytes;
    }
    ++stats_.misses;
    lock.unlock();
    n = (n + kRoundingBytes - 1) / kRoundingBytes * kRoundingBytes;
    void* base = n + kHeaderBytes >= kHugePageBytes && hugePages_ ? AllocateHuge(n + kHeaderBytes) : nullptr;
    if (base != nullptr) hugePageBlocks_.fetch_add(1, std::memory_order_relaxed);
    // c10::alloc_cpu throws c10::Error on failure (out of memory), as the default allocator does.
    if (base == nullptr) base = c10::alloc_cpu(n + kHeaderBytes);
    static_cast<Header*>(base)->capacity = n;
    static_cast<Header*>(base)->allocation = base;
    return static_cast<char*>(base) + kHeaderBytes;
  }

  void Release(void* base, size_t capacity) {
    if (capacity > limitBytes_) {
      c10::free_cpu(base);
      return;
    }
    std::vector<void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const uint64_t stamp = ++releases_;
      byAge_.emplace(stamp, free_.emplace(capacity, FreeBlock{base, stamp}));
      cachedBytes_ += capacity;
      // Over the limit: evict the blocks freed longest ago (freed outside the lock). A training
      // loop frees and takes back the same sizes every step, so those stay; blocks of shapes no
      // longer used (an earlier model, a longer batch) go first. Evicting the largest instead
      // made a process that had trained a small model re-fault bert-base's activations every
      // step (bench: 2.7 GB evicted in 5 LoRA steps, 15% slower).
      while (cachedBytes_ > limitBytes_) {
        auto oldest = byAge_.begin();
        const auto block = oldest->second;
        cachedBytes_ -= block->first;
        stats_.evictedBytes += block->first;
        evicted.push_back(block->second.base);
        free_.erase(block);
        byAge_.erase(oldest);
      }
    }
    for (void* block : evicted) c10::free_cpu(block);
  }

  // A block of at least one huge page, 2 MiB-aligned and marked for transparent huge pages
  // (THP is "madvise" on common distributions), or null. Freed by free() like alloc_cpu's.
  static void* AllocateHuge(size_t bytes) {
    void* base = nullptr;
    if (posix_memalign(&base, kHugePageBytes, bytes) != 0) return nullptr;
    madvise(base, bytes / kHugePageBytes * kHugePageBytes, MADV_HUGEPAGE);
    return base;
  }

  const uint64_t limitBytes_;
  const bool hugePages_ = [] {
    const char* value = std::getenv("TORCH_BERT_HUGE_PAGES");
    return value == nullptr || std::strcmp(value, "0") != 0;
  }();
  std::atomic<uint64_t> hugePageBlocks_{0};
  std::mutex mutex_;
  struct FreeBlock {
    void* base;        // header address
    uint64_t freedAt;  // releases_ when it was freed
  };
  using FreeBlocks = std::multimap<size_t, FreeBlock>;  // by capacity, for best fit
  FreeBlocks free_;
  std::map<uint64_t, FreeBlocks::iterator> byAge_;  // the same blocks by freedAt, for eviction
  uint64_t releases_ = 0;
  uint64_t cachedBytes_ = 0;
  CpuCacheStats stats_;
};

std::once_flag installOnce;

uint64_t LimitFromEnvironment() {
  const char* value = std::getenv("TORCH_BERT_CPU_CACHE_MB");
  if (value == nullptr || *value == '\0') return kDefaultLimitMiB << 20;
  char* end = nullptr;
  unsigned long long mib = std::strtoull(value, &end, 10);
  // An unreadable value keeps the default rather than failing the addon's load.
  if (end == value || *end != '\0') return kDefaultLimitMiB << 20;
  return static_cast<uint64_t>(mib) << 20;
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif
#else
constexpr bool kAddressSanitizer = false;
#endif

}  // namespace

void InstallCachingCpuAllocator() {
  std::call_once(installOnce, [] {
    uint64_t limit = LimitFromEnvironment();
    if (limit == 0 || kAddressSanitizer) return;
    // Static lifetime, never freed: libtorch keeps the pointer, and tensors freed during process
    // exit still call its deleter.
    auto* allocator = new CachingCpuAllocator(limit);
    gInstance = allocator;
    // Priority 1 beats libtorch's default (0). Tensors allocated before (none, at addon load)
    // would keep their own deleter, so mixing is safe either way.
    c10::SetCPUAllocator(allocator, /*priority=*/1);
  });
}

CpuCacheStats GetCpuCacheStats() {
  CachingCpuAllocator* allocator = gInstance;
  if (allocator == nullptr || c10::GetCPUAllocator() != allocator) return {};
  return allocator->Stats();
}

void EmptyCpuCache() {
  if (gInstance != nullptr) gInstance->Empty();
}

namespace {

Napi::Value CpuCacheStatsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    CpuCacheStats s = GetCpuCacheStats();
    Napi::Object out = Napi::Object::New(env);
    out.Set("installed", s.installed);
    out.Set("limitBytes", static_cast<double>(s.limitBytes));
    out.Set("cachedBytes", static_cast<double>(s.cachedBytes));
    out.Set("cachedBlocks", static_cast<double>(s.cachedBlocks));
    out.Set("hits", static_cast<double>(s.hits));
    out.Set("misses", static_cast<double>(s.misses));
    out.Set("evictedBytes", static_cast<double>(s.evictedBytes));
    out.Set("hugePages", s.hugePages);
    out.Set("hugePageBlocks", static_cast<double>(s.hugePageBlocks));
    return out;
  });
}

Napi::Value EmptyCpuCacheJs(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&]() -> Napi::Value {
    EmptyCpuCache();
    return info.Env().Undefined();
  });
}

}  // namespace

void RegisterCpuAllocator(Napi::Env env, Napi::Object exports) {
  exports.Set("cpuCacheStats", Napi::Function::New<CpuCacheStatsJs>(env, "cpuCacheStats"));
  exports.Set("emptyCpuCache", Napi::Function::New<EmptyCpuCacheJs>(env, "emptyCpuCache"));
}

}  // namespace torch_bert
