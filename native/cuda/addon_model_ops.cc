// The model ops of model_ops.h behind the lasp_cuda addon: promise-returning calls on host
// Float32Array / Int32Array inputs (the host-staged first step: every call copies its inputs to the
// device, runs the launcher, synchronises and copies the outputs back into pinned blocks that
// become the result arrays without a copy; addon_util.h). Each resolves with an object of
// Float32Arrays (and numbers); in-place ops (addInto, scaleInPlace, adamW, gemm
// with C) return the updated arrays and the TypeScript facade (native/cuda-ops.ts) copies them
// into the caller's. Arguments are checked by the facade; the checks here only keep a bad call
// from reaching the device (TypeError/RangeError thrown synchronously).
//
// Exports (argument order):
//   ops_gemm(transA, transB, M, N, K, alpha, A, B, beta, C|null)      → { C }
//   ops_addInto(dst, src)                                             → { dst }
//   ops_scaleInPlace(x, s)                                            → { x }
//   ops_rmsNorm(N, D, eps, x, w)                                      → { y, rstd }
//   ops_rmsNormBackward(N, D, x, w, rstd, dy)                         → { dx, dw }
//   ops_swiglu(a, b)                                                  → { y }
//   ops_swigluBackward(a, b, dy)                                      → { da, db }
//   ops_embedding(V, D, table, ids)                                   → { y }
//   ops_embeddingBackward(V, D, ids, dy)                              → { dTable }
//   ops_crossEntropy(N, V, scale, logits, targets)                    → { loss, count, dlogits }
//   ops_logSigmoidScaled(z, invTau)                                   → { g }
//   ops_logSigmoidScaledBackward(z, dg, invTau)                       → { dz }
//   ops_sigmoid(z)                                                    → { y }
//   ops_sigmoidBackward(y, dy)                                        → { dz }
//   ops_l2NormalizeRows(rows, d, x, eps)                              → { y, inv }
//   ops_l2NormalizeRowsBackward(rows, d, y, inv, dy)                  → { dx }
//   ops_shortConv(B, T, C, K, silu, x, halo|null, w)                  → { y }
//   ops_shortConvBackward(B, T, C, K, silu, x, halo|null, w, dy)      → { dx, dw[, dhalo] }
//   ops_adamW(params, grads, m, v, lr, beta1, beta2, eps, weightDecay, step) → { params, m, v }
//   ops_sumSquares(arrays)                                            → { value }
//   ops_gradNorm(arrays)                                              → { value }
#include <napi.h>

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "addon_util.h"
#include "model_ops.h"

namespace lasp_cuda_addon {
namespace {

namespace ops = lasp_cuda_ops;

// The legacy default stream: every job's copies and kernels are ordered with each other.
constexpr cudaStream_t kStream = 0;

// ---- arguments (main thread) ---------------------------------------------------------------

[[noreturn]] void typeError(const Napi::CallbackInfo& info, const std::string& msg) {
  throw Napi::TypeError::New(info.Env(), "lasp cuda: " + msg);
}
[[noreturn]] void rangeError(const Napi::CallbackInfo& info, const std::string& msg) {
  throw Napi::RangeError::New(info.Env(), "lasp cuda: " + msg);
}

bool isTyped(const Napi::Value& v, napi_typedarray_type t) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == t;
}

// A Float32Array argument, read in place on the worker thread (addon_util.h).
F32In f32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !isTyped(info[i], napi_float32_array)) typeError(info, std::string(name) + " must be a Float32Array");
  return F32In(info[i].As<Napi::Float32Array>());
}

// A Float32Array, or null/undefined (has = false).
F32In f32OrNull(const Napi::CallbackInfo& info, size_t i, const char* name, bool& has) {
  has = !(i >= info.Length() || info[i].IsNull() || info[i].IsUndefined());
  return has ? f32(info, i, name) : F32In();
}

std::vector<int32_t> i32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !isTyped(info[i], napi_int32_array)) typeError(info, std::string(name) + " must be an Int32Array");
  const auto a = info[i].As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}

double num(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) typeError(info, std::string(name) + " must be a number");
  const double x = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(x)) rangeError(info, std::string(name) + " must be finite");
  return x;
}

