// A caching allocator for libtorch's CPU tensors.
//
// Why: a BERT step allocates and frees the same large activation buffers (tens of MB) again and
// again. With glibc's malloc, buffers above its mmap threshold are mapped and unmapped each time
// (every page faulted and zeroed anew), and the ones below it stay in per-thread arenas that
// grow without bound: measured here (bench/probe-forward.mjs), a small BERT's forward of 64x128
// tokens took 545 ms with a 1.44 GB peak RSS under glibc, versus 360 ms and 0.43 GB when freed
// buffers are kept and reused.
// libtorch lets an addon replace its CPU allocator (c10::SetCPUAllocator), so every process that
// loads torch-bert gets the reuse, without LD_PRELOAD.
//
// Blocks of at least kMinCachedBytes are kept on free after use (up to a byte limit, evicting
// the ones freed longest ago first) and handed to a later request that fits (best fit, at most
// twice as large);
// smaller blocks come from malloc and go straight back to it, which handles them well (through
// malloc itself, not c10::alloc_cpu's posix_memalign: see AllocateSmall). Each block carries a
// 64-byte header holding its capacity, so freeing needs no lookup. Alignment is libtorch's
// (64 bytes).
//
// Blocks of 2 MiB and more start on a 2 MiB boundary and are marked MADV_HUGEPAGE (Linux
// distributions set transparent huge pages to "madvise"), so that activations and weights sit
// in huge pages: fewer TLB misses in the GEMMs and elementwise passes over them. Measured with
// the cache reusing the blocks (so the costlier huge-page faults are paid once): a small
// encoder's LoRA step 370 -> 349 ms, the tiny encoder's full step 107 -> 100 ms (medians of
// alternating runs of bench/probe-step.mjs).
// TORCH_BERT_HUGE_PAGES=0 turns this off.
//
// TORCH_BERT_CPU_CACHE_MB sets the byte limit (default 1024; 0 turns the cache off and keeps
// libtorch's default allocator). ASan builds keep the default allocator, so that ASan sees
// every allocation.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace torch_bert {

struct CpuCacheStats {
  bool installed = false;
  uint64_t limitBytes = 0;
  uint64_t cachedBytes = 0;
  uint64_t cachedBlocks = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictedBytes = 0;
  bool hugePages = false;       // blocks of 2 MiB and more are made huge-page backed
  uint64_t hugePageBlocks = 0;  // how many such blocks were allocated
};

// Installs the caching allocator once per process (later calls do nothing). Call before any
// tensor work, at addon load.
void InstallCachingCpuAllocator();

CpuCacheStats GetCpuCacheStats();

// Frees every cached block (the cache stays installed).
void EmptyCpuCache();

// cpuCacheStats() and emptyCpuCache() on the binding.
void RegisterCpuAllocator(Napi::Env env, Napi::Object exports);

}  // namespace torch_bert
