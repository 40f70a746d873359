// Node-API bindings. Every kernel runs in a Napi::AsyncWorker on the libuv pool (which fans out
// to the kernel thread pool), so the JavaScript thread stays free for gRPC, heartbeats and queue
// locks while a kernel runs. Arguments are checked here too (lengths against the sizes given):
// the addon never reads or writes outside the arrays it was handed, whoever calls it. The
// typed arrays are pinned by references for the duration of the job; worker threads see only
// raw pointers, never JS objects.
#include <napi.h>

#include <cmath>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "buffer_pool.h"
#include "gemm.h"
#include "linear_attention.h"
#include "model_ops.h"
#include "random.h"
#include "short_conv.h"
#include "softmax_attention.h"
#include "threadpool.h"
#include "vecmath.h"

namespace lasp {
// h2_addon.cc: the H2Client and H2Listener classes of the native peer transport.
void InitH2(Napi::Env env, Napi::Object exports);
}  // namespace lasp

namespace {

using lasp::Kind;

// Makes the promise's value on the JavaScript thread after the work is done (default: undefined).
using ResultFn = std::function<Napi::Value(Napi::Env)>;

class Job : public Napi::AsyncWorker {
 public:
  Job(Napi::Env env, std::function<void()> work, std::vector<Napi::ObjectReference> keep, ResultFn result)
      : Napi::AsyncWorker(env, "lasp.kernel"),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        keep_(std::move(keep)),
        result_(std::move(result)) {}

  void Execute() override {
    try {
      work_();
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("unknown native error");
    }
  }
  void OnOK() override { deferred_.Resolve(result_ ? result_(Env()) : Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }
  Napi::Promise promise() const { return deferred_.Promise(); }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<void()> work_;
  std::vector<Napi::ObjectReference> keep_;
  ResultFn result_;
};

// Reads arguments in order, with named errors, and pins the arrays it hands out.
class Args {
 public:
  explicit Args(const Napi::CallbackInfo& info) : info_(info) {}