int64_t integer(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t lo, int64_t hi) {
  const double x = num(info, i, name);
  if (x != std::floor(x) || x < static_cast<double>(lo) || x > static_cast<double>(hi))
    rangeError(info, std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return static_cast<int64_t>(x);
}

bool boolean(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsBoolean()) typeError(info, std::string(name) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

void checkLength(const Napi::CallbackInfo& info, const char* name, size_t got, int64_t want) {
  if (static_cast<int64_t>(got) != want)
    rangeError(info, std::string(name) + " must have length " + std::to_string(want) + ", got " + std::to_string(got));
}

constexpr int64_t kMaxDim = int64_t{1} << 30;

// ---- device side (worker thread) -----------------------------------------------------------

// An int32 array on the device (DevMem sized for it).
void uploadI32(const DevMem& d, const std::vector<int32_t>& x) {
  if (!x.empty()) ck(cudaMemcpy(d.p, x.data(), x.size() * sizeof(int32_t), cudaMemcpyHostToDevice), "copy to device");
}

template <class T>
T scalarToHost(const void* p) {
  T v{};
  ck(cudaMemcpy(&v, p, sizeof(T), cudaMemcpyDeviceToHost), "copy to host");
  return v;
}

// Throws (as the CPU ops do) naming the first element of ids outside [lo, hi).
void checkRange(const char* name, const std::vector<int32_t>& ids, int64_t lo, int64_t hi) {
  for (size_t i = 0; i < ids.size(); i++)
    if (ids[i] < lo || ids[i] >= hi)
      throw std::invalid_argument(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(ids[i]) + " is out of range [" +
                                  std::to_string(lo) + ", " + std::to_string(hi) + ")");
}

// The launcher's status, then the device's (a fault in a kernel shows up here).
void finish(cudaError_t launch, const char* op) {
  ck(launch, op);
  ck(cudaStreamSynchronize(kStream), op);
}

// What a job resolves with: named float32 arrays and numbers.
struct Out {
  std::vector<std::pair<const char*, HostOut>> arrays;
  std::vector<std::pair<const char*, double>> numbers;
  void array(const char* name, HostOut v) { arrays.emplace_back(name, std::move(v)); }
  void number(const char* name, double v) { numbers.emplace_back(name, v); }
};

using Body = std::function<void(Out&)>;

// Runs `body` (which holds its inputs' references) off the JavaScript thread; resolves with an
// object built from its Out on the main thread, or rejects with `lasp cuda: <what went wrong>`.
class OpWorker : public Napi::AsyncWorker {
 public:
  OpWorker(Napi::Env env, Body body)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), body_(std::move(body)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      ck(cudaSetDevice(0), "cudaSetDevice");
      (void)cudaGetLastError();  // an earlier job's failure on this thread is not this job's
      body_(out_);
    } catch (const std::exception& e) {
      SetError(std::string("lasp cuda: ") + e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object r = Napi::Object::New(env);
    for (auto& [name, v] : out_.arrays) r.Set(name, v.toJs(env));
    for (const auto& [name, x] : out_.numbers) r.Set(name, Napi::Number::New(env, x));
    deferred_.Resolve(r);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Body body_;
  Out out_;
};

Napi::Value queue(const Napi::CallbackInfo& info, Body body) {
  auto* w = new OpWorker(info.Env(), std::move(body));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// ---- the ops -------------------------------------------------------------------------------

Napi::Value Gemm(const Napi::CallbackInfo& info) {
  const bool ta = boolean(info, 0, "transA"), tb = boolean(info, 1, "transB");
  const int M = static_cast<int>(integer(info, 2, "M", 0, kMaxDim));
  const int N = static_cast<int>(integer(info, 3, "N", 0, kMaxDim));
  const int K = static_cast<int>(integer(info, 4, "K", 0, kMaxDim));
  const float alpha = static_cast<float>(num(info, 5, "alpha"));
  auto A = f32(info, 6, "A");
  auto B = f32(info, 7, "B");
  const float beta = static_cast<float>(num(info, 8, "beta"));
  bool hasC = false;
  auto C = f32OrNull(info, 9, "C", hasC);
  const int64_t MN = static_cast<int64_t>(M) * N;
  checkLength(info, "A", A.size(), static_cast<int64_t>(M) * K);
  checkLength(info, "B", B.size(), static_cast<int64_t>(K) * N);
  if (hasC) checkLength(info, "C", C.size(), MN);
  return queue(info, [=, A = std::move(A), B = std::move(B), C = std::move(C)](Out& out) {
    DevMem dA = toDevice(A), dB = toDevice(B);
    DevMem dC(static_cast<size_t>(MN) * sizeof(float));
    if (hasC) {
      if (MN) ck(cudaMemcpy(dC.p, C.data(), MN * sizeof(float), cudaMemcpyHostToDevice), "copy to device");
    } else {
      ck(cudaMemset(dC.p, 0, MN * sizeof(float)), "cudaMemset");
    }
    finish(ops::gemm(M, N, K, dA.f(), dB.f(), dC.f(), ta, tb, alpha, beta, kStream), "gemm");
    out.array("C", toHost(dC.p, MN));
  });
}

Napi::Value AddInto(const Napi::CallbackInfo& info) {
  auto dst = f32(info, 0, "dst");
  auto src = f32(info, 1, "src");
  checkLength(info, "src", src.size(), static_cast<int64_t>(dst.size()));
  return queue(info, [dst = std::move(dst), src = std::move(src)](Out& out) {
    const int64_t n = static_cast<int64_t>(dst.size());
    DevMem d = toDevice(dst), s = toDevice(src);
    finish(ops::addInto(d.f(), s.f(), n, kStream), "addInto");
    out.array("dst", toHost(d.p, n));
  });
}

Napi::Value ScaleInPlace(const Napi::CallbackInfo& info) {
  auto x = f32(info, 0, "x");
  const float s = static_cast<float>(num(info, 1, "s"));
  return queue(info, [x = std::move(x), s](Out& out) {
    const int64_t n = static_cast<int64_t>(x.size());
    DevMem d = toDevice(x);
    finish(ops::scaleInPlace(d.f(), n, s, kStream), "scaleInPlace");
    out.array("x", toHost(d.p, n));
  });
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  const int64_t N = integer(info, 0, "N", 1, kMaxDim);
  const int D = static_cast<int>(integer(info, 1, "D", 1, kMaxDim));
  const float eps = static_cast<float>(num(info, 2, "eps"));
  auto x = f32(info, 3, "x");
  auto w = f32(info, 4, "w");
  checkLength(info, "x", x.size(), N * D);
  checkLength(info, "w", w.size(), D);
  return queue(info, [=, x = std::move(x), w = std::move(w)](Out& out) {
    DevMem dx = toDevice(x), dw = toDevice(w), y(x.size() * sizeof(float)), rstd(N * sizeof(float));
    finish(ops::rmsNormForward(dx.f(), dw.f(), N, D, eps, y.f(), rstd.f(), kStream), "rmsNorm");
    out.array("y", toHost(y.p, N * D));
    out.array("rstd", toHost(rstd.p, N));
  });
}

Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  const int64_t N = integer(info, 0, "N", 1, kMaxDim);
  const int D = static_cast<int>(integer(info, 1, "D", 1, kMaxDim));
  auto x = f32(info, 2, "x");
  auto w = f32(info, 3, "w");
  auto rstd = f32(info, 4, "rstd");
  auto dy = f32(info, 5, "dy");
  checkLength(info, "x", x.size(), N * D);
  checkLength(info, "w", w.size(), D);
  checkLength(info, "rstd", rstd.size(), N);
  checkLength(info, "dy", dy.size(), N * D);
  return queue(info, [=, x = std::move(x), w = std::move(w), rstd = std::move(rstd), dy = std::move(dy)](Out& out) {
    DevMem d_x = toDevice(x), d_w = toDevice(w), d_r = toDevice(rstd), d_dy = toDevice(dy);
    DevMem dx(x.size() * sizeof(float)), dw(w.size() * sizeof(float));
    finish(ops::rmsNormBackward(d_x.f(), d_w.f(), d_r.f(), d_dy.f(), N, D, dx.f(), dw.f(), kStream), "rmsNormBackward");
    out.array("dx", toHost(dx.p, N * D));
    out.array("dw", toHost(dw.p, D));
  });
}

Napi::Value Swiglu(const Napi::CallbackInfo& info) {
  auto a = f32(info, 0, "a");
  auto b = f32(info, 1, "b");
  checkLength(info, "b", b.size(), static_cast<int64_t>(a.size()));
  return queue(info, [a = std::move(a), b = std::move(b)](Out& out) {
    const int64_t n = static_cast<int64_t>(a.size());
    DevMem da = toDevice(a), db = toDevice(b), y(n * sizeof(float));
    finish(ops::swigluForward(da.f(), db.f(), n, y.f(), kStream), "swiglu");
    out.array("y", toHost(y.p, n));
  });
}

Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  auto a = f32(info, 0, "a");
  auto b = f32(info, 1, "b");
  auto dy = f32(info, 2, "dy");
  checkLength(info, "b", b.size(), static_cast<int64_t>(a.size()));
  checkLength(info, "dy", dy.size(), static_cast<int64_t>(a.size()));
  return queue(info, [a = std::move(a), b = std::move(b), dy = std::move(dy)](Out& out) {
    const int64_t n = static_cast<int64_t>(a.size());
    DevMem d_a = toDevice(a), d_b = toDevice(b), d_dy = toDevice(dy), da(n * sizeof(float)), db(n * sizeof(float));
    finish(ops::swigluBackward(d_a.f(), d_b.f(), d_dy.f(), n, da.f(), db.f(), kStream), "swigluBackward");
    out.array("da", toHost(da.p, n));
    out.array("db", toHost(db.p, n));
  });
}

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  const int V = static_cast<int>(integer(info, 0, "V", 1, kMaxDim));
  const int D = static_cast<int>(integer(info, 1, "D", 1, kMaxDim));
  auto table = f32(info, 2, "table");
  auto ids = i32(info, 3, "ids");
  checkLength(info, "table", table.size(), static_cast<int64_t>(V) * D);
  return queue(info, [=, table = std::move(table), ids = std::move(ids)](Out& out) {
    checkRange("ids", ids, 0, V);
    const int64_t N = static_cast<int64_t>(ids.size());
    DevMem dt = toDevice(table), di(ids.size() * sizeof(int32_t)), y(N * D * sizeof(float));
    uploadI32(di, ids);
    finish(ops::embeddingForward(dt.f(), di.i(), N, V, D, y.f(), kStream), "embedding");
    out.array("y", toHost(y.p, N * D));
  });
}

Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  const int V = static_cast<int>(integer(info, 0, "V", 1, kMaxDim));
  const int D = static_cast<int>(integer(info, 1, "D", 1, kMaxDim));
  auto ids = i32(info, 2, "ids");
  auto dy = f32(info, 3, "dy");
  checkLength(info, "dy", dy.size(), static_cast<int64_t>(ids.size()) * D);
  return queue(info, [=, ids = std::move(ids), dy = std::move(dy)](Out& out) {
    checkRange("ids", ids, 0, V);
    const int64_t N = static_cast<int64_t>(ids.size()), VD = static_cast<int64_t>(V) * D;
    DevMem di(ids.size() * sizeof(int32_t)), ddy = toDevice(dy), dt(VD * sizeof(float));
    uploadI32(di, ids);
    finish(ops::embeddingBackward(di.i(), ddy.f(), N, V, D, dt.f(), kStream), "embeddingBackward");
    out.array("dTable", toHost(dt.p, VD));
  });
}

Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  const int64_t N = integer(info, 0, "N", 1, kMaxDim);
  const int V = static_cast<int>(integer(info, 1, "V", 1, kMaxDim));
  const float scale = static_cast<float>(num(info, 2, "scale"));
  auto logits = f32(info, 3, "logits");
  auto targets = i32(info, 4, "targets");
  checkLength(info, "logits", logits.size(), N * V);
  checkLength(info, "targets", targets.size(), N);
  return queue(info, [=, logits = std::move(logits), targets = std::move(targets)](Out& out) {
    checkRange("targets", targets, -1, V);
    DevMem dl = toDevice(logits), dt(targets.size() * sizeof(int32_t)), dd(logits.size() * sizeof(float));
    uploadI32(dt, targets);
    DevMem loss(sizeof(double)), count(sizeof(int64_t));
    finish(ops::crossEntropy(dl.f(), dt.i(), N, V, scale, dd.f(), static_cast<double*>(loss.p), static_cast<int64_t*>(count.p), kStream),
           "crossEntropy");
    out.array("dlogits", toHost(dd.p, N * V));
    out.number("loss", scalarToHost<double>(loss.p));
    out.number("count", static_cast<double>(scalarToHost<int64_t>(count.p)));
  });
}

