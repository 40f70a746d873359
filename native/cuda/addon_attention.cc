// Node-API part of the lasp_cuda addon: the general float32 attention kernels
// (general_attention.h) behind promise-returning calls on host Float32Arrays. Each call copies its
// inputs' pointers and references on the JavaScript thread, runs on a worker thread (upload, kernels on
// the thread's default stream, download into pinned result blocks) and hands the blocks to
// JavaScript without a copy (addon_util.h: arguments read in place, cached device memory). The typed facade is native/cuda-attention.ts; it validates every argument first.
//
// Exports (kind codes as native/binding.ts; null for an absent optional array):
//   ga_forward(kind, causal, T, H, dk, dv, q, k, v, g, beta, s0) -> {o, finalState}
//   ga_backward(kind, causal, T, H, dk, dv, q, k, v, g, beta, s0, dO, dSFinal)
//       -> {dq, dk, dv, dg?, dbeta?, dInitialState}   (runs the forward for its checkpoints)
//   ga_summary(kind, causal, T, H, dk, dv, q, k, v, g, beta) -> {a, u}
//   ga_stateGrad(kind, causal, T, H, dk, dv, q, k, v, g, beta, dO) -> Float32Array d
//   ga_addStateTerm(kind, T, H, dk, dv, q, k, v, g, beta, state, o) -> Float32Array (o + term)
//   ga_softmaxForward(Tq, Tk, H, dk, dv, qOffset, causal, window, scale, q, k, v) -> {o, lse}
//   ga_softmaxBackward(Tq, Tk, H, dk, dv, qOffset, causal, window, scale, q, k, v, o, lse, dO)
//       -> {dq, dk, dv}
#include <napi.h>

#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "addon_util.h"
#include "general_attention.h"

namespace lasp_cuda_addon {
namespace {

namespace ga = lasp_cuda_general;
using Vec = F32In;  // an argument, read in place
using Res = HostOut;  // a result, in a pinned block

Vec arrayArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  const Napi::Value v = info[i];
  if (v.IsNull() || v.IsUndefined()) return {};
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(info.Env(), std::string("lasp cuda: ") + name + " must be a Float32Array or null");
  return Vec(v.As<Napi::Float32Array>());
}

double numArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string("lasp cuda: ") + name + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

int intArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  const double d = numArg(info, i, name);
  if (!(d >= 0 && d <= 2147483647.0) || d != std::floor(d))
    throw Napi::TypeError::New(info.Env(), std::string("lasp cuda: ") + name + " must be a non-negative integer");
  return static_cast<int>(d);
}

