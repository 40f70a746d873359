#include "buffer_pool.h"

#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace lasp {
namespace {

struct Pool {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free;
  int64_t idle = 0, live = 0, hits = 0, misses = 0, cap = 0;

  Pool() {
    const char* env = std::getenv("LASP_POOL_MAX_MB");
    if (env && *env) {
      cap = static_cast<int64_t>(std::strtoll(env, nullptr, 10)) << 20;
    } else {
      const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
      cap = pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page / 4 : int64_t(1) << 30;
    }
    if (cap < 0) cap = 0;
  }
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: finalizers may run during shutdown
  return *p;
}

size_t rounded(size_t bytes) { return (bytes + 63) & ~size_t(63); }

}  // namespace

void* pool_take(size_t bytes) {
  const size_t n = rounded(bytes == 0 ? 1 : bytes);
  Pool& p = pool();
  {
    std::lock_guard<std::mutex> lock(p.mu);
    auto it = p.free.find(n);
    if (it != p.free.end() && !it->second.empty()) {
      void* b = it->second.back();
      it->second.pop_back();
      p.idle -= static_cast<int64_t>(n);
      p.live += static_cast<int64_t>(n);
      p.hits++;
      return b;
    }
    p.misses++;
  }
  void* b = std::aligned_alloc(64, n);
  if (b) {
    std::lock_guard<std::mutex> lock(p.mu);
    p.live += static_cast<int64_t>(n);
  }
  return b;
}

void pool_give(void* b, size_t bytes) {
  if (!b) return;
  const size_t n = rounded(bytes == 0 ? 1 : bytes);
  Pool& p = pool();
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.live -= static_cast<int64_t>(n);
    if (p.idle + static_cast<int64_t>(n) <= p.cap) {
      p.free[n].push_back(b);
      p.idle += static_cast<int64_t>(n);
      return;
    }
  }
  std::free(b);
}

PoolStats pool_stats() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  return {p.idle, p.live, p.hits, p.misses, p.cap};
}

const char* tune_allocator(size_t mmap_threshold, size_t trim_threshold) {
#if defined(__GLIBC__)
  if (mmap_threshold > static_cast<size_t>(INT32_MAX) || trim_threshold > static_cast<size_t>(INT32_MAX))
    return "thresholds must be below 2 GiB";
  if (mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmap_threshold)) != 1) return "mallopt(M_MMAP_THRESHOLD) refused the value";
  if (mallopt(M_TRIM_THRESHOLD, static_cast<int>(trim_threshold)) != 1) return "mallopt(M_TRIM_THRESHOLD) refused the value";
  return "";
#else
  (void)mmap_threshold;
  (void)trim_threshold;
  return "not built against glibc (no mallopt)";
#endif
}

}  // namespace lasp