Napi::Value LogSigmoidScaled(const Napi::CallbackInfo& info) {
  auto z = f32(info, 0, "z");
  const float invTau = static_cast<float>(num(info, 1, "invTau"));
  return queue(info, [z = std::move(z), invTau](Out& out) {
    const int64_t n = static_cast<int64_t>(z.size());
    DevMem dz = toDevice(z), g(n * sizeof(float));
    finish(ops::logSigmoidScaled(dz.f(), n, invTau, g.f(), kStream), "logSigmoidScaled");
    out.array("g", toHost(g.p, n));
  });
}

Napi::Value LogSigmoidScaledBackward(const Napi::CallbackInfo& info) {
  auto z = f32(info, 0, "z");
  auto dg = f32(info, 1, "dg");
  const float invTau = static_cast<float>(num(info, 2, "invTau"));
  checkLength(info, "dg", dg.size(), static_cast<int64_t>(z.size()));
  return queue(info, [z = std::move(z), dg = std::move(dg), invTau](Out& out) {
    const int64_t n = static_cast<int64_t>(z.size());
    DevMem d_z = toDevice(z), d_g = toDevice(dg), dz(n * sizeof(float));
    finish(ops::logSigmoidScaledBackward(d_z.f(), d_g.f(), n, invTau, dz.f(), kStream), "logSigmoidScaledBackward");
    out.array("dz", toHost(dz.p, n));
  });
}

