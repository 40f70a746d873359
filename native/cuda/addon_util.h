// Shared pieces of the lasp_cuda Node-API addon's source files: CUDA error checks, cached device
// and pinned host memory, in-place Float32Array arguments, host<->device copies, and the
// registration hooks each addon_*.cc file provides (addon_cuda.cc's module init calls them all).
#pragma once
#include <napi.h>

#include <cuda_runtime.h>

#include <cstddef>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace lasp_cuda_addon {

inline void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// Device and host memory of the addon (addon_memory.cc). Every op of the host-staged backend
// allocates its device buffers and its result arrays anew; cudaMalloc / cudaFree per buffer (a
// cudaFree also waits for the whole device) and freshly mapped host pages for every result (on
// the VMs this runs on the first touch costs ~3 µs per KiB, and glibc maps every block of 32 MiB
// or more anew) made a step's cost grow faster than its size. Both come from size-keyed caches
// now: device blocks are reused, results land in pinned host blocks that go to JavaScript
// without a copy and come back when the array is collected (or released by an output scope).
void* devTake(size_t bytes);             // a device block of at least `bytes` (cached or cudaMalloc)
void devGive(void* p, size_t bytes);     // back to the cache (freed beyond the cache's cap)
void* hostTake(size_t bytes);            // a pinned host block (cached or cudaHostAlloc)
void hostGive(void* p, size_t bytes);    // back to the cache (freed beyond its cap)
struct CacheStats {
  int64_t idleBytes, capBytes, takes, hits;
};
CacheStats cacheStats(bool device);      // the device (true) or pinned host (false) cache's counters

// Device memory returned to the cache on scope exit (never zero bytes). On an exception the
// device is synchronised first, so that no kernel of the failed job still writes the block.
struct DevMem {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevMem(size_t n) : bytes(n ? n : 16) { p = devTake(bytes); }
  ~DevMem() {
    if (!p) return;
    if (std::uncaught_exceptions() > 0) (void)cudaDeviceSynchronize();
    devGive(p, bytes);
  }
  DevMem(DevMem&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr; }
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
  DevMem& operator=(DevMem&&) = delete;
  float* f() const { return static_cast<float*>(p); }
  int* i() const { return static_cast<int*>(p); }
};

// A Float32Array argument read in place on the worker thread: a pointer into its backing store
// (which does not move) and a reference that keeps the array alive until the job is deleted, on
// the JavaScript thread. Callers must not detach or write the array while the promise is
// pending (the model awaits every op). Copies share the reference.
class F32In {
 public:
  F32In() = default;
  explicit F32In(const Napi::Float32Array& a)
      : p_(a.Data()), n_(a.ElementLength()), ref_(std::make_shared<Napi::Reference<Napi::Float32Array>>(Napi::Persistent(a))) {}
  const float* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  float operator[](size_t i) const { return p_[i]; }

 private:
  const float* p_ = nullptr;
  size_t n_ = 0;
  std::shared_ptr<Napi::Reference<Napi::Float32Array>> ref_;
};

// A result array in a pinned host block; toJs hands the block to JavaScript (an external
// ArrayBuffer whose finalizer gives it back), else the destructor gives it back.
class HostOut {
 public:
  HostOut() = default;
  explicit HostOut(size_t n) : n_(n) {
    if (n) p_ = static_cast<float*>(hostTake(n * sizeof(float)));
  }
  HostOut(HostOut&& o) noexcept : p_(o.p_), n_(o.n_) {
    o.p_ = nullptr;
    o.n_ = 0;
  }
  HostOut& operator=(HostOut&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = o.p_;
      n_ = o.n_;
      o.p_ = nullptr;
      o.n_ = 0;
    }
    return *this;
  }
  HostOut(const HostOut&) = delete;
  HostOut& operator=(const HostOut&) = delete;
  ~HostOut() { reset(); }
  float* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  // The array over this block (ownership goes to JavaScript); an empty Float32Array when empty.
  Napi::Float32Array toJs(Napi::Env env) {
    if (!p_) return Napi::Float32Array::New(env, 0);
    const size_t bytes = n_ * sizeof(float);
    auto ab = Napi::ArrayBuffer::New(
        env, p_, bytes, [](Napi::Env, void* data, size_t* hint) {
          hostGive(data, *hint);
          delete hint;
        },
        new size_t(bytes));
    const size_t n = n_;
    p_ = nullptr;
    n_ = 0;
    return Napi::Float32Array::New(env, n, ab, 0);
  }

 private:
  void reset() {
    if (p_) hostGive(p_, n_ * sizeof(float));
    p_ = nullptr;
  }
  float* p_ = nullptr;
  size_t n_ = 0;
};

// A float32 array copied to the device (size = x.size()).
inline DevMem toDevice(const F32In& x) {
  DevMem d(x.size() * sizeof(float));
  if (!x.empty()) ck(cudaMemcpy(d.p, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice), "copy to device");
  return d;
}

// An optional device copy: null for an empty (absent) array.
inline std::unique_ptr<DevMem> uploadOptional(const F32In& x) {
  if (x.empty()) return nullptr;
  return std::make_unique<DevMem>(toDevice(x));
}

// n floats from the device into a pinned result block.
inline HostOut toHost(const void* p, size_t n) {
  HostOut out(n);
  if (n) ck(cudaMemcpy(out.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), "copy to host");
  return out;
}

// Registration hooks: each adds its functions to the addon's exports.
void RegisterModelOps(Napi::Env env, Napi::Object exports);         // addon_model_ops.cc
void RegisterGeneralAttention(Napi::Env env, Napi::Object exports);  // addon_attention.cc

}  // namespace lasp_cuda_addon