bool boolArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsBoolean()) throw Napi::TypeError::New(info.Env(), std::string("lasp cuda: ") + name + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

void needSize(const Vec& x, size_t n, const char* name) {
  if (x.size() != n)
    throw std::invalid_argument(std::string("lasp cuda: ") + name + " must have " + std::to_string(n) + " elements, got " +
                                std::to_string(x.size()));
}

float* ptr(const std::unique_ptr<DevMem>& d) { return d ? d->f() : nullptr; }

Napi::Float32Array toJs(Napi::Env env, Res& x) { return x.toJs(env); }

void finish(const char* what) {
  ck(cudaGetLastError(), what);
  ck(cudaStreamSynchronize(cudaStreamPerThread), what);
}

class Job : public Napi::AsyncWorker {
 public:
  explicit Job(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      ck(cudaSetDevice(0), "cudaSetDevice");
      run();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(result(Env())); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 protected:
  virtual void run() = 0;
  virtual Napi::Value result(Napi::Env env) = 0;

 private:
  Napi::Promise::Deferred deferred_;
};

template <typename J>
Napi::Value start(const Napi::CallbackInfo& info) {
  auto* job = new J(info);
  auto p = job->Promise();
  job->Queue();
  return p;
}

// ---- linear-attention problems -------------------------------------------------------------

struct Attn {
  int kind = 0;
  bool causal = true;
  int T = 0, H = 0, dk = 0, dv = 0;
  Vec q, k, v, g, beta;
  std::unique_ptr<DevMem> dq_, dk_, dv_, dg_, dbeta_;

  // Reads kind, causal, T, H, dk, dv, q, k, v, g, beta from info[at...] (causal absent when
  // withCausal is false). Returns the next index.
  size_t parse(const Napi::CallbackInfo& info, size_t at, bool withCausal) {
    kind = intArg(info, at++, "kind");
    causal = withCausal ? boolArg(info, at++, "causal") : true;
    T = intArg(info, at++, "T");
    H = intArg(info, at++, "H");
    dk = intArg(info, at++, "dk");
    dv = intArg(info, at++, "dv");
    q = arrayArg(info, at++, "q");
    k = arrayArg(info, at++, "k");
    v = arrayArg(info, at++, "v");
    g = arrayArg(info, at++, "g");
    beta = arrayArg(info, at++, "beta");
    return at;
  }

  size_t tokens() const { return static_cast<size_t>(T) * H; }
  size_t stateSize() const { return static_cast<size_t>(H) * dk * dv; }
  bool gated() const { return kind == ga::kScalarGate || kind == ga::kVectorGate || kind == ga::kGatedDelta; }
  bool delta() const { return kind == ga::kDelta || kind == ga::kGatedDelta; }
  size_t gateSize() const { return gated() ? tokens() * (kind == ga::kVectorGate ? dk : 1) : 0; }

  // Size and value checks (as the CPU's check_inputs), then the device copies.
  ga::Problem upload() {
    if (kind < 0 || kind > 4) throw std::invalid_argument("lasp cuda: unknown kind code " + std::to_string(kind));
    if (T < 1 || H < 1 || dk < 1 || dv < 1) throw std::invalid_argument("lasp cuda: T, H, dk and dv must be >= 1");
    needSize(q, tokens() * dk, "q");
    needSize(k, tokens() * dk, "k");
    needSize(v, tokens() * dv, "v");
    needSize(g, gateSize(), "g");
    needSize(beta, delta() ? tokens() : 0, "beta");
    for (size_t i = 0; i < g.size(); ++i)
      if (!(g[i] <= 0.f) || !std::isfinite(g[i]))
        throw std::invalid_argument("g must hold finite log gates <= 0; g[" + std::to_string(i) + "] = " + std::to_string(g[i]));
    for (size_t i = 0; i < beta.size(); ++i)
      if (!std::isfinite(beta[i]))
        throw std::invalid_argument("beta must be finite; beta[" + std::to_string(i) + "] = " + std::to_string(beta[i]));
    dq_ = uploadOptional(q);
    dk_ = uploadOptional(k);
    dv_ = uploadOptional(v);
    dg_ = uploadOptional(g);
    dbeta_ = uploadOptional(beta);
    ga::Problem p;
    p.kind = kind;
    p.causal = causal;
    p.B = 1;
    p.T = T;
    p.H = H;
    p.dk = dk;
    p.dv = dv;
    p.q = ptr(dq_);
    p.k = ptr(dk_);
    p.v = ptr(dv_);
    p.g = ptr(dg_);
    p.beta = ptr(dbeta_);
    return p;
  }
};

class ForwardJob : public Job {
 public:
  explicit ForwardJob(const Napi::CallbackInfo& info) : Job(info.Env()) {
    const size_t at = a_.parse(info, 0, true);
    s0_ = arrayArg(info, at, "initialState");
  }

 protected:
  void run() override {
    ga::Problem p = a_.upload();
    if (!s0_.empty()) needSize(s0_, a_.stateSize(), "initialState");
    auto s0 = uploadOptional(s0_);
    DevMem o(a_.tokens() * a_.dv * sizeof(float)), sT(a_.stateSize() * sizeof(float));
    ga::forward(p, ptr(s0), o.f(), sT.f(), nullptr, cudaStreamPerThread);
    finish("forward");
    o_ = toHost(o.p, a_.tokens() * a_.dv);
    sT_ = toHost(sT.p, a_.stateSize());
  }
  Napi::Value result(Napi::Env env) override {
    Napi::Object r = Napi::Object::New(env);
    r.Set("o", toJs(env, o_));
    r.Set("finalState", toJs(env, sT_));
    return r;
  }

 private:
  Attn a_;
  Vec s0_;
  Res o_, sT_;
};

class BackwardJob : public Job {
 public:
  explicit BackwardJob(const Napi::CallbackInfo& info) : Job(info.Env()) {
    size_t at = a_.parse(info, 0, true);
    s0_ = arrayArg(info, at++, "initialState");
    dO_ = arrayArg(info, at++, "dO");
    dSf_ = arrayArg(info, at++, "dFinalState");
  }

 protected:
  void run() override {
    ga::Problem p = a_.upload();
    const size_t ns = a_.stateSize(), nq = a_.tokens() * a_.dk, nv = a_.tokens() * a_.dv;
    if (!s0_.empty()) needSize(s0_, ns, "initialState");
    if (!dSf_.empty()) needSize(dSf_, ns, "dFinalState");
    needSize(dO_, nv, "dO");
    auto s0 = uploadOptional(s0_), dO = uploadOptional(dO_), dSf = uploadOptional(dSf_);
    DevMem dq(nq * sizeof(float)), dk(nq * sizeof(float)), dv(nv * sizeof(float)), dS0(ns * sizeof(float));
    const size_t ng = a_.gateSize(), nb = a_.delta() ? a_.tokens() : 0;
    DevMem dg(ng * sizeof(float)), dbeta(nb * sizeof(float));
    ga::backward(p, ptr(s0), ptr(dO), ptr(dSf), nullptr, dq.f(), dk.f(), dv.f(), ng ? dg.f() : nullptr,
                 nb ? dbeta.f() : nullptr, dS0.f(), cudaStreamPerThread);
    finish("backward");
    dq_ = toHost(dq.p, nq);
    dk_ = toHost(dk.p, nq);
    dv_ = toHost(dv.p, nv);
    if (ng) dg_ = toHost(dg.p, ng);
    if (nb) dbeta_ = toHost(dbeta.p, nb);
    dS0_ = toHost(dS0.p, ns);
  }
  Napi::Value result(Napi::Env env) override {
    Napi::Object r = Napi::Object::New(env);
    r.Set("dq", toJs(env, dq_));
    r.Set("dk", toJs(env, dk_));
    r.Set("dv", toJs(env, dv_));
    if (a_.gateSize()) r.Set("dg", toJs(env, dg_));
    if (a_.delta()) r.Set("dbeta", toJs(env, dbeta_));
    r.Set("dInitialState", toJs(env, dS0_));
    return r;
  }

 private:
  Attn a_;
  Vec s0_, dO_, dSf_;
  Res dq_, dk_, dv_, dg_, dbeta_, dS0_;
};

class SummaryJob : public Job {
 public:
  explicit SummaryJob(const Napi::CallbackInfo& info) : Job(info.Env()) { a_.parse(info, 0, true); }

 protected:
  size_t aSize() const {
    switch (a_.kind) {
      case ga::kLinear:
        return 0;
      case ga::kScalarGate:
        return a_.H;
      case ga::kVectorGate:
        return static_cast<size_t>(a_.H) * a_.dk;
      default:
        return static_cast<size_t>(a_.H) * a_.dk * a_.dk;
    }
  }
  void run() override {
    ga::Problem p = a_.upload();
    const size_t na = aSize(), ns = a_.stateSize();
    DevMem a(na * sizeof(float)), u(ns * sizeof(float));
    ga::summary(p, na ? a.f() : nullptr, u.f(), cudaStreamPerThread);
    finish("summary");
    aOut_ = toHost(a.p, na);
    u_ = toHost(u.p, ns);
  }
  Napi::Value result(Napi::Env env) override {
    Napi::Object r = Napi::Object::New(env);
    r.Set("a", toJs(env, aOut_));
    r.Set("u", toJs(env, u_));
    return r;
  }

 private:
  Attn a_;
  Res aOut_, u_;
};

class StateGradJob : public Job {
 public:
  explicit StateGradJob(const Napi::CallbackInfo& info) : Job(info.Env()) {
    const size_t at = a_.parse(info, 0, true);
    dO_ = arrayArg(info, at, "dO");
  }

 protected:
  void run() override {
    ga::Problem p = a_.upload();
    needSize(dO_, a_.tokens() * a_.dv, "dO");
    auto dO = uploadOptional(dO_);
    DevMem d(a_.stateSize() * sizeof(float));
    ga::stateGrad(p, ptr(dO), d.f(), cudaStreamPerThread);
    finish("stateGrad");
    d_ = toHost(d.p, a_.stateSize());
  }
  Napi::Value result(Napi::Env env) override { return toJs(env, d_); }

 private:
  Attn a_;
  Vec dO_;
  Res d_;
};

class AddStateTermJob : public Job {
 public:
  explicit AddStateTermJob(const Napi::CallbackInfo& info) : Job(info.Env()) {
    size_t at = a_.parse(info, 0, false);
    state_ = arrayArg(info, at++, "state");
    o_ = arrayArg(info, at++, "o");
  }

 protected:
  void run() override {
    ga::Problem p = a_.upload();
    needSize(state_, a_.stateSize(), "state");
    needSize(o_, a_.tokens() * a_.dv, "o");
    auto state = uploadOptional(state_);
    DevMem o = toDevice(o_);
    ga::addStateTerm(p, ptr(state), o.f(), cudaStreamPerThread);
    finish("addStateTerm");
    oOut_ = toHost(o.p, o_.size());
  }
  Napi::Value result(Napi::Env env) override { return toJs(env, oOut_); }

 private:
  Attn a_;
  Vec state_, o_;
  Res oOut_;
};

// ---- softmax --------------------------------------------------------------------------------

struct Soft {
  ga::SoftmaxProblem p;
  Vec q, k, v;
  std::unique_ptr<DevMem> dq_, dk_, dv_;

  size_t parse(const Napi::CallbackInfo& info) {
    p.Tq = intArg(info, 0, "Tq");
    p.Tk = intArg(info, 1, "Tk");
    p.H = intArg(info, 2, "H");
    p.dk = intArg(info, 3, "dk");
    p.dv = intArg(info, 4, "dv");
    p.qOffset = static_cast<long long>(numArg(info, 5, "qOffset"));
    p.causal = boolArg(info, 6, "causal");
    p.window = static_cast<long long>(numArg(info, 7, "window"));
    p.scale = static_cast<float>(numArg(info, 8, "scale"));
    q = arrayArg(info, 9, "q");
    k = arrayArg(info, 10, "k");
    v = arrayArg(info, 11, "v");
    return 12;
  }
  size_t nq() const { return static_cast<size_t>(p.Tq) * p.H; }
  size_t nk() const { return static_cast<size_t>(p.Tk) * p.H; }
  ga::SoftmaxProblem upload() {
    if (p.Tq < 1 || p.Tk < 1 || p.H < 1 || p.dk < 1 || p.dv < 1)
      throw std::invalid_argument("lasp cuda: Tq, Tk, H, dk and dv must be >= 1");
    needSize(q, nq() * p.dk, "q");
    needSize(k, nk() * p.dk, "k");
    needSize(v, nk() * p.dv, "v");
    dq_ = uploadOptional(q);
    dk_ = uploadOptional(k);
    dv_ = uploadOptional(v);
    ga::SoftmaxProblem d = p;
    d.q = ptr(dq_);
    d.k = ptr(dk_);
    d.v = ptr(dv_);
    return d;
  }
};

class SoftmaxForwardJob : public Job {
 public:
  explicit SoftmaxForwardJob(const Napi::CallbackInfo& info) : Job(info.Env()) { s_.parse(info); }

 protected:
  void run() override {
    ga::SoftmaxProblem p = s_.upload();
    const size_t no = s_.nq() * p.dv, nl = s_.nq();
    DevMem o(no * sizeof(float)), lse(nl * sizeof(float));
    ga::softmaxForward(p, o.f(), lse.f(), cudaStreamPerThread);
    finish("softmax forward");
    o_ = toHost(o.p, no);
    lse_ = toHost(lse.p, nl);
  }
  Napi::Value result(Napi::Env env) override {
    Napi::Object r = Napi::Object::New(env);
    r.Set("o", toJs(env, o_));
    r.Set("lse", toJs(env, lse_));
    return r;
  }

 private:
  Soft s_;
  Res o_, lse_;
};

class SoftmaxBackwardJob : public Job {
 public:
  explicit SoftmaxBackwardJob(const Napi::CallbackInfo& info) : Job(info.Env()) {
    size_t at = s_.parse(info);
    o_ = arrayArg(info, at++, "o");
    lse_ = arrayArg(info, at++, "lse");
    dO_ = arrayArg(info, at++, "dO");
  }

 protected:
  void run() override {
    ga::SoftmaxProblem p = s_.upload();
    const size_t no = s_.nq() * p.dv;
    needSize(o_, no, "o");
    needSize(lse_, s_.nq(), "lse");
    needSize(dO_, no, "dO");
    auto o = uploadOptional(o_), lse = uploadOptional(lse_), dO = uploadOptional(dO_);
    const size_t nq = s_.nq() * p.dk, nk = s_.nk() * p.dk, nv = s_.nk() * p.dv;
    DevMem dq(nq * sizeof(float)), dk(nk * sizeof(float)), dv(nv * sizeof(float));
    ga::softmaxBackward(p, ptr(o), ptr(lse), ptr(dO), dq.f(), dk.f(), dv.f(), cudaStreamPerThread);
    finish("softmax backward");
    dq_ = toHost(dq.p, nq);
    dk_ = toHost(dk.p, nk);
    dv_ = toHost(dv.p, nv);
  }
  Napi::Value result(Napi::Env env) override {
    Napi::Object r = Napi::Object::New(env);
    r.Set("dq", toJs(env, dq_));
    r.Set("dk", toJs(env, dk_));
    r.Set("dv", toJs(env, dv_));
    return r;
  }

 private:
  Soft s_;
  Vec o_, lse_, dO_;
  Res dq_, dk_, dv_;
};

}  // namespace

void RegisterGeneralAttention(Napi::Env env, Napi::Object exports) {
  exports.Set("ga_forward", Napi::Function::New(env, start<ForwardJob>));
  exports.Set("ga_backward", Napi::Function::New(env, start<BackwardJob>));
  exports.Set("ga_summary", Napi::Function::New(env, start<SummaryJob>));
  exports.Set("ga_stateGrad", Napi::Function::New(env, start<StateGradJob>));
  exports.Set("ga_addStateTerm", Napi::Function::New(env, start<AddStateTermJob>));
  exports.Set("ga_softmaxForward", Napi::Function::New(env, start<SoftmaxForwardJob>));
  exports.Set("ga_softmaxBackward", Napi::Function::New(env, start<SoftmaxBackwardJob>));
}

}  // namespace lasp_cuda_addon