Napi::Value Sigmoid(const Napi::CallbackInfo& info) {
  auto z = f32(info, 0, "z");
  return queue(info, [z = std::move(z)](Out& out) {
    const int64_t n = static_cast<int64_t>(z.size());
    DevMem dz = toDevice(z), y(n * sizeof(float));
    finish(ops::sigmoidForward(dz.f(), n, y.f(), kStream), "sigmoid");
    out.array("y", toHost(y.p, n));
  });
}

Napi::Value SigmoidBackward(const Napi::CallbackInfo& info) {
  auto y = f32(info, 0, "y");
  auto dy = f32(info, 1, "dy");
  checkLength(info, "dy", dy.size(), static_cast<int64_t>(y.size()));
  return queue(info, [y = std::move(y), dy = std::move(dy)](Out& out) {
    const int64_t n = static_cast<int64_t>(y.size());
    DevMem d_y = toDevice(y), d_dy = toDevice(dy), dz(n * sizeof(float));
    finish(ops::sigmoidBackward(d_y.f(), d_dy.f(), n, dz.f(), kStream), "sigmoidBackward");
    out.array("dz", toHost(dz.p, n));
  });
}

Napi::Value L2NormalizeRows(const Napi::CallbackInfo& info) {
  const int64_t rows = integer(info, 0, "rows", 0, kMaxDim);
  const int d = static_cast<int>(integer(info, 1, "d", 1, kMaxDim));
  auto x = f32(info, 2, "x");
  const float eps = static_cast<float>(num(info, 3, "eps"));
  checkLength(info, "x", x.size(), rows * d);
  return queue(info, [=, x = std::move(x)](Out& out) {
    DevMem dx = toDevice(x), y(x.size() * sizeof(float)), inv(rows * sizeof(float));
    finish(ops::l2NormalizeRows(dx.f(), rows, d, eps, y.f(), inv.f(), kStream), "l2NormalizeRows");
    out.array("y", toHost(y.p, rows * d));
    out.array("inv", toHost(inv.p, rows));
  });
}