  int integer(const char* name, int64_t min, int64_t max) {
    Napi::Value v = next(name);
    if (!v.IsNumber()) fail(std::string(name) + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::floor(d) || d < static_cast<double>(min) || d > static_cast<double>(max))
      fail(std::string(name) + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    return static_cast<int>(d);
  }
  double number(const char* name) {
    Napi::Value v = next(name);
    if (!v.IsNumber()) fail(std::string(name) + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d)) fail(std::string(name) + " must be finite");
    return d;
  }
  bool boolean(const char* name) {
    Napi::Value v = next(name);
    if (!v.IsBoolean()) fail(std::string(name) + " must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }
  // A Float32Array of exactly `len` elements (or null when nullable).
  float* f32(const char* name, int64_t len, bool nullable = false) {
    Napi::Value v = next(name);
    if (nullable && (v.IsNull() || v.IsUndefined())) return nullptr;
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      fail(std::string(name) + " must be a Float32Array");
    auto arr = v.As<Napi::Float32Array>();
    if (static_cast<int64_t>(arr.ElementLength()) != len)
      fail(std::string(name) + " must have length " + std::to_string(len) + ", got " + std::to_string(arr.ElementLength()));
    keep_.push_back(Napi::Persistent(arr.As<Napi::Object>()));
    return arr.Data();
  }

  // An Int32Array of exactly `len` elements.
  int32_t* i32(const char* name, int64_t len) {
    Napi::Value v = next(name);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      fail(std::string(name) + " must be an Int32Array");
    auto arr = v.As<Napi::Int32Array>();
    if (static_cast<int64_t>(arr.ElementLength()) != len)
      fail(std::string(name) + " must have length " + std::to_string(len) + ", got " + std::to_string(arr.ElementLength()));
    keep_.push_back(Napi::Persistent(arr.As<Napi::Object>()));
    return arr.Data();
  }
  // A JavaScript array of Float32Arrays of any lengths: (data, length) of each.
  std::vector<std::pair<const float*, int64_t>> f32_list(const char* name) {
    Napi::Value v = next(name);
    if (!v.IsArray()) fail(std::string(name) + " must be an array of Float32Arrays");
    auto list = v.As<Napi::Array>();
    std::vector<std::pair<const float*, int64_t>> out;
    for (uint32_t i = 0; i < list.Length(); ++i) {
      Napi::Value e = list.Get(i);
      if (!e.IsTypedArray() || e.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        fail(std::string(name) + "[" + std::to_string(i) + "] must be a Float32Array");
      auto arr = e.As<Napi::Float32Array>();
      keep_.push_back(Napi::Persistent(arr.As<Napi::Object>()));
      out.emplace_back(arr.Data(), static_cast<int64_t>(arr.ElementLength()));
    }
    return out;
  }
  // A finite number in [min, max] (or (min, max] when min is exclusive).
  double number_in(const char* name, double min, double max, bool min_exclusive = false) {
    double d = number(name);
    if (d < min || d > max || (min_exclusive && d == min))
      fail(std::string(name) + " must be in " + (min_exclusive ? "(" : "[") + std::to_string(min) + ", " +
           std::to_string(max) + "], got " + std::to_string(d));
    return d;
  }

  // The saved forward states handed out by laForward(save = true), or null.
  std::shared_ptr<lasp::SavedStates> saved(const char* name) {
    Napi::Value v = next(name);
    if (v.IsNull() || v.IsUndefined()) return nullptr;
    if (!v.IsExternal()) fail(std::string(name) + " must be the handle a forward with save returned");
    return *v.As<Napi::External<std::shared_ptr<lasp::SavedStates>>>().Data();
  }

  Napi::Value run(std::function<void()> work, ResultFn result = nullptr) {
    auto* job = new Job(info_.Env(), std::move(work), std::move(keep_), std::move(result));
    Napi::Promise p = job->promise();
    job->Queue();
    return p;
  }

 private:
  Napi::Value next(const char* name) {
    if (pos_ >= info_.Length()) fail(std::string("missing argument ") + name);
    return info_[pos_++];
  }
  [[noreturn]] void fail(const std::string& msg) { throw Napi::TypeError::New(info_.Env(), "lasp native: " + msg); }

  const Napi::CallbackInfo& info_;
  size_t pos_ = 0;
  std::vector<Napi::ObjectReference> keep_;
};

constexpr int64_t kMaxDim = 1 << 30;


// Reads kind, (causal), T, H, dk, dv, chunk, q, k, v, g, beta into a problem.
lasp::LAProblem read_problem(Args& a, bool with_causal) {
  lasp::LAProblem p;
  p.kind = static_cast<Kind>(a.integer("kind", 0, 4));
  p.causal = with_causal ? a.boolean("causal") : true;
  p.T = a.integer("T", 1, kMaxDim);
  p.H = a.integer("H", 1, 4096);
  p.dk = a.integer("dk", 1, 4096);
  p.dv = a.integer("dv", 1, 4096);
  p.chunk = a.integer("chunk", 1, 1024);
  const int64_t T = p.T, H = p.H;
  p.q = a.f32("q", T * H * p.dk);
  p.k = a.f32("k", T * H * p.dk);
  p.v = a.f32("v", T * H * p.dv);
  int64_t glen = p.kind == Kind::VectorGate ? T * H * p.dk : (lasp::has_gate(p.kind) ? T * H : 0);
  p.g = glen ? a.f32("g", glen) : a.f32("g", 0, true);
  p.beta = lasp::has_beta(p.kind) ? a.f32("beta", T * H) : a.f32("beta", 0, true);
  return p;
}

int64_t state_len(const lasp::LAProblem& p) { return static_cast<int64_t>(p.H) * p.dk * p.dv; }

// Wraps saved states for JavaScript; V8 is told their size so the GC sees the memory.
Napi::Value wrap_saved(Napi::Env env, const std::shared_ptr<lasp::SavedStates>& saved) {
  int64_t bytes = 0;
  for (const auto& v : saved->per_head) bytes += static_cast<int64_t>(v.size() * sizeof(float));
  Napi::MemoryManagement::AdjustExternalMemory(env, bytes);
  return Napi::External<std::shared_ptr<lasp::SavedStates>>::New(
      env, new std::shared_ptr<lasp::SavedStates>(saved),
      [bytes](Napi::Env e, std::shared_ptr<lasp::SavedStates>* p) {
        Napi::MemoryManagement::AdjustExternalMemory(e, -bytes);
        delete p;
      });
}

Napi::Value LaForward(const Napi::CallbackInfo& info) {
  Args a(info);
  lasp::LAProblem p = read_problem(a, true);
  p.s0 = a.f32("s0", state_len(p), true);
  float* o = a.f32("o", static_cast<int64_t>(p.T) * p.H * p.dv);
  float* sf = a.f32("sFinal", state_len(p));
  const bool save = a.boolean("save") && p.causal;
  std::shared_ptr<lasp::SavedStates> reuse = a.saved("reuse");
  if (!save) return a.run([p, o, sf] { lasp::la_forward(p, o, sf); });
  // Refilling an earlier save reuses its (already touched) memory: no allocation per step.
  auto saved = reuse ? reuse : std::make_shared<lasp::SavedStates>();
  if (reuse)
    return a.run([p, o, sf, saved] { lasp::la_forward(p, o, sf, saved.get()); },
                 [](Napi::Env env) { return env.Null(); });
  return a.run([p, o, sf, saved] { lasp::la_forward(p, o, sf, saved.get()); },
               [saved](Napi::Env env) { return wrap_saved(env, saved); });
}

Napi::Value LaBackward(const Napi::CallbackInfo& info) {
  Args a(info);
  lasp::LAProblem p = read_problem(a, true);
  p.s0 = a.f32("s0", state_len(p), true);
  const int64_t T = p.T, H = p.H;
  const float* dO = a.f32("dO", T * H * p.dv);
  const float* dSf = a.f32("dSFinal", state_len(p), true);
  float* dq = a.f32("dq", T * H * p.dk);
  float* dk = a.f32("dk", T * H * p.dk);
  float* dv = a.f32("dv", T * H * p.dv);
  int64_t glen = p.kind == Kind::VectorGate ? T * H * p.dk : (lasp::has_gate(p.kind) ? T * H : 0);
  float* dg = a.f32("dg", glen, true);
  float* db = a.f32("dbeta", T * H, true);
  float* ds0 = a.f32("ds0", state_len(p), true);
  std::shared_ptr<lasp::SavedStates> saved = a.saved("saved");
  return a.run([=] { lasp::la_backward(p, dO, dSf, dq, dk, dv, dg, db, ds0, saved.get()); });
}

Napi::Value LaSummary(const Napi::CallbackInfo& info) {
  Args a(info);
  lasp::LAProblem p = read_problem(a, true);
  float* A = a.f32("a", lasp::summary_a_len(p.kind, p.H, p.dk));
  float* U = a.f32("u", state_len(p));
  return a.run([=] { lasp::la_summary(p, A, U); });
}

Napi::Value LaStateGrad(const Napi::CallbackInfo& info) {
  Args a(info);
  lasp::LAProblem p = read_problem(a, true);
  const float* dO = a.f32("dO", static_cast<int64_t>(p.T) * p.H * p.dv);
  float* D = a.f32("d", state_len(p));
  return a.run([=] { lasp::la_state_grad(p, dO, D); });
}

Napi::Value LaAddStateTerm(const Napi::CallbackInfo& info) {
  Args a(info);
  lasp::LAProblem p = read_problem(a, false);
  const float* P = a.f32("states", state_len(p));
  float* o = a.f32("o", static_cast<int64_t>(p.T) * p.H * p.dv);
  return a.run([=] { lasp::la_add_state_term(p, P, o); });
}

struct FoldArgs {
  Kind kind;
  int W, H, dk, dv;
};

FoldArgs read_fold(Args& a) {
  FoldArgs f;
  f.kind = static_cast<Kind>(a.integer("kind", 0, 4));
  f.W = a.integer("W", 1, 65536);
  f.H = a.integer("H", 1, 4096);
  f.dk = a.integer("dk", 1, 4096);
  f.dv = a.integer("dv", 1, 4096);
  return f;
}

Napi::Value LaFoldStates(const Napi::CallbackInfo& info) {
  Args a(info);
  FoldArgs f = read_fold(a);
  const int64_t n = static_cast<int64_t>(f.H) * f.dk * f.dv;
  const float* A = a.f32("a", f.W * lasp::summary_a_len(f.kind, f.H, f.dk));
  const float* U = a.f32("u", f.W * n);
  const float* s0 = a.f32("s0", n, true);
  float* states = a.f32("states", (f.W + 1) * n);
  return a.run([=] { lasp::la_fold_states(f.kind, f.W, f.H, f.dk, f.dv, A, U, s0, states); });
}

Napi::Value LaSuffixFold(const Napi::CallbackInfo& info) {
  Args a(info);
  FoldArgs f = read_fold(a);
  const int64_t n = static_cast<int64_t>(f.H) * f.dk * f.dv;
  const float* A = a.f32("a", f.W * lasp::summary_a_len(f.kind, f.H, f.dk));
  const float* D = a.f32("d", f.W * n);
  const float* dF = a.f32("dFinal", n, true);
  float* e = a.f32("e", (f.W + 1) * n);
  return a.run([=] { lasp::la_suffix_fold(f.kind, f.W, f.H, f.dk, f.dv, A, D, dF, e); });
}

lasp::SoftmaxProblem read_softmax(Args& a) {
  lasp::SoftmaxProblem p;
  p.Tq = a.integer("Tq", 1, kMaxDim);
  p.Tk = a.integer("Tk", 1, kMaxDim);
  p.H = a.integer("H", 1, 4096);
  p.dk = a.integer("dk", 1, 4096);
  p.dv = a.integer("dv", 1, 4096);
  p.qOffset = a.integer("qOffset", 0, kMaxDim);
  p.causal = a.boolean("causal");
  p.window = a.integer("window", 0, kMaxDim);
  p.scale = static_cast<float>(a.number("scale"));
  p.q = a.f32("q", static_cast<int64_t>(p.Tq) * p.H * p.dk);
  p.k = a.f32("k", static_cast<int64_t>(p.Tk) * p.H * p.dk);
  p.v = a.f32("v", static_cast<int64_t>(p.Tk) * p.H * p.dv);
  return p;
}

Napi::Value SoftmaxForward(const Napi::CallbackInfo& info) {
  Args a(info);
  lasp::SoftmaxProblem p = read_softmax(a);
  float* o = a.f32("o", static_cast<int64_t>(p.Tq) * p.H * p.dv);
  float* lse = a.f32("lse", static_cast<int64_t>(p.H) * p.Tq);
  return a.run([=] { lasp::softmax_attention_forward(p, o, lse); });
}

Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  Args a(info);
  lasp::SoftmaxProblem p = read_softmax(a);
  const int64_t Tq = p.Tq, Tk = p.Tk, H = p.H;
  const float* o = a.f32("o", Tq * H * p.dv);
  const float* lse = a.f32("lse", H * Tq);
  const float* dO = a.f32("dO", Tq * H * p.dv);
  float* dq = a.f32("dq", Tq * H * p.dk);
  float* dk = a.f32("dk", Tk * H * p.dk);
  float* dv = a.f32("dv", Tk * H * p.dv);
  return a.run([=] { lasp::softmax_attention_backward(p, o, lse, dO, dq, dk, dv); });
}

Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Args a(info);
  const bool ta = a.boolean("transA"), tb = a.boolean("transB");
  const int M = a.integer("M", 0, kMaxDim), N = a.integer("N", 0, kMaxDim), K = a.integer("K", 0, kMaxDim);
  const float alpha = static_cast<float>(a.number("alpha"));
  // Dense operands: the leading dimension is the stored row length.
  const float* A = a.f32("A", static_cast<int64_t>(M) * K);
  const int lda = a.integer("lda", 0, kMaxDim);
  const float* B = a.f32("B", static_cast<int64_t>(K) * N);
  const int ldb = a.integer("ldb", 0, kMaxDim);
  const float beta = static_cast<float>(a.number("beta"));
  float* C = a.f32("C", static_cast<int64_t>(M) * N);
  const int ldc = a.integer("ldc", 0, kMaxDim);
  const bool mt = a.boolean("multiThreaded");
  if (lda != (ta ? M : K) || ldb != (tb ? K : N) || ldc != N)
    throw Napi::RangeError::New(info.Env(), "lasp native: gemm takes dense operands (lda, ldb, ldc = stored row lengths)");
  return a.run([=] {
    if (mt)
      lasp::sgemm_mt(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
      lasp::sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  });
}

// addInto(dst, src): dst += src elementwise (the reduction of AllReduce).
Napi::Value AddInto(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(info.Env(), "lasp native: dst must be a Float32Array");
  const int64_t n = static_cast<int64_t>(info[0].As<Napi::Float32Array>().ElementLength());
  Args a(info);
  float* dst = a.f32("dst", n);
  const float* src = a.f32("src", n);
  return a.run([=] { lasp::add_into(dst, src, n); });
}

// fillRandom(out, seed, offset, dist, a, b): dist 0 = normal (scale a), 1 = uniform [a, b).
Napi::Value FillRandom(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(info.Env(), "lasp native: out must be a Float32Array");
  const int64_t n = static_cast<int64_t>(info[0].As<Napi::Float32Array>().ElementLength());
  Args a(info);
  float* out = a.f32("out", n);
  const double seed = a.number("seed");
  const double offset = a.number("offset");
  const int dist = a.integer("dist", 0, 1);
  const float x = static_cast<float>(a.number("a")), y = static_cast<float>(a.number("b"));
  if (seed < 0 || offset < 0 || seed > 9007199254740991.0 || offset > 9007199254740991.0)
    throw Napi::RangeError::New(info.Env(), "lasp native: seed and offset must be integers in [0, 2^53)");
  const uint64_t s = static_cast<uint64_t>(seed), o = static_cast<uint64_t>(offset);
  return a.run([=] {
    if (dist == 0)
      lasp::fill_normal(s, o, x, out, n);
    else
      lasp::fill_uniform(s, o, x, y, out, n);
  });
}

// ---- Model ops (model_ops.h) -------------------------------------------------------------------

// rmsNormForward(N, D, eps, x, w, y, rstd)
Napi::Value RmsNormForward(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t N = a.integer("N", 1, kMaxDim);
  const int D = a.integer("D", 1, kMaxDim);
  const float eps = static_cast<float>(a.number_in("eps", 0, 1, true));
  const float* x = a.f32("x", N * D);
  const float* w = a.f32("w", D);
  float* y = a.f32("y", N * D);
  float* rstd = a.f32("rstd", N);
  return a.run([=] { lasp::rmsnorm_forward(x, w, N, D, eps, y, rstd); });
}

// rmsNormBackward(N, D, x, w, rstd, dy, dx, dw)
Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t N = a.integer("N", 1, kMaxDim);
  const int D = a.integer("D", 1, kMaxDim);
  const float* x = a.f32("x", N * D);
  const float* w = a.f32("w", D);
  const float* rstd = a.f32("rstd", N);
  const float* dy = a.f32("dy", N * D);
  float* dx = a.f32("dx", N * D);
  float* dw = a.f32("dw", D);
  return a.run([=] { lasp::rmsnorm_backward(x, w, rstd, dy, N, D, dx, dw); });
}

// swigluForward(n, a, b, y)
Napi::Value SwigluForward(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t n = a.integer("n", 0, kMaxDim);
  const float* A = a.f32("a", n);
  const float* B = a.f32("b", n);
  float* y = a.f32("y", n);
  return a.run([=] { lasp::swiglu_forward(A, B, n, y); });
}

// logSigmoidScaled(n, z, invTau, g) / logSigmoidScaledBackward(n, z, dg, invTau, dz)
Napi::Value LogSigmoidScaled(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t n = a.integer("n", 0, kMaxDim);
  const float* z = a.f32("z", n);
  const float inv_tau = static_cast<float>(a.number("invTau"));
  float* g = a.f32("g", n);
  return a.run([=] { lasp::log_sigmoid_scaled(z, n, inv_tau, g); });
}

Napi::Value LogSigmoidScaledBackward(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t n = a.integer("n", 0, kMaxDim);
  const float* z = a.f32("z", n);
  const float* dg = a.f32("dg", n);
  const float inv_tau = static_cast<float>(a.number("invTau"));
  float* dz = a.f32("dz", n);
  return a.run([=] { lasp::log_sigmoid_scaled_backward(z, dg, n, inv_tau, dz); });
}

// sigmoidForward(n, z, y) / sigmoidBackward(n, y, dy, dz)
Napi::Value SigmoidForward(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t n = a.integer("n", 0, kMaxDim);
  const float* z = a.f32("z", n);
  float* y = a.f32("y", n);
  return a.run([=] { lasp::sigmoid_forward(z, n, y); });
}

Napi::Value SigmoidBackward(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t n = a.integer("n", 0, kMaxDim);
  const float* y = a.f32("y", n);
  const float* dy = a.f32("dy", n);
  float* dz = a.f32("dz", n);
  return a.run([=] { lasp::sigmoid_backward(y, dy, n, dz); });
}

// l2NormalizeRows(rows, d, x, eps, y, inv) / l2NormalizeRowsBackward(rows, d, y, inv, dy, dx)
Napi::Value L2NormalizeRows(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t rows = a.integer("rows", 0, kMaxDim);
  const int d = a.integer("d", 1, kMaxDim);
  const float* x = a.f32("x", rows * d);
  const float eps = static_cast<float>(a.number("eps"));
  float* y = a.f32("y", rows * d);
  float* inv = a.f32("inv", rows);
  return a.run([=] { lasp::l2_normalize_rows(x, rows, d, eps, y, inv); });
}

Napi::Value L2NormalizeRowsBackward(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t rows = a.integer("rows", 0, kMaxDim);
  const int d = a.integer("d", 1, kMaxDim);
  const float* y = a.f32("y", rows * d);
  const float* inv = a.f32("inv", rows);
  const float* dy = a.f32("dy", rows * d);
  float* dx = a.f32("dx", rows * d);
  return a.run([=] { lasp::l2_normalize_rows_backward(y, inv, dy, rows, d, dx); });
}

// shortConvForward(B, T, C, K, silu, x, halo|null, w, y)
Napi::Value ShortConvForward(const Napi::CallbackInfo& info) {
  Args a(info);
  const int B = a.integer("B", 1, kMaxDim);
  const int64_t T = a.integer("T", 1, kMaxDim);
  const int C = a.integer("C", 1, kMaxDim), K = a.integer("K", 1, 64);
  const bool silu = a.boolean("silu");
  const float* x = a.f32("x", B * T * C);
  const float* halo = a.f32("halo", static_cast<int64_t>(B) * (K - 1) * C, true);
  const float* w = a.f32("w", static_cast<int64_t>(K) * C);
  float* y = a.f32("y", B * T * C);
  return a.run([=] { lasp::short_conv_forward(x, halo, w, B, T, C, K, silu, y); });
}

// shortConvBackward(B, T, C, K, silu, x, halo|null, w, dy, dx, dw, dhalo|null)
Napi::Value ShortConvBackward(const Napi::CallbackInfo& info) {
  Args a(info);
  const int B = a.integer("B", 1, kMaxDim);
  const int64_t T = a.integer("T", 1, kMaxDim);
  const int C = a.integer("C", 1, kMaxDim), K = a.integer("K", 1, 64);
  const bool silu = a.boolean("silu");
  const float* x = a.f32("x", B * T * C);
  const float* halo = a.f32("halo", static_cast<int64_t>(B) * (K - 1) * C, true);
  const float* w = a.f32("w", static_cast<int64_t>(K) * C);
  const float* dy = a.f32("dy", B * T * C);
  float* dx = a.f32("dx", B * T * C);
  float* dw = a.f32("dw", static_cast<int64_t>(K) * C);
  float* dhalo = a.f32("dhalo", static_cast<int64_t>(B) * (K - 1) * C, true);
  return a.run([=] { lasp::short_conv_backward(x, halo, w, dy, B, T, C, K, silu, dx, dw, dhalo); });
}

// swigluBackward(n, a, b, dy, da, db)
Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t n = a.integer("n", 0, kMaxDim);
  const float* A = a.f32("a", n);
  const float* B = a.f32("b", n);
  const float* dy = a.f32("dy", n);
  float* da = a.f32("da", n);
  float* db = a.f32("db", n);
  return a.run([=] { lasp::swiglu_backward(A, B, dy, n, da, db); });
}

// embeddingForward(N, V, D, table, ids, y); rejects (naming it) the first id outside [0, V).
Napi::Value EmbeddingForward(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t N = a.integer("N", 1, kMaxDim);
  const int V = a.integer("V", 1, kMaxDim), D = a.integer("D", 1, kMaxDim);
  const float* table = a.f32("table", static_cast<int64_t>(V) * D);
  const int32_t* ids = a.i32("ids", N);
  float* y = a.f32("y", N * D);
  return a.run([=] { lasp::embedding_forward(table, ids, N, V, D, y); });
}

// embeddingBackward(N, V, D, ids, dy, dTable)
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t N = a.integer("N", 1, kMaxDim);
  const int V = a.integer("V", 1, kMaxDim), D = a.integer("D", 1, kMaxDim);
  const int32_t* ids = a.i32("ids", N);
  const float* dy = a.f32("dy", N * D);
  float* dtable = a.f32("dTable", static_cast<int64_t>(V) * D);
  return a.run([=] { lasp::embedding_backward(ids, dy, N, V, D, dtable); });
}

// crossEntropy(N, V, scale, logits, targets, dlogits) resolves with { loss, count }.
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t N = a.integer("N", 1, kMaxDim);
  const int V = a.integer("V", 1, kMaxDim);
  const float scale = static_cast<float>(a.number("scale"));
  const float* logits = a.f32("logits", N * V);
  const int32_t* targets = a.i32("targets", N);
  float* dlogits = a.f32("dlogits", N * V);
  auto r = std::make_shared<lasp::CrossEntropyResult>();
  return a.run([=] { *r = lasp::cross_entropy(logits, targets, N, V, scale, dlogits); },
               [r](Napi::Env env) {
                 Napi::Object o = Napi::Object::New(env);
                 o.Set("loss", r->loss);
                 o.Set("count", static_cast<double>(r->count));
                 return o;
               });
}

