// The addon's memory caches (addon_util.h): device blocks and pinned host blocks, each on free
// lists keyed by size, so that the same shapes step after step reuse memory instead of
// cudaMalloc/cudaFree (which synchronises the device) and freshly mapped host pages.
// Caps on the idle bytes each cache keeps: LASP_CUDA_DEVICE_CACHE_MB (default 4096) and
// LASP_CUDA_PINNED_CACHE_MB (default 4096); beyond them a returned block is freed. A failed
// cudaMalloc / cudaHostAlloc empties that cache and tries once more.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "addon_util.h"

namespace lasp_cuda_addon {
namespace {

struct Cache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free;
  int64_t idle = 0, cap = 0, takes = 0, hits = 0;
  cudaError_t (*alloc)(void**, size_t);
  cudaError_t (*release)(void*);

  Cache(const char* env, cudaError_t (*a)(void**, size_t), cudaError_t (*r)(void*)) : alloc(a), release(r) {
    const char* v = std::getenv(env);
    cap = (v && *v ? std::strtoll(v, nullptr, 10) : 4096) << 20;
    if (cap < 0) cap = 0;
  }

  void* take(size_t bytes, const char* what) {
    {
      std::lock_guard<std::mutex> lock(mu);
      takes++;
      auto it = free.find(bytes);
      if (it != free.end() && !it->second.empty()) {
        hits++;
        void* p = it->second.back();
        it->second.pop_back();
        idle -= static_cast<int64_t>(bytes);
        return p;
      }
    }
    void* p = nullptr;
    if (alloc(&p, bytes) == cudaSuccess) return p;
    (void)cudaGetLastError();
    drain();
    if (alloc(&p, bytes) == cudaSuccess) return p;
    const cudaError_t e = cudaGetLastError();
    throw std::runtime_error(std::string(what) + " of " + std::to_string(bytes) + " bytes: " + cudaGetErrorString(e));
  }

  void give(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (idle + static_cast<int64_t>(bytes) <= cap) {
        free[bytes].push_back(p);
        idle += static_cast<int64_t>(bytes);
        return;
      }
    }
    (void)release(p);
  }

  void drain() {
    std::vector<void*> all;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (auto& [bytes, list] : free) all.insert(all.end(), list.begin(), list.end());
      free.clear();
      idle = 0;
    }
    for (void* p : all) (void)release(p);
  }
};

cudaError_t devAlloc(void** p, size_t n) { return cudaMalloc(p, n); }
cudaError_t hostAlloc(void** p, size_t n) { return cudaHostAlloc(p, n, cudaHostAllocDefault); }

// Never destroyed: finalizers of result arrays may run while the process shuts down.
Cache& devCache() {
  static Cache* c = new Cache("LASP_CUDA_DEVICE_CACHE_MB", devAlloc, cudaFree);
  return *c;
}
Cache& hostCache() {
  static Cache* c = new Cache("LASP_CUDA_PINNED_CACHE_MB", hostAlloc, cudaFreeHost);
  return *c;
}

// Sizes are rounded up to 512 bytes (device) / 4 KiB (host) so that near sizes share lists.
size_t roundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

CacheStats cacheStats(bool device) {
  Cache& c = device ? devCache() : hostCache();
  std::lock_guard<std::mutex> lock(c.mu);
  return CacheStats{c.idle, c.cap, c.takes, c.hits};
}

void* devTake(size_t bytes) { return devCache().take(roundUp(bytes, 512), "cudaMalloc"); }
void devGive(void* p, size_t bytes) { devCache().give(p, roundUp(bytes, 512)); }
void* hostTake(size_t bytes) { return hostCache().take(roundUp(bytes, 4096), "cudaHostAlloc"); }
void hostGive(void* p, size_t bytes) { hostCache().give(p, roundUp(bytes, 4096)); }

}  // namespace lasp_cuda_addon