Napi::Value L2NormalizeRowsBackward(const Napi::CallbackInfo& info) {
  const int64_t rows = integer(info, 0, "rows", 0, kMaxDim);
  const int d = static_cast<int>(integer(info, 1, "d", 1, kMaxDim));
  auto y = f32(info, 2, "y");
  auto inv = f32(info, 3, "inv");
  auto dy = f32(info, 4, "dy");
  checkLength(info, "y", y.size(), rows * d);
  checkLength(info, "inv", inv.size(), rows);
  checkLength(info, "dy", dy.size(), rows * d);
  return queue(info, [=, y = std::move(y), inv = std::move(inv), dy = std::move(dy)](Out& out) {
    DevMem d_y = toDevice(y), d_inv = toDevice(inv), d_dy = toDevice(dy), dx(y.size() * sizeof(float));
    finish(ops::l2NormalizeRowsBackward(d_y.f(), d_inv.f(), d_dy.f(), rows, d, dx.f(), kStream), "l2NormalizeRowsBackward");
    out.array("dx", toHost(dx.p, rows * d));
  });
}

struct ConvShape {
  int B, C, K;
  int64_t T;
  bool silu;
};

ConvShape convShape(const Napi::CallbackInfo& info) {
  ConvShape s{};
  s.B = static_cast<int>(integer(info, 0, "B", 1, kMaxDim));
  s.T = integer(info, 1, "T", 1, kMaxDim);
  s.C = static_cast<int>(integer(info, 2, "C", 1, kMaxDim));
  s.K = static_cast<int>(integer(info, 3, "K", 1, 64));
  s.silu = boolean(info, 4, "silu");
  return s;
}

