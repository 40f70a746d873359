// Shared pieces of the lasp_cuda Node-API addon's source files: CUDA error checks, an owning
// device buffer, host<->device copies of float32 arrays, and the registration hooks each
// addon_*.cc file provides (addon_cuda.cc's module init calls them all).
#pragma once
#include <napi.h>

#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace lasp_cuda_addon {

inline void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// Device memory freed on scope exit (never zero bytes: cudaMalloc(0) may return null).
struct DevMem {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevMem(size_t n) : bytes(n) { ck(cudaMalloc(&p, n ? n : 16), "cudaMalloc"); }
  ~DevMem() {
    if (p) cudaFree(p);
  }
  DevMem(DevMem&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr; }
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
  DevMem& operator=(DevMem&&) = delete;
  float* f() const { return static_cast<float*>(p); }
  int* i() const { return static_cast<int*>(p); }
};

// A float32 array copied to the device (size = x.size()).
inline DevMem toDevice(const std::vector<float>& x) {
  DevMem d(x.size() * sizeof(float));
  if (!x.empty()) ck(cudaMemcpy(d.p, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice), "copy to device");
  return d;
}

inline std::vector<float> toHost(const void* p, size_t n) {
  std::vector<float> out(n);
  if (n) ck(cudaMemcpy(out.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), "copy to host");
  return out;
}

// Registration hooks: each adds its functions to the addon's exports.
void RegisterModelOps(Napi::Env env, Napi::Object exports);         // addon_model_ops.cc
void RegisterGeneralAttention(Napi::Env env, Napi::Object exports);  // addon_attention.cc

}  // namespace lasp_cuda_addon