// adamwStep(n, params, grads, m, v, lr, beta1, beta2, eps, weightDecay, step)
Napi::Value AdamwStep(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t n = a.integer("n", 0, kMaxDim);
  float* p = a.f32("params", n);
  const float* g = a.f32("grads", n);
  float* m = a.f32("m", n);
  float* v = a.f32("v", n);
  lasp::AdamWParams h;
  h.lr = static_cast<float>(a.number_in("lr", 0, 1e9));
  h.beta1 = static_cast<float>(a.number_in("beta1", 0, 1));
  h.beta2 = static_cast<float>(a.number_in("beta2", 0, 1));
  h.eps = static_cast<float>(a.number_in("eps", 0, 1e9, true));
  h.weight_decay = static_cast<float>(a.number_in("weightDecay", 0, 1e9));
  h.step = a.integer("step", 1, kMaxDim);
  if (h.beta1 >= 1.f) throw Napi::RangeError::New(info.Env(), "lasp native: beta1 must be < 1");
  if (h.beta2 >= 1.f) throw Napi::RangeError::New(info.Env(), "lasp native: beta2 must be < 1");
  return a.run([=] { lasp::adamw_step(p, g, m, v, n, h); });
}

// sumSquares(arrays) resolves with Σ over the arrays of Σ x², accumulated in double, arrays in order.
Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  Args a(info);
  auto arrays = a.f32_list("arrays");
  auto total = std::make_shared<double>(0.0);
  return a.run(
      [arrays, total] {
        for (const auto& [x, n] : arrays) *total += lasp::sum_squares(x, n);
      },
      [total](Napi::Env env) { return Napi::Number::New(env, *total); });
}