Napi::Value ShortConv(const Napi::CallbackInfo& info) {
  const ConvShape s = convShape(info);
  auto x = f32(info, 5, "x");
  bool hasHalo = false;
  auto halo = f32OrNull(info, 6, "halo", hasHalo);
  auto w = f32(info, 7, "w");
  const int64_t n = static_cast<int64_t>(s.B) * s.T * s.C;
  checkLength(info, "x", x.size(), n);
  if (hasHalo) checkLength(info, "halo", halo.size(), static_cast<int64_t>(s.B) * (s.K - 1) * s.C);
  checkLength(info, "w", w.size(), static_cast<int64_t>(s.K) * s.C);
  return queue(info, [=, x = std::move(x), halo = std::move(halo), w = std::move(w)](Out& out) {
    DevMem dx = toDevice(x), dh = toDevice(halo), dw = toDevice(w), y(n * sizeof(float));
    finish(ops::shortConvForward(dx.f(), hasHalo ? dh.f() : nullptr, dw.f(), s.B, s.T, s.C, s.K, s.silu, y.f(), kStream), "shortConv");
    out.array("y", toHost(y.p, n));
  });
}

Napi::Value ShortConvBackward(const Napi::CallbackInfo& info) {
  const ConvShape s = convShape(info);
  auto x = f32(info, 5, "x");
  bool hasHalo = false;
  auto halo = f32OrNull(info, 6, "halo", hasHalo);
  auto w = f32(info, 7, "w");
  auto dy = f32(info, 8, "dy");
  const int64_t n = static_cast<int64_t>(s.B) * s.T * s.C, nh = static_cast<int64_t>(s.B) * (s.K - 1) * s.C;
  const int64_t nw = static_cast<int64_t>(s.K) * s.C;
  checkLength(info, "x", x.size(), n);
  if (hasHalo) checkLength(info, "halo", halo.size(), nh);
  checkLength(info, "w", w.size(), nw);
  checkLength(info, "dy", dy.size(), n);
  return queue(info, [=, x = std::move(x), halo = std::move(halo), w = std::move(w), dy = std::move(dy)](Out& out) {
    DevMem d_x = toDevice(x), d_h = toDevice(halo), d_w = toDevice(w), d_dy = toDevice(dy);
    DevMem dx(n * sizeof(float)), dw(nw * sizeof(float)), dh(nh * sizeof(float));
    finish(ops::shortConvBackward(d_x.f(), hasHalo ? d_h.f() : nullptr, d_w.f(), d_dy.f(), s.B, s.T, s.C, s.K, s.silu, dx.f(), dw.f(),
                                  hasHalo ? dh.f() : nullptr, kStream),
           "shortConvBackward");
    out.array("dx", toHost(dx.p, n));
    out.array("dw", toHost(dw.p, nw));
    if (hasHalo) out.array("dhalo", toHost(dh.p, nh));
  });
}

