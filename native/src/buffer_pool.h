// Output buffers that keep their pages. On this class of VM the first touch of freshly mapped
// memory costs ~3 µs per KiB (50 MB: ~150 ms against ~2 ms for a second pass), and glibc returns
// every block above 32 MB — and, once freed, most blocks above 128 KB — to the kernel. A training
// step allocates the same shapes every step, so the addon hands out Float32Arrays over pooled
// blocks: when JavaScript drops one, its finalizer puts the block back on a free list keyed by
// size, and the next request of that size gets warm pages. The pool holds at most a cap of idle
// bytes (LASP_POOL_MAX_MB, default 25% of physical memory); beyond it blocks are freed.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lasp {

// A block of at least `bytes` (64-byte aligned), from the pool or newly allocated; nullptr on failure.
void* pool_take(size_t bytes);
// Returns a block taken with the same `bytes`.
void pool_give(void* p, size_t bytes);

struct PoolStats {
  int64_t idle_bytes;   // blocks on the free lists
  int64_t live_bytes;   // blocks handed out and not yet returned
  int64_t hits;         // takes served from the free lists
  int64_t misses;       // takes that allocated
  int64_t cap_bytes;
};
PoolStats pool_stats();

// Asks the C allocator to keep freed memory instead of returning it to the kernel: blocks below
// `mmap_threshold` bytes come from the heap (not a fresh mapping each), and the heap is trimmed
// only when more than `trim_threshold` bytes are free at its top. For the buffers the addon does
// not pool — Node's socket reads (64 KiB each) and other Buffers — whose fresh pages cost the
// first-touch price above. glibc only (mallopt); elsewhere it does nothing and says why.
// Returns an empty string when applied, else the reason.
const char* tune_allocator(size_t mmap_threshold, size_t trim_threshold);

}  // namespace lasp