// scaleInPlace(n, x, s): x *= s.
Napi::Value ScaleInPlace(const Napi::CallbackInfo& info) {
  Args a(info);
  const int64_t n = a.integer("n", 0, kMaxDim);
  float* x = a.f32("x", n);
  const float s = static_cast<float>(a.number("s"));
  return a.run([=] { lasp::scale_in_place(x, n, s); });
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("isa", lasp::gemm_isa());
  o.Set("threads", lasp::num_threads());
  return o;
}

// allocF32(n): a Float32Array of n elements (contents unspecified) over a pooled block that
// returns to the pool when the array is garbage-collected (buffer_pool.h).
Napi::Value AllocF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "lasp kernels: allocF32: n must be a number").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const double d = info[0].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= static_cast<double>(kMaxDim) && d == std::floor(d))) {
    Napi::RangeError::New(env, "lasp kernels: allocF32: n must be an integer in [0, " + std::to_string(kMaxDim) + "]")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const size_t n = static_cast<size_t>(d), bytes = n * sizeof(float);
  void* p = lasp::pool_take(bytes);
  if (!p) {
    Napi::Error::New(env, "lasp kernels: allocF32: out of memory allocating " + std::to_string(bytes) + " bytes")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto ab = Napi::ArrayBuffer::New(
      env, p, bytes,
      [](Napi::Env, void* data, size_t* hint) {
        lasp::pool_give(data, *hint);
        delete hint;
      },
      new size_t(bytes));
  return Napi::Float32Array::New(env, n, ab, 0);
}

// releaseF32(array): detaches the array's buffer now, so its block returns to the pool without
// waiting for a garbage collection; every view of it then has length 0.
Napi::Value ReleaseF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) {
    Napi::TypeError::New(env, "lasp kernels: releaseF32: expected a Float32Array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::TypedArray>().ArrayBuffer();
  if (!ab.IsDetached()) ab.Detach();
  return env.Undefined();
}

// tuneAllocator(mmapThresholdBytes, trimThresholdBytes): {applied, reason} (buffer_pool.h).
Napi::Value TuneAllocator(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double v[2] = {0, 0};
  const char* names[2] = {"mmapThresholdBytes", "trimThresholdBytes"};
  for (int i = 0; i < 2; i++) {
    v[i] = info.Length() > static_cast<size_t>(i) && info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1;
    if (!(v[i] >= 0 && v[i] < 2147483648.0 && v[i] == std::floor(v[i]))) {
      Napi::RangeError::New(env, std::string("lasp kernels: tuneAllocator: ") + names[i] + " must be an integer in [0, 2^31)")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  const char* why = lasp::tune_allocator(static_cast<size_t>(v[0]), static_cast<size_t>(v[1]));
  Napi::Object o = Napi::Object::New(env);
  o.Set("applied", Napi::Boolean::New(env, *why == 0));
  o.Set("reason", Napi::String::New(env, why));
  return o;
}

// poolStats(): {idleBytes, liveBytes, hits, misses, capBytes}
Napi::Value PoolStatsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const lasp::PoolStats s = lasp::pool_stats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("idleBytes", Napi::Number::New(env, static_cast<double>(s.idle_bytes)));
  o.Set("liveBytes", Napi::Number::New(env, static_cast<double>(s.live_bytes)));
  o.Set("hits", Napi::Number::New(env, static_cast<double>(s.hits)));
  o.Set("misses", Napi::Number::New(env, static_cast<double>(s.misses)));
  o.Set("capBytes", Napi::Number::New(env, static_cast<double>(s.cap_bytes)));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("allocF32", Napi::Function::New(env, AllocF32));
  exports.Set("poolStats", Napi::Function::New(env, PoolStatsJs));
  exports.Set("tuneAllocator", Napi::Function::New(env, TuneAllocator));
  exports.Set("releaseF32", Napi::Function::New(env, ReleaseF32));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("laForward", Napi::Function::New(env, LaForward));
  exports.Set("laBackward", Napi::Function::New(env, LaBackward));
  exports.Set("laSummary", Napi::Function::New(env, LaSummary));
  exports.Set("laStateGrad", Napi::Function::New(env, LaStateGrad));
  exports.Set("laAddStateTerm", Napi::Function::New(env, LaAddStateTerm));
  exports.Set("laFoldStates", Napi::Function::New(env, LaFoldStates));
  exports.Set("laSuffixFold", Napi::Function::New(env, LaSuffixFold));
  exports.Set("softmaxForward", Napi::Function::New(env, SoftmaxForward));
  exports.Set("softmaxBackward", Napi::Function::New(env, SoftmaxBackward));
  exports.Set("addInto", Napi::Function::New(env, AddInto));
  exports.Set("fillRandom", Napi::Function::New(env, FillRandom));
  exports.Set("gemm", Napi::Function::New(env, Gemm));
  exports.Set("rmsNormForward", Napi::Function::New(env, RmsNormForward));
  exports.Set("rmsNormBackward", Napi::Function::New(env, RmsNormBackward));
  exports.Set("logSigmoidScaled", Napi::Function::New(env, LogSigmoidScaled));
  exports.Set("logSigmoidScaledBackward", Napi::Function::New(env, LogSigmoidScaledBackward));
  exports.Set("sigmoidForward", Napi::Function::New(env, SigmoidForward));
  exports.Set("sigmoidBackward", Napi::Function::New(env, SigmoidBackward));
  exports.Set("l2NormalizeRows", Napi::Function::New(env, L2NormalizeRows));
  exports.Set("l2NormalizeRowsBackward", Napi::Function::New(env, L2NormalizeRowsBackward));
  exports.Set("swigluForward", Napi::Function::New(env, SwigluForward));
  exports.Set("swigluBackward", Napi::Function::New(env, SwigluBackward));
  exports.Set("shortConvForward", Napi::Function::New(env, ShortConvForward));
  exports.Set("shortConvBackward", Napi::Function::New(env, ShortConvBackward));
  exports.Set("embeddingForward", Napi::Function::New(env, EmbeddingForward));
  exports.Set("embeddingBackward", Napi::Function::New(env, EmbeddingBackward));
  exports.Set("crossEntropy", Napi::Function::New(env, CrossEntropy));
  exports.Set("adamwStep", Napi::Function::New(env, AdamwStep));
  exports.Set("sumSquares", Napi::Function::New(env, SumSquares));
  exports.Set("scaleInPlace", Napi::Function::New(env, ScaleInPlace));
  lasp::InitH2(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(lasp_native, Init)