Napi::Value AdamW(const Napi::CallbackInfo& info) {
  auto p = f32(info, 0, "params");
  auto g = f32(info, 1, "grads");
  auto m = f32(info, 2, "m");
  auto v = f32(info, 3, "v");
  const int64_t n = static_cast<int64_t>(p.size());
  checkLength(info, "grads", g.size(), n);
  checkLength(info, "m", m.size(), n);
  checkLength(info, "v", v.size(), n);
  const float lr = static_cast<float>(num(info, 4, "lr"));
  const float beta1 = static_cast<float>(num(info, 5, "beta1"));
  const float beta2 = static_cast<float>(num(info, 6, "beta2"));
  const float eps = static_cast<float>(num(info, 7, "eps"));
  const float wd = static_cast<float>(num(info, 8, "weightDecay"));
  const int64_t step = integer(info, 9, "step", 1, kMaxDim);
  if (!(beta1 >= 0.f && beta1 < 1.f)) rangeError(info, "beta1 must be in [0, 1)");
  if (!(beta2 >= 0.f && beta2 < 1.f)) rangeError(info, "beta2 must be in [0, 1)");
  return queue(info, [=, p = std::move(p), g = std::move(g), m = std::move(m), v = std::move(v)](Out& out) {
    DevMem dp = toDevice(p), dg = toDevice(g), dm = toDevice(m), dv = toDevice(v);
    finish(ops::adamW(dp.f(), dg.f(), dm.f(), dv.f(), n, lr, beta1, beta2, eps, wd, step, kStream), "adamW");
    out.array("params", toHost(dp.p, n));
    out.array("m", toHost(dm.p, n));
    out.array("v", toHost(dv.p, n));
  });
}

// sumSquares / gradNorm over an array of Float32Arrays.
Napi::Value SquaresJob(const Napi::CallbackInfo& info, bool norm) {
  if (info.Length() < 1 || !info[0].IsArray()) typeError(info, "arrays must be an array of Float32Arrays");
  const auto list = info[0].As<Napi::Array>();
  std::vector<F32In> xs;
  for (uint32_t i = 0; i < list.Length(); i++) {
    const Napi::Value e = list.Get(i);
    if (!isTyped(e, napi_float32_array)) typeError(info, "arrays[" + std::to_string(i) + "] must be a Float32Array");
    xs.emplace_back(e.As<Napi::Float32Array>());
  }
  return queue(info, [xs = std::move(xs), norm](Out& out) {
    std::vector<std::unique_ptr<DevMem>> dev;
    std::vector<const float*> ptrs;
    std::vector<int64_t> ns;
    for (const auto& x : xs) {
      dev.push_back(std::make_unique<DevMem>(x.size() * sizeof(float)));
      if (!x.empty()) ck(cudaMemcpy(dev.back()->p, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice), "copy to device");
      ptrs.push_back(dev.back()->f());
      ns.push_back(static_cast<int64_t>(x.size()));
    }
    DevMem r(sizeof(double));
    const int count = static_cast<int>(xs.size());
    finish(norm ? ops::gradNorm(count, ptrs.data(), ns.data(), static_cast<double*>(r.p), kStream)
                : ops::sumSquares(count, ptrs.data(), ns.data(), static_cast<double*>(r.p), kStream),
           norm ? "gradNorm" : "sumSquares");
    out.number("value", scalarToHost<double>(r.p));
  });
}

Napi::Value SumSquares(const Napi::CallbackInfo& info) { return SquaresJob(info, false); }
Napi::Value GradNorm(const Napi::CallbackInfo& info) { return SquaresJob(info, true); }

}  // namespace

void RegisterModelOps(Napi::Env env, Napi::Object exports) {
  const std::pair<const char*, Napi::Value (*)(const Napi::CallbackInfo&)> fns[] = {
      {"ops_gemm", Gemm},
      {"ops_addInto", AddInto},
      {"ops_scaleInPlace", ScaleInPlace},
      {"ops_rmsNorm", RmsNorm},
      {"ops_rmsNormBackward", RmsNormBackward},
      {"ops_swiglu", Swiglu},
      {"ops_swigluBackward", SwigluBackward},
      {"ops_embedding", Embedding},
      {"ops_embeddingBackward", EmbeddingBackward},
      {"ops_crossEntropy", CrossEntropy},
      {"ops_logSigmoidScaled", LogSigmoidScaled},
      {"ops_logSigmoidScaledBackward", LogSigmoidScaledBackward},
      {"ops_sigmoid", Sigmoid},
      {"ops_sigmoidBackward", SigmoidBackward},
      {"ops_l2NormalizeRows", L2NormalizeRows},
      {"ops_l2NormalizeRowsBackward", L2NormalizeRowsBackward},
      {"ops_shortConv", ShortConv},
      {"ops_shortConvBackward", ShortConvBackward},
      {"ops_adamW", AdamW},
      {"ops_sumSquares", SumSquares},
      {"ops_gradNorm", GradNorm},
  };
  for (const auto& [name, fn] : fns) exports.Set(name, Napi::Function::New(env, fn, name));
}

}  // namespace lasp_cuda_addon
