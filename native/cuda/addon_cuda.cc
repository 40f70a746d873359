// Node-API addon lasp_cuda: the CUDA kernels of la_cuda.h behind two promise-returning calls on
// host Float32Arrays (a first step: every call copies its inputs to the device and its outputs
// back, into pinned result blocks; addon_util.h; a device-resident model backend comes later). Built by scripts/build-cuda.sh, never by
// node-gyp; the TypeScript facade is native/cuda.ts.
#include <napi.h>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include "addon_util.h"
#include "la_cuda.h"

namespace {

using lasp_cuda::Kind;
using lasp_cuda::Prec;

using lasp_cuda_addon::ck;
using lasp_cuda_addon::DevMem;
using lasp_cuda_addon::F32In;
using lasp_cuda_addon::HostOut;
using lasp_cuda_addon::uploadOptional;

F32In copyOf(const Napi::Value& v) {
  if (v.IsNull() || v.IsUndefined()) return {};
  return F32In(v.As<Napi::Float32Array>());
}

// Inputs in the mode's element type on the device (bf16: uploaded as float32 and converted there).
std::unique_ptr<DevMem> upload(const F32In& x, bool bf) {
  if (!bf) return std::make_unique<DevMem>(lasp_cuda_addon::toDevice(x));
  DevMem f = lasp_cuda_addon::toDevice(x);
  auto d = std::make_unique<DevMem>(x.size() * 2);
  lasp_cuda::toBf16(f.f(), d->p, x.size());
  return d;
}
HostOut download(const void* p, size_t n, bool bf) {
  if (!bf) return lasp_cuda_addon::toHost(p, n);
  DevMem f(n * 4);
  lasp_cuda::fromBf16(p, f.f(), n);
  return lasp_cuda_addon::toHost(f.p, n);
}

// One job at a time per process (they share the device's default stream anyway), with one
// workspace kept between jobs: a workspace per job cost a cudaMalloc of every slot and a cudaFree
// (which waits for the device) of each at the end.
std::mutex jobMutex;
lasp_cuda::Workspace& sharedWorkspace() {
  static auto* ws = new lasp_cuda::Workspace();  // never destroyed: the CUDA context may be gone at exit
  return *ws;
}

// forward(kind, prec, B, T, H, dk, dv, q, k, v, g, gconst, beta, s0[, dO, dSFinal]): the
// backward form runs the forward (keeping what the backward reuses) and then the backward.
class Job : public Napi::AsyncWorker {
 public:
  Job(const Napi::CallbackInfo& info, bool bwd)
      : Napi::AsyncWorker(info.Env()), deferred_(Napi::Promise::Deferred::New(info.Env())), bwd_(bwd) {
    p_.kind = static_cast<Kind>(info[0].As<Napi::Number>().Int32Value());
    p_.prec = static_cast<Prec>(info[1].As<Napi::Number>().Int32Value());
    p_.B = info[2].As<Napi::Number>().Int32Value();
    p_.T = info[3].As<Napi::Number>().Int32Value();
    p_.H = info[4].As<Napi::Number>().Int32Value();
    p_.dk = info[5].As<Napi::Number>().Int32Value();
    p_.dv = info[6].As<Napi::Number>().Int32Value();
    q_ = copyOf(info[7]);
    k_ = copyOf(info[8]);
    v_ = copyOf(info[9]);
    g_ = copyOf(info[10]);
    gconst_ = copyOf(info[11]);
    beta_ = copyOf(info[12]);
    s0_ = copyOf(info[13]);
    if (bwd_) {
      dO_ = copyOf(info[14]);
      dSf_ = copyOf(info[15]);
    }
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      run();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object r = Napi::Object::New(env);
    auto put = [&](const char* name, HostOut& x) {
      if (x.empty()) return;
      r.Set(name, x.toJs(env));
    };
    put("o", o_);
    put("finalState", sT_);
    put("dq", dq_);
    put("dk", dk_);
    put("dv", dv_);
    put("dg", dg_);
    put("dgconst", dgc_);
    put("dbeta", dbeta_);
    put("dInitialState", dS0_);
    deferred_.Resolve(r);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  void run() {
    std::lock_guard<std::mutex> lock(jobMutex);
    ck(cudaSetDevice(0), "cudaSetDevice");
    const bool bf = p_.prec == Prec::BF16;
    const size_t nq = static_cast<size_t>(p_.B) * p_.T * p_.H * p_.dk;
    const size_t nv = static_cast<size_t>(p_.B) * p_.T * p_.H * p_.dv;
    const size_t ntok = static_cast<size_t>(p_.B) * p_.T * p_.H;
    const size_t ns = static_cast<size_t>(p_.B) * p_.H * p_.dk * p_.dv;
    if (q_.size() != nq || k_.size() != nq || v_.size() != nv) throw std::runtime_error("lasp_cuda: q, k, v sizes do not match B,T,H,dk,dv");
    auto q = upload(q_, bf), k = upload(k_, bf), v = upload(v_, bf);
    auto g = uploadOptional(g_), gc = uploadOptional(gconst_);
    auto beta = uploadOptional(beta_), s0 = uploadOptional(s0_);
    p_.q = q->p;
    p_.k = k->p;
    p_.v = v->p;
    p_.g = g ? g->f() : nullptr;
    p_.gconst = gc ? gc->f() : nullptr;
    p_.beta = beta ? beta->f() : nullptr;
    p_.s0 = s0 ? s0->f() : nullptr;
    DevMem o(nv * (bf ? 2 : 4)), sT(ns * 4);
    lasp_cuda::Workspace& ws = sharedWorkspace();
    lasp_cuda::forward(p_, o.p, sT.f(), ws, bwd_);
    if (!bwd_) {
      ck(cudaDeviceSynchronize(), "forward");
      o_ = download(o.p, nv, bf);
      sT_ = download(sT.p, ns, false);
      return;
    }
    auto dO = upload(dO_, bf);
    auto dSf = uploadOptional(dSf_);
    DevMem dq(nq * (bf ? 2 : 4)), dk(nq * (bf ? 2 : 4)), dv(nv * (bf ? 2 : 4)), dS0(ns * 4);
    DevMem dg(ntok * 4), dgc(static_cast<size_t>(p_.H) * 4), dbeta(ntok * 4);
    const bool sg = p_.kind == Kind::ScalarGate;
    lasp_cuda::backward(p_, dO->p, dSf ? dSf->f() : nullptr, sT.f(), dq.p, dk.p, dv.p, sg && p_.g ? dg.f() : nullptr,
                        sg && !p_.g ? dgc.f() : nullptr, p_.kind == Kind::Delta ? dbeta.f() : nullptr, dS0.f(), ws);
    ck(cudaDeviceSynchronize(), "backward");
    dq_ = download(dq.p, nq, bf);
    dk_ = download(dk.p, nq, bf);
    dv_ = download(dv.p, nv, bf);
    dS0_ = download(dS0.p, ns, false);
    if (sg && p_.g) dg_ = download(dg.p, ntok, false);
    if (sg && !p_.g) dgc_ = download(dgc.p, p_.H, false);
    if (p_.kind == Kind::Delta) dbeta_ = download(dbeta.p, ntok, false);
  }

  Napi::Promise::Deferred deferred_;
  bool bwd_;
  lasp_cuda::Problem p_;
  F32In q_, k_, v_, g_, gconst_, beta_, s0_, dO_, dSf_;
  HostOut o_, sT_, dq_, dk_, dv_, dg_, dgc_, dbeta_, dS0_;
};

Napi::Value Forward(const Napi::CallbackInfo& info) {
  auto* job = new Job(info, false);
  auto p = job->Promise();
  job->Queue();
  return p;
}
Napi::Value Backward(const Napi::CallbackInfo& info) {
  auto* job = new Job(info, true);
  auto p = job->Promise();
  job->Queue();
  return p;
}

// The first CUDA device, or an error naming why there is none.
Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    Napi::Error::New(env, std::string("no CUDA device: ") + (e != cudaSuccess ? cudaGetErrorString(e) : "none found"))
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  Napi::Object r = Napi::Object::New(env);
  r.Set("device", prop.name);
  r.Set("multiprocessors", prop.multiProcessorCount);
  r.Set("computeCapability", std::to_string(prop.major) + "." + std::to_string(prop.minor));
  return r;
}

// Free and total memory of device 0 (the process's GPU: workers see only theirs), in bytes, from
// cudaMemGetInfo; free counts every process's allocations on that GPU.
Napi::Value MemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t freeBytes = 0, totalBytes = 0;
  cudaError_t e = cudaSetDevice(0);
  if (e == cudaSuccess) e = cudaMemGetInfo(&freeBytes, &totalBytes);
  if (e != cudaSuccess) {
    Napi::Error::New(env, std::string("cudaMemGetInfo: ") + cudaGetErrorString(e)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("freeBytes", static_cast<double>(freeBytes));
  r.Set("totalBytes", static_cast<double>(totalBytes));
  return r;
}

// The memory caches' counters (addon_memory.cc): {device, pinned} × {idleBytes, capBytes, takes, hits}.
Napi::Value MemCacheStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object r = Napi::Object::New(env);
  for (const bool device : {true, false}) {
    const auto s = lasp_cuda_addon::cacheStats(device);
    Napi::Object o = Napi::Object::New(env);
    o.Set("idleBytes", static_cast<double>(s.idleBytes));
    o.Set("capBytes", static_cast<double>(s.capBytes));
    o.Set("takes", static_cast<double>(s.takes));
    o.Set("hits", static_cast<double>(s.hits));
    r.Set(device ? "device" : "pinned", o);
  }
  return r;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("memCacheStats", Napi::Function::New(env, MemCacheStats));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("memInfo", Napi::Function::New(env, MemInfo));
  exports.Set("forward", Napi::Function::New(env, Forward));
  exports.Set("backward", Napi::Function::New(env, Backward));
  lasp_cuda_addon::RegisterModelOps(env, exports);
  lasp_cuda_addon::RegisterGeneralAttention(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(lasp_cuda, Init)
