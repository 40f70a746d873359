// Chunked linear attention: forward, hand-derived backward and the sequence-parallel pieces.
//
// Two families share the chunk machinery:
//  - the gate path (linear, scalar_gate, vector_gate): per chunk
//      A = mask(Q~ K~^T),  O = A V + Q~ (e^{G0} S),  S_end = diag(e^{Gc}) S + Kr^T V
//  - the delta path (delta, gated_delta): the WY form of DESIGN.md §2.1.
// Gates enter through cumulative log gates G (chunk-local, in double). Pairwise decays
// e^{G_j - G_i} are factorised as e^{Gr_j} e^{-Gr_i} with Gr = G - G_first, which is safe because
// chunk_bounds() ends a chunk before |Gr| exceeds kMaxSpan: no factor exceeds e^kMaxSpan, and
// strongly decaying gates simply give shorter chunks. Q~ = Q e^{Gr}, K~ = K e^{-Gr},
// Kr = K e^{Gr_last - Gr}; e^{G0} (the first token's own gate) is folded into the state term.
//
// Gate gradients on the gate path use the identity dG_m = q_m·dq_m - k_m·dk_m (per dimension for
// vector gates) plus <dS_end, S_end> at the chunk's last token, then a reverse cumulative sum
// inside the chunk. On the delta path they are collected from every factorised matrix X~ = X e^{±G}
// as ±rowsum(X~ ⊙ dX~).
#include "linear_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "gemm.h"
#include "threadpool.h"
#include "vecmath.h"

namespace lasp {
namespace {

constexpr double kMaxSpan = 20.0;

using Vec = std::vector<float>;

// Loops compiled for AVX2 and for the baseline; the loader picks the one the CPU supports.
#define LASP_SIMD __attribute__((target_clones("avx2", "default")))

// True when every x[i] is finite and <= hi (NaN fails).
LASP_SIMD bool all_finite_at_most(const float* x, size_t n, float hi) {
  int ok = 1;
  for (size_t i = 0; i < n; ++i) ok &= (x[i] <= hi) & (x[i] >= -3.4028234e38f);
  return ok != 0;
}

// min over the n entries of x.
LASP_SIMD float min_of(const float* x, int n) {
  float m = x[0];
  for (int i = 1; i < n; ++i) m = x[i] < m ? x[i] : m;
  return m;
}

inline size_t row_off(int t, int H, int h, int d) {
  return (static_cast<size_t>(t) * H + h) * static_cast<size_t>(d);
}

void check_inputs(const LAProblem& p) {
  if (p.T < 1 || p.H < 1 || p.dk < 1 || p.dv < 1 || p.chunk < 1)
    throw std::invalid_argument("T, H, dk, dv and chunk must be >= 1");
  if (!p.causal && p.kind != Kind::Linear)
    throw std::invalid_argument("causal=false is only defined for kind 'linear'");
  if (has_gate(p.kind)) {
    if (!p.g) throw std::invalid_argument("g (log gates) is required for this kind");
    size_t n = static_cast<size_t>(p.T) * p.H * (p.kind == Kind::VectorGate ? p.dk : 1);
    if (!all_finite_at_most(p.g, n, 0.f)) {
      for (size_t i = 0; i < n; ++i) {
        float x = p.g[i];
        if (!(x <= 0.f) || !std::isfinite(x))
          throw std::invalid_argument("g must hold finite log gates <= 0; g[" + std::to_string(i) +
                                      "] = " + std::to_string(x));
      }
    }
  }
  if (has_beta(p.kind)) {
    if (!p.beta) throw std::invalid_argument("beta is required for this kind");
    size_t n = static_cast<size_t>(p.T) * p.H;
    if (all_finite_at_most(p.beta, n, 3.4028234e38f)) return;
    for (size_t i = 0; i < n; ++i)
      if (!std::isfinite(p.beta[i]))
        throw std::invalid_argument("beta must be finite; beta[" + std::to_string(i) +
                                    "] = " + std::to_string(p.beta[i]));
  }
}

// Chunk boundaries for head h: {0, end_0, end_1, ..., T}. Without gates: every p.chunk tokens.
// With gates a chunk also ends before the cumulative gate after its first token could pass
// -kMaxSpan: for vector gates the bound sums each token's smallest gate over the dimensions
// (conservative: a chunk may end a little early, never late; any chunking is exact).
std::vector<int> chunk_bounds(const LAProblem& p, int h) {
  std::vector<int> b{0};
  if (!has_gate(p.kind)) {
    for (int t = p.chunk; t < p.T; t += p.chunk) b.push_back(t);
    b.push_back(p.T);
    return b;
  }
  const int n = p.kind == Kind::VectorGate ? p.dk : 1;
  int t = 0;
  while (t < p.T) {
    const int t0 = t++;
    double G = 0;
    while (t < p.T && t - t0 < p.chunk) {
      const double g = min_of(p.g + row_off(t, p.H, h, n), n);
      if (G + g < -kMaxSpan) break;
      G += g;
      ++t;
    }
    b.push_back(t);
  }
  return b;
}

// A read-only matrix view: element (r, c) at p[r * ld + c].
struct View {
  const float* p = nullptr;
  int ld = 0;
};

// cur = prev + g (double accumulation of float gates).
LASP_SIMD void add_row(double* cur, const double* prev, const float* g, int n) {
  for (int d = 0; d < n; ++d) cur[d] = prev[d] + g[d];
}
// r = last - r.
LASP_SIMD void subtract_from(double* r, const double* last, int n) {
  for (int d = 0; d < n; ++d) r[d] = last[d] - r[d];
}
LASP_SIMD void reciprocal(float* out, const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = 1.f / x[i];
}

// Cumulative gates of one chunk and the factors derived from them. For scalar gates n == 1.
struct GateFactors {
 public:
  int n = 0;        // factors per token: 1 (scalar) or dk (vector)
  Vec eGr;          // [c,n] e^{Gr_j}
  Vec eNGr;         // [c,n] e^{-Gr_j}
  Vec eRc;          // [c,n] e^{Gr_last - Gr_j}
  Vec g0;           // [n] e^{G_0}
  Vec gamma;        // [n] e^{G_last}

  void compute(const LAProblem& p, int h, int t0, int c) {
    n = p.kind == Kind::VectorGate ? p.dk : 1;
    const size_t cn = static_cast<size_t>(c) * n;
    eGr.resize(cn);
    eNGr.resize(cn);
    eRc.resize(cn);
    g0.resize(n);
    gamma.resize(n);
    Gr.resize(cn);
    ends.resize(2 * static_cast<size_t>(n));
    const float* gfirst = p.g + row_off(t0, p.H, h, n);
    // Gr_j = G_j - G_0 = sum of the gates after the first token, in double.
    for (int d = 0; d < n; ++d) Gr[d] = 0.0;
    for (int j = 1; j < c; ++j)
      add_row(Gr.data() + static_cast<size_t>(j) * n, Gr.data() + static_cast<size_t>(j - 1) * n,
              p.g + row_off(t0 + j, p.H, h, n), n);
    exp_double_array(Gr.data(), eGr.data(), cn);
    const double* last = Gr.data() + static_cast<size_t>(c - 1) * n;
    for (int d = 0; d < n; ++d) {
      ends[d] = gfirst[d];                // G_0
      ends[n + d] = gfirst[d] + last[d];  // G_last
    }
    exp_double_array(ends.data(), g0.data(), n);
    exp_double_array(ends.data() + n, gamma.data(), n);
    for (int j = 0; j < c - 1; ++j) subtract_from(Gr.data() + static_cast<size_t>(j) * n, last, n);
    std::fill(Gr.data() + static_cast<size_t>(c - 1) * n, Gr.data() + cn, 0.0);
    // Gr now holds Gr_last - Gr_j.
    exp_double_array(Gr.data(), eRc.data(), cn);
    reciprocal(eNGr.data(), eGr.data(), cn);
  }

 private:
  std::vector<double> Gr, ends;
};


void copy_rows(int c, int d, View src, float* dst) {
  for (int j = 0; j < c; ++j)
    std::memcpy(dst + static_cast<size_t>(j) * d, src.p + static_cast<size_t>(j) * src.ld, d * sizeof(float));
}

// dst[j, :] = src[j, :] * f[j] (scalar, n == 1) or src[j, d] * f[j, d] (vector).
LASP_SIMD void scale_rows(int c, int d, View src, const Vec& f, int n, float* dst) {
  for (int j = 0; j < c; ++j) {
    const float* s = src.p + static_cast<size_t>(j) * src.ld;
    float* o = dst + static_cast<size_t>(j) * d;
    if (n == 1) {
      const float fj = f[j];
      for (int x = 0; x < d; ++x) o[x] = s[x] * fj;
    } else {
      const float* fj = f.data() + static_cast<size_t>(j) * d;
      for (int x = 0; x < d; ++x) o[x] = s[x] * fj[x];
    }
  }
}

// Zeroes the strict upper triangle (diag = true keeps the diagonal) or the upper triangle
// including the diagonal (diag = false) of a c×c matrix.
void mask_lower(float* A, int c, bool keep_diag) {
  for (int j = 0; j < c; ++j) {
    int from = keep_diag ? j + 1 : j;
    std::fill(A + static_cast<size_t>(j) * c + from, A + static_cast<size_t>(j + 1) * c, 0.f);
  }
}

// S[d, :] *= f[d] (n == dk) or S *= f[0] (n == 1).
void scale_state_rows(float* S, int dk, int dv, const Vec& f, int n) {
  for (int d = 0; d < dk; ++d) {
    const float s = n == 1 ? f[0] : f[d];
    float* r = S + static_cast<size_t>(d) * dv;
    for (int x = 0; x < dv; ++x) r[x] *= s;
  }
}

// Small vector loops of the backward.

LASP_SIMD void scale(float* out, const float* a, float f, int n) {
  for (int i = 0; i < n; ++i) out[i] = a[i] * f;
}
LASP_SIMD void mul(float* out, const float* a, const float* f, int n) {
  for (int i = 0; i < n; ++i) out[i] = a[i] * f[i];
}
LASP_SIMD void axpby(float* out, const float* a, float fa, const float* b, float fb, int n) {
  for (int i = 0; i < n; ++i) out[i] = a[i] * fa + b[i] * fb;
}
LASP_SIMD void axpby_v(float* out, const float* a, const float* fa, const float* b, const float* fb, int n) {
  for (int i = 0; i < n; ++i) out[i] = a[i] * fa[i] + b[i] * fb[i];
}
// acc[i] += a[i] b[i] - c[i] d[i], products in float, sums in double.
LASP_SIMD void acc_diff_products(double* acc, const float* a, const float* b, const float* c, const float* d, int n) {
  for (int i = 0; i < n; ++i) acc[i] += static_cast<double>(a[i] * b[i] - c[i] * d[i]);
}
// Dot product in double with 8 independent partial sums (vectorisable without reassociation flags).
LASP_SIMD double dot(const float* a, const float* b, int n) {
  double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) part[l] += static_cast<double>(a[i + l]) * b[i + l];
  double s = 0;
  for (; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  for (int l = 0; l < 8; ++l) s += part[l];
  return s;
}

// ---------------------------------------------------------------------------------------------
// Gate path: linear, scalar_gate, vector_gate.

struct GateChunk {
  int t0 = 0, c = 0;
  bool gated = false;
  View Q, K, Kt, Kr, V;  // raw q, raw k, K~, Kr, raw v; Q~ is Qt
  View Qt;
  GateFactors f;
  Vec qbuf, kbuf, krbuf;

  // with_outputs = false: only the state update will run (K and V are enough, uncopied).
  void prepare(const LAProblem& p, int h, int t0_, int c_, bool with_outputs = true) {
    t0 = t0_;
    c = c_;
    gated = p.kind != Kind::Linear;
    const int ldk = p.H * p.dk;
    Q = {p.q + row_off(t0, p.H, h, p.dk), ldk};
    K = {p.k + row_off(t0, p.H, h, p.dk), ldk};
    V = {p.v + row_off(t0, p.H, h, p.dv), p.H * p.dv};
    if (!gated && !with_outputs) {
      Qt = Q;
      Kt = K;
      Kr = K;
      return;
    }
    if (!gated) {
      // Contiguous copies: the chunk's products run faster on packed rows than on rows strided
      // by H*dk (measured), and the copy is O(c*dk) against O(c^2*dk) of work.
      const size_t sz = static_cast<size_t>(c) * p.dk;
      qbuf.resize(sz);
      kbuf.resize(sz);
      copy_rows(c, p.dk, Q, qbuf.data());
      copy_rows(c, p.dk, K, kbuf.data());
      Qt = {qbuf.data(), p.dk};
      Kt = {kbuf.data(), p.dk};
      Kr = Kt;
      return;
    }
    f.compute(p, h, t0, c);
    size_t sz = static_cast<size_t>(c) * p.dk;
    qbuf.resize(sz);
    kbuf.resize(sz);
    krbuf.resize(sz);
    scale_rows(c, p.dk, Q, f.eGr, f.n, qbuf.data());
    scale_rows(c, p.dk, K, f.eNGr, f.n, kbuf.data());
    scale_rows(c, p.dk, K, f.eRc, f.n, krbuf.data());
    Qt = {qbuf.data(), p.dk};
    Kt = {kbuf.data(), p.dk};
    Kr = {krbuf.data(), p.dk};
  }
};

struct GateScratch {
  GateChunk ch;
  Vec A, dA, Sx, dQt, dKt, dKr;
  std::vector<double> acc;
};

// S_x = diag(e^{G0}) S for vector gates; for scalar gates the factor goes into GEMM alphas.
const float* state_times_g0(const GateChunk& ch, const float* S, int dk, int dv, Vec& buf,
                            float* alpha) {
  *alpha = 1.f;
  if (!ch.gated) return S;
  if (ch.f.n == 1) {
    *alpha = ch.f.g0[0];
    return S;
  }
  buf.assign(S, S + static_cast<size_t>(dk) * dv);
  scale_state_rows(buf.data(), dk, dv, ch.f.g0, ch.f.n);
  return buf.data();
}

// One chunk forward. Writes o (if non-null, row stride ldo) and advances S to the chunk end.
void gate_chunk_forward(const LAProblem& p, GateScratch& s, float* S, float* o, int ldo) {
  const GateChunk& ch = s.ch;
  const int c = ch.c, dk = p.dk, dv = p.dv;
  if (o) {
    s.A.resize(static_cast<size_t>(c) * c);
    sgemm(false, true, c, c, dk, 1.f, ch.Qt.p, ch.Qt.ld, ch.Kt.p, ch.Kt.ld, 0.f, s.A.data(), c);
    mask_lower(s.A.data(), c, true);
    sgemm(false, false, c, dv, c, 1.f, s.A.data(), c, ch.V.p, ch.V.ld, 0.f, o, ldo);
    float alpha;
    const float* Sx = state_times_g0(ch, S, dk, dv, s.Sx, &alpha);
    sgemm(false, false, c, dv, dk, alpha, ch.Qt.p, ch.Qt.ld, Sx, dv, 1.f, o, ldo);
  }
  if (ch.gated) scale_state_rows(S, dk, dv, ch.f.gamma, ch.f.n);
  sgemm(true, false, dk, dv, c, 1.f, ch.Kr.p, ch.Kr.ld, ch.V.p, ch.V.ld, 1.f, S, dv);
}

// dS_prev = diag(gamma) dS + diag(e^{G0}) Q~^T dO (in place on dS).
void gate_state_grad_step(const LAProblem& p, GateScratch& s, const float* dO, int ldo, float* dS) {
  const GateChunk& ch = s.ch;
  const int c = ch.c, dk = p.dk, dv = p.dv;
  if (!ch.gated) {
    sgemm(true, false, dk, dv, c, 1.f, ch.Qt.p, ch.Qt.ld, dO, ldo, 1.f, dS, dv);
    return;
  }
  scale_state_rows(dS, dk, dv, ch.f.gamma, ch.f.n);
  if (ch.f.n == 1) {
    sgemm(true, false, dk, dv, c, ch.f.g0[0], ch.Qt.p, ch.Qt.ld, dO, ldo, 1.f, dS, dv);
    return;
  }
  s.Sx.resize(static_cast<size_t>(dk) * dv);
  sgemm(true, false, dk, dv, c, 1.f, ch.Qt.p, ch.Qt.ld, dO, ldo, 0.f, s.Sx.data(), dv);
  for (int d = 0; d < dk; ++d) {
    const float g = ch.f.g0[d];
    float* r = dS + static_cast<size_t>(d) * dv;
    const float* x = s.Sx.data() + static_cast<size_t>(d) * dv;
    for (int j = 0; j < dv; ++j) r[j] += g * x[j];
  }
}

struct Grads {
  float* dq;
  float* dk;
  float* dv;
  float* dg;
};

// One chunk backward. S: state at the chunk start, Send: at its end; dS: gradient at the end,
// replaced by the gradient at the start.
void gate_chunk_backward(const LAProblem& p, int h, GateScratch& s, const float* S,
                         const float* Send, const float* dO, int ldo, float* dS, const Grads& out) {
  const GateChunk& ch = s.ch;
  const int c = ch.c, dk = p.dk, dv = p.dv, H = p.H;
  const size_t cc = static_cast<size_t>(c) * c, cdk = static_cast<size_t>(c) * dk;
  s.A.resize(cc);
  s.dA.resize(cc);
  s.dQt.resize(cdk);
  s.dKt.resize(cdk);
  s.dKr.resize(cdk);
  float* A = s.A.data();
  float* dA = s.dA.data();
  sgemm(false, true, c, c, dk, 1.f, ch.Qt.p, ch.Qt.ld, ch.Kt.p, ch.Kt.ld, 0.f, A, c);
  mask_lower(A, c, true);
  sgemm(false, true, c, c, dv, 1.f, dO, ldo, ch.V.p, ch.V.ld, 0.f, dA, c);
  mask_lower(dA, c, true);
  // dQ~ = dA K~ + dO Sx^T ; dK~ = dA^T Q~ ; dKr = V dS^T. Without gates Q~ = Q and K~ = Kr = K, so
  // the products go straight into the outputs.
  float alpha;
  const float* Sx = state_times_g0(ch, S, dk, dv, s.Sx, &alpha);
  float* dQt = ch.gated ? s.dQt.data() : out.dq + row_off(ch.t0, H, h, dk);
  float* dKt = ch.gated ? s.dKt.data() : out.dk + row_off(ch.t0, H, h, dk);
  float* dKr = ch.gated ? s.dKr.data() : dKt;
  const int ldg = ch.gated ? dk : H * dk;  // row stride of the three gradient targets
  sgemm(false, false, c, dk, c, 1.f, dA, c, ch.Kt.p, ch.Kt.ld, 0.f, dQt, ldg);
  sgemm(false, true, c, dk, dv, alpha, dO, ldo, Sx, dv, 1.f, dQt, ldg);
  sgemm(true, false, c, dk, c, 1.f, dA, c, ch.Qt.p, ch.Qt.ld, 0.f, dKt, ldg);
  sgemm(false, true, c, dk, dv, 1.f, ch.V.p, ch.V.ld, dS, dv, ch.gated ? 0.f : 1.f, dKr, ldg);
  // dV = A^T dO + Kr dS
  float* dvo = out.dv + row_off(ch.t0, H, h, dv);
  const int lddv = H * dv;
  sgemm(true, false, c, dv, c, 1.f, A, c, dO, ldo, 0.f, dvo, lddv);
  sgemm(false, false, c, dv, dk, 1.f, ch.Kr.p, ch.Kr.ld, dS, dv, 1.f, dvo, lddv);
  // Gated: dq, dk in the raw parameterisation; gate gradients by the identity.
  const int n = ch.f.n;
  for (int j = 0; ch.gated && j < c; ++j) {
    float* dq = out.dq + row_off(ch.t0 + j, H, h, dk);
    float* dkk = out.dk + row_off(ch.t0 + j, H, h, dk);
    const float* a = s.dQt.data() + static_cast<size_t>(j) * dk;
    const float* b = s.dKt.data() + static_cast<size_t>(j) * dk;
    const float* r = s.dKr.data() + static_cast<size_t>(j) * dk;
    if (n == 1) {
      scale(dq, a, ch.f.eGr[j], dk);
      axpby(dkk, b, ch.f.eNGr[j], r, ch.f.eRc[j], dk);
    } else {
      const size_t o = static_cast<size_t>(j) * dk;
      mul(dq, a, ch.f.eGr.data() + o, dk);
      axpby_v(dkk, b, ch.f.eNGr.data() + o, r, ch.f.eRc.data() + o, dk);
    }
  }
  if (ch.gated) {
    // dg_t = sum_{m >= t in chunk} (q_m·dq_m - k_m·dk_m) + <dS_end, S_end> (per dim for vector).
    s.acc.assign(dk, 0.0);
    std::vector<double> endterm(n, 0.0);
    for (int d = 0; d < dk; ++d) endterm[n == 1 ? 0 : d] += dot(dS + static_cast<size_t>(d) * dv, Send + static_cast<size_t>(d) * dv, dv);
    double total = 0;
    for (int j = c - 1; j >= 0; --j) {
      const float* q = p.q + row_off(ch.t0 + j, H, h, dk);
      const float* k = p.k + row_off(ch.t0 + j, H, h, dk);
      const float* dq = out.dq + row_off(ch.t0 + j, H, h, dk);
      const float* dkk = out.dk + row_off(ch.t0 + j, H, h, dk);
      float* dg = out.dg + row_off(ch.t0 + j, H, h, n);
      if (n == 1) {
        total += dot(q, dq, dk) - dot(k, dkk, dk);
        dg[0] = static_cast<float>(total + endterm[0]);
      } else {
        acc_diff_products(s.acc.data(), q, dq, k, dkk, dk);
        for (int d = 0; d < n; ++d) dg[d] = static_cast<float>(s.acc[d] + endterm[d]);
      }
    }
  }
  gate_state_grad_step(p, s, dO, ldo, dS);
}

// ---------------------------------------------------------------------------------------------
// Delta path: delta, gated_delta (WY form).

struct DeltaChunk {
  int t0 = 0, c = 0;
  bool gated = false;
  View Qt, Kbt, Kn, Kr, V;
  GateFactors f;
  float g0 = 1.f, gamma = 1.f;
  Vec qbuf, kbbuf, knbuf, krbuf;
  Vec beta;  // [c]
  Vec L;     // [c,c] strictly lower: (K_j·K_i) e^{G_j - G_i}
  Vec N;     // [c,c] (I + diag(beta) L)^{-1}, unit lower
  Vec Tm;    // [c,c] N diag(beta)
  Vec Wt;    // [c,dk] T K~b
  Vec U;     // [c,dv] T V, then U' = U - W S

  void prepare(const LAProblem& p, int h, int t0_, int c_, bool /*with_outputs: all parts are needed*/ = true) {
    t0 = t0_;
    c = c_;
    gated = p.kind == Kind::GatedDelta;
    const int dk = p.dk, ldk = p.H * p.dk;
    View Q{p.q + row_off(t0, p.H, h, dk), ldk};
    View K{p.k + row_off(t0, p.H, h, dk), ldk};
    V = {p.v + row_off(t0, p.H, h, p.dv), p.H * p.dv};
    beta.resize(c);
    for (int j = 0; j < c; ++j) beta[j] = p.beta[static_cast<size_t>(t0 + j) * p.H + h];
    if (gated) {
      f.compute(p, h, t0, c);
      g0 = f.g0[0];
      gamma = f.gamma[0];
      const size_t sz = static_cast<size_t>(c) * dk;
      qbuf.resize(sz);
      kbbuf.resize(sz);
      knbuf.resize(sz);
      krbuf.resize(sz);
      scale_rows(c, dk, Q, f.eGr, 1, qbuf.data());
      scale_rows(c, dk, K, f.eGr, 1, kbbuf.data());
      scale_rows(c, dk, K, f.eNGr, 1, knbuf.data());
      scale_rows(c, dk, K, f.eRc, 1, krbuf.data());
      Qt = {qbuf.data(), dk};
      Kbt = {kbbuf.data(), dk};
      Kn = {knbuf.data(), dk};
      Kr = {krbuf.data(), dk};
    } else {
      Qt = Q;
      Kbt = K;
      Kn = K;
      Kr = K;
    }
    const size_t cc = static_cast<size_t>(c) * c;
    L.resize(cc);
    N.assign(cc, 0.f);
    Tm.resize(cc);
    sgemm(false, true, c, c, dk, 1.f, Kbt.p, Kbt.ld, Kn.p, Kn.ld, 0.f, L.data(), c);
    mask_lower(L.data(), c, false);
    // Forward substitution: row j of N = e_j - beta_j sum_{i<j} L_ji N_i.
    for (int j = 0; j < c; ++j) {
      float* nj = N.data() + static_cast<size_t>(j) * c;
      nj[j] = 1.f;
      const float* lj = L.data() + static_cast<size_t>(j) * c;
      for (int i = 0; i < j; ++i) {
        const float coef = -beta[j] * lj[i];
        if (coef == 0.f) continue;
        const float* ni = N.data() + static_cast<size_t>(i) * c;
        for (int x = 0; x <= i; ++x) nj[x] += coef * ni[x];
      }
    }
    for (int j = 0; j < c; ++j)
      for (int i = 0; i < c; ++i)
        Tm[static_cast<size_t>(j) * c + i] = N[static_cast<size_t>(j) * c + i] * beta[i];
    Wt.resize(static_cast<size_t>(c) * dk);
    U.resize(static_cast<size_t>(c) * p.dv);
    sgemm(false, false, c, dk, c, 1.f, Tm.data(), c, Kbt.p, Kbt.ld, 0.f, Wt.data(), dk);
    sgemm(false, false, c, p.dv, c, 1.f, Tm.data(), c, V.p, V.ld, 0.f, U.data(), p.dv);
  }

  // U <- U' = U - e^{G0} Wt S.
  void apply_state(const LAProblem& p, const float* S) {
    sgemm(false, false, c, p.dv, p.dk, -g0, Wt.data(), p.dk, S, p.dv, 1.f, U.data(), p.dv);
  }
};

struct DeltaScratch {
  DeltaChunk ch;
  Vec P, dP, dU, dQt, dKb, dKn, dKr, dWt, dT, dN, tmp, dM, dSx;
};

// P = mask_incl(Q~ Kn^T).
void delta_P(const LAProblem& p, DeltaScratch& s) {
  const DeltaChunk& ch = s.ch;
  s.P.resize(static_cast<size_t>(ch.c) * ch.c);
  sgemm(false, true, ch.c, ch.c, p.dk, 1.f, ch.Qt.p, ch.Qt.ld, ch.Kn.p, ch.Kn.ld, 0.f, s.P.data(), ch.c);
  mask_lower(s.P.data(), ch.c, true);
}

// After prepare + apply_state: o (optional) and S advanced to the chunk end.
void delta_chunk_forward(const LAProblem& p, DeltaScratch& s, float* S, float* o, int ldo) {
  DeltaChunk& ch = s.ch;
  const int c = ch.c, dk = p.dk, dv = p.dv;
  ch.apply_state(p, S);
  if (o) {
    delta_P(p, s);
    sgemm(false, false, c, dv, c, 1.f, s.P.data(), c, ch.U.data(), dv, 0.f, o, ldo);
    sgemm(false, false, c, dv, dk, ch.g0, ch.Qt.p, ch.Qt.ld, S, dv, 1.f, o, ldo);
  }
  if (ch.gated) {
    for (size_t i = 0, n = static_cast<size_t>(dk) * dv; i < n; ++i) S[i] *= ch.gamma;
  }
  sgemm(true, false, dk, dv, c, 1.f, ch.Kr.p, ch.Kr.ld, ch.U.data(), dv, 1.f, S, dv);
}

// dU' = P^T dO + Kr dS; then dS <- gamma dS + e^{G0} (Q~^T dO - Wt^T dU'); keeps dSx = the
// gradient w.r.t. e^{G0} S (before scaling) in s.dSx.
void delta_state_grad_step(const LAProblem& p, DeltaScratch& s, const float* dO, int ldo, float* dS) {
  DeltaChunk& ch = s.ch;
  const int c = ch.c, dk = p.dk, dv = p.dv;
  s.dU.resize(static_cast<size_t>(c) * dv);
  sgemm(true, false, c, dv, c, 1.f, s.P.data(), c, dO, ldo, 0.f, s.dU.data(), dv);
  sgemm(false, false, c, dv, dk, 1.f, ch.Kr.p, ch.Kr.ld, dS, dv, 1.f, s.dU.data(), dv);
  s.dSx.resize(static_cast<size_t>(dk) * dv);
  sgemm(true, false, dk, dv, c, 1.f, ch.Qt.p, ch.Qt.ld, dO, ldo, 0.f, s.dSx.data(), dv);
  sgemm(true, false, dk, dv, c, -1.f, ch.Wt.data(), dk, s.dU.data(), dv, 1.f, s.dSx.data(), dv);
}


// One chunk backward of the delta path. S: chunk start state; dS: gradient at the chunk end,
// replaced by the gradient at its start.
void delta_chunk_backward(const LAProblem& p, int h, DeltaScratch& s, const float* S,
                          const float* dO, int ldo, float* dS, const Grads& out, float* dbeta) {
  DeltaChunk& ch = s.ch;
  const int c = ch.c, dk = p.dk, dv = p.dv, H = p.H;
  const size_t cc = static_cast<size_t>(c) * c, cdk = static_cast<size_t>(c) * dk;
  ch.apply_state(p, S);  // ch.U is U'
  delta_P(p, s);
  // dP = mask_incl(dO U'^T)
  s.dP.resize(cc);
  sgemm(false, true, c, c, dv, 1.f, dO, ldo, ch.U.data(), dv, 0.f, s.dP.data(), c);
  mask_lower(s.dP.data(), c, true);
  // dKr = U' dS^T (uses dS at the chunk end, before the state step replaces it)
  s.dKr.resize(cdk);
  sgemm(false, true, c, dk, dv, 1.f, ch.U.data(), dv, dS, dv, 0.f, s.dKr.data(), dk);
  const double gammaTerm = ch.gated ? ch.gamma * dot(S, dS, dk * dv) : 0.0;
  delta_state_grad_step(p, s, dO, ldo, dS);  // s.dU = dU', s.dSx = dL/d(e^{G0} S)
  // dQ~ = e^{G0} dO S^T + dP Kn
  s.dQt.resize(cdk);
  sgemm(false, false, c, dk, c, 1.f, s.dP.data(), c, ch.Kn.p, ch.Kn.ld, 0.f, s.dQt.data(), dk);
  sgemm(false, true, c, dk, dv, ch.g0, dO, ldo, S, dv, 1.f, s.dQt.data(), dk);
  // dKn = dP^T Q~ (+ dL^T K~b below)
  s.dKn.resize(cdk);
  sgemm(true, false, c, dk, c, 1.f, s.dP.data(), c, ch.Qt.p, ch.Qt.ld, 0.f, s.dKn.data(), dk);
  // dWt = -e^{G0} dU' S^T
  s.dWt.resize(cdk);
  sgemm(false, true, c, dk, dv, -ch.g0, s.dU.data(), dv, S, dv, 0.f, s.dWt.data(), dk);
  // dT = dWt K~b^T + dU V^T (lower incl. diagonal)
  s.dT.resize(cc);
  sgemm(false, true, c, c, dk, 1.f, s.dWt.data(), dk, ch.Kbt.p, ch.Kbt.ld, 0.f, s.dT.data(), c);
  sgemm(false, true, c, c, dv, 1.f, s.dU.data(), dv, ch.V.p, ch.V.ld, 1.f, s.dT.data(), c);
  mask_lower(s.dT.data(), c, true);
  // dK~b = T^T dWt ; dv = T^T dU
  s.dKb.resize(cdk);
  sgemm(true, false, c, dk, c, 1.f, ch.Tm.data(), c, s.dWt.data(), dk, 0.f, s.dKb.data(), dk);
  float* dvo = out.dv + row_off(ch.t0, H, h, dv);
  sgemm(true, false, c, dv, c, 1.f, ch.Tm.data(), c, s.dU.data(), dv, 0.f, dvo, H * dv);
  // T = N diag(beta): dN = dT diag(beta); dbeta_i = sum_j N_ji dT_ji.
  s.dN.resize(cc);
  std::vector<double> db(c, 0.0);
  for (int j = 0; j < c; ++j) {
    for (int i = 0; i <= j; ++i) {
      const size_t x = static_cast<size_t>(j) * c + i;
      db[i] += static_cast<double>(ch.N[x]) * s.dT[x];
      s.dN[x] = s.dT[x] * ch.beta[i];
    }
    for (int i = j + 1; i < c; ++i) s.dN[static_cast<size_t>(j) * c + i] = 0.f;
  }
  // N = M^{-1}, M = I + diag(beta) L: dM = -N^T dN N^T (strictly lower part used).
  s.tmp.resize(cc);
  s.dM.resize(cc);
  sgemm(false, true, c, c, c, 1.f, s.dN.data(), c, ch.N.data(), c, 0.f, s.tmp.data(), c);
  sgemm(true, false, c, c, c, -1.f, ch.N.data(), c, s.tmp.data(), c, 0.f, s.dM.data(), c);
  // dbeta_j += sum_{i<j} dM_ji L_ji ; dL_ji = beta_j dM_ji (reuse dM as dL).
  for (int j = 0; j < c; ++j) {
    float* dm = s.dM.data() + static_cast<size_t>(j) * c;
    const float* l = ch.L.data() + static_cast<size_t>(j) * c;
    double acc = 0;
    for (int i = 0; i < j; ++i) {
      acc += static_cast<double>(dm[i]) * l[i];
      dm[i] *= ch.beta[j];
    }
    for (int i = j; i < c; ++i) dm[i] = 0.f;
    db[j] += acc;
  }
  const float* dL = s.dM.data();
  // L = strictlower(K~b Kn^T): dK~b += dL Kn ; dKn += dL^T K~b
  sgemm(false, false, c, dk, c, 1.f, dL, c, ch.Kn.p, ch.Kn.ld, 1.f, s.dKb.data(), dk);
  sgemm(true, false, c, dk, c, 1.f, dL, c, ch.Kbt.p, ch.Kbt.ld, 1.f, s.dKn.data(), dk);
  for (int j = 0; j < c; ++j) dbeta[static_cast<size_t>(ch.t0 + j) * H + h] = static_cast<float>(db[j]);
  // Back to raw q and k.
  for (int j = 0; j < c; ++j) {
    float* dq = out.dq + row_off(ch.t0 + j, H, h, dk);
    float* dkk = out.dk + row_off(ch.t0 + j, H, h, dk);
    const float* a = s.dQt.data() + static_cast<size_t>(j) * dk;
    const float* b = s.dKb.data() + static_cast<size_t>(j) * dk;
    const float* n = s.dKn.data() + static_cast<size_t>(j) * dk;
    const float* r = s.dKr.data() + static_cast<size_t>(j) * dk;
    if (!ch.gated) {
      for (int d = 0; d < dk; ++d) {
        dq[d] = a[d];
        dkk[d] = b[d] + n[d] + r[d];
      }
    } else {
      const float eg = ch.f.eGr[j], en = ch.f.eNGr[j], er = ch.f.eRc[j];
      for (int d = 0; d < dk; ++d) {
        dq[d] = a[d] * eg;
        dkk[d] = b[d] * eg + n[d] * en + r[d] * er;
      }
    }
  }
  if (ch.gated) {
    // dG_j from every factorised matrix; G_0 and G_last also enter through the references.
    std::vector<double> dG(c, 0.0);
    double first = ch.g0 * dot(S, s.dSx.data(), dk * dv), last = gammaTerm;
    for (int j = 0; j < c; ++j) {
      const size_t o = static_cast<size_t>(j) * dk;
      const double up = dot(ch.Qt.p + static_cast<size_t>(j) * ch.Qt.ld, s.dQt.data() + o, dk) +
                        dot(ch.Kbt.p + static_cast<size_t>(j) * ch.Kbt.ld, s.dKb.data() + o, dk);
      const double dn = dot(ch.Kn.p + static_cast<size_t>(j) * ch.Kn.ld, s.dKn.data() + o, dk);
      const double rr = dot(ch.Kr.p + static_cast<size_t>(j) * ch.Kr.ld, s.dKr.data() + o, dk);
      dG[j] += up - dn - rr;
      first += dn - up;
      last += rr;
    }
    dG[0] += first;
    dG[c - 1] += last;
    double acc = 0;
    for (int j = c - 1; j >= 0; --j) {
      acc += dG[j];
      out.dg[static_cast<size_t>(ch.t0 + j) * H + h] = static_cast<float>(acc);
    }
  }
  // dS <- gamma dS + e^{G0} dSx
  for (size_t i = 0, n = static_cast<size_t>(dk) * dv; i < n; ++i) dS[i] = ch.gamma * dS[i] + ch.g0 * s.dSx[i];
}

// ---------------------------------------------------------------------------------------------
// Per-head drivers.

void init_state(const LAProblem& p, int h, float* S) {
  const size_t n = static_cast<size_t>(p.dk) * p.dv;
  if (p.s0)
    std::memcpy(S, p.s0 + h * n, n * sizeof(float));
  else
    std::fill(S, S + n, 0.f);
}

// Runs the chunks of head h forward from state S (in place). o may be null (state only).
// If states is non-null it receives the state at the start of every chunk.
template <typename Scratch>
void run_forward_head(const LAProblem& p, int h, const std::vector<int>& b, Scratch& s, float* S,
                      float* o, std::vector<float>* states) {
  const size_t n = static_cast<size_t>(p.dk) * p.dv;
  const int nc = static_cast<int>(b.size()) - 1;
  if (states) states->resize((nc + 1) * n);
  for (int i = 0; i < nc; ++i) {
    if (states) std::memcpy(states->data() + i * n, S, n * sizeof(float));
    s.ch.prepare(p, h, b[i], b[i + 1] - b[i], o != nullptr);
    float* oc = o ? o + row_off(b[i], p.H, h, p.dv) : nullptr;
    if constexpr (std::is_same_v<Scratch, GateScratch>)
      gate_chunk_forward(p, s, S, oc, p.H * p.dv);
    else
      delta_chunk_forward(p, s, S, oc, p.H * p.dv);
  }
  if (states) std::memcpy(states->data() + nc * n, S, n * sizeof(float));
}

void noncausal_forward(const LAProblem& p, float* o, float* s_final) {
  parallel_for(p.H, [&](int h) {
    float* S = s_final + static_cast<size_t>(h) * p.dk * p.dv;
    init_state(p, h, S);
    sgemm(true, false, p.dk, p.dv, p.T, 1.f, p.k + h * p.dk, p.H * p.dk, p.v + h * p.dv, p.H * p.dv, 1.f, S, p.dv);
    sgemm(false, false, p.T, p.dv, p.dk, 1.f, p.q + h * p.dk, p.H * p.dk, S, p.dv, 0.f, o + h * p.dv, p.H * p.dv);
  });
}

void noncausal_backward(const LAProblem& p, const float* dO, const float* dSf, float* dq, float* dk,
                        float* dv, float* ds0) {
  parallel_for(p.H, [&](int h) {
    const size_t n = static_cast<size_t>(p.dk) * p.dv;
    Vec S(n), dS(n);
    init_state(p, h, S.data());
    const int ldk = p.H * p.dk, ldv = p.H * p.dv;
    sgemm(true, false, p.dk, p.dv, p.T, 1.f, p.k + h * p.dk, ldk, p.v + h * p.dv, ldv, 1.f, S.data(), p.dv);
    if (dSf)
      std::memcpy(dS.data(), dSf + h * n, n * sizeof(float));
    else
      std::fill(dS.begin(), dS.end(), 0.f);
    sgemm(true, false, p.dk, p.dv, p.T, 1.f, p.q + h * p.dk, ldk, dO + h * p.dv, ldv, 1.f, dS.data(), p.dv);
    sgemm(false, true, p.T, p.dk, p.dv, 1.f, dO + h * p.dv, ldv, S.data(), p.dv, 0.f, dq + h * p.dk, ldk);
    sgemm(false, true, p.T, p.dk, p.dv, 1.f, p.v + h * p.dv, ldv, dS.data(), p.dv, 0.f, dk + h * p.dk, ldk);
    sgemm(false, false, p.T, p.dv, p.dk, 1.f, p.k + h * p.dk, ldk, dS.data(), p.dv, 0.f, dv + h * p.dv, ldv);
    if (ds0) std::memcpy(ds0 + h * n, dS.data(), n * sizeof(float));
  });
}

}  // namespace

int64_t summary_a_len(Kind kind, int H, int dk) {
  switch (kind) {
    case Kind::Linear:
      return 0;
    case Kind::ScalarGate:
      return H;
    case Kind::VectorGate:
      return static_cast<int64_t>(H) * dk;
    default:
      return static_cast<int64_t>(H) * dk * dk;
  }
}

void la_forward(const LAProblem& p, float* o, float* s_final, SavedStates* save) {
  check_inputs(p);
  if (!p.causal) return noncausal_forward(p, o, s_final);
  if (save) {  // reuses the buffers of an earlier save where their sizes allow
    save->kind = p.kind;
    save->T = p.T;
    save->H = p.H;
    save->dk = p.dk;
    save->dv = p.dv;
    save->chunk = p.chunk;
    save->per_head.resize(p.H);
  }
  parallel_for(p.H, [&](int h) {
    float* S = s_final + static_cast<size_t>(h) * p.dk * p.dv;
    init_state(p, h, S);
    const auto b = chunk_bounds(p, h);
    std::vector<float>* states = save ? &save->per_head[h] : nullptr;
    if (is_delta(p.kind)) {
      DeltaScratch s;
      run_forward_head(p, h, b, s, S, o, states);
    } else {
      GateScratch s;
      run_forward_head(p, h, b, s, S, o, states);
    }
  });
}

void la_backward(const LAProblem& p, const float* dO, const float* dSf, float* dq, float* dk,
                 float* dv, float* dg, float* dbeta, float* ds0, const SavedStates* saved) {
  check_inputs(p);
  if (!p.causal) return noncausal_backward(p, dO, dSf, dq, dk, dv, ds0);
  if (saved && (saved->kind != p.kind || saved->T != p.T || saved->H != p.H || saved->dk != p.dk ||
                saved->dv != p.dv || saved->chunk != p.chunk ||
                saved->per_head.size() != static_cast<size_t>(p.H)))
    throw std::invalid_argument("the saved forward states belong to a different problem (kind, sizes or chunk)");
  std::vector<float> dg_scratch, dbeta_scratch;
  if (has_gate(p.kind) && !dg) {
    dg_scratch.resize(static_cast<size_t>(p.T) * p.H * (p.kind == Kind::VectorGate ? p.dk : 1));
    dg = dg_scratch.data();
  }
  if (has_beta(p.kind) && !dbeta) {
    dbeta_scratch.resize(static_cast<size_t>(p.T) * p.H);
    dbeta = dbeta_scratch.data();
  }
  const Grads out{dq, dk, dv, dg};
  parallel_for(p.H, [&](int h) {
    const size_t n = static_cast<size_t>(p.dk) * p.dv;
    const auto b = chunk_bounds(p, h);
    const int nc = static_cast<int>(b.size()) - 1;
    Vec S(n), dS(n);
    std::vector<float> recomputed;
    const std::vector<float>& states = saved ? saved->per_head[h] : recomputed;
    if (saved && states.size() != static_cast<size_t>(nc + 1) * n)
      throw std::invalid_argument("the saved forward states do not match the chunking of these inputs");
    init_state(p, h, S.data());
    if (dSf)
      std::memcpy(dS.data(), dSf + h * n, n * sizeof(float));
    else
      std::fill(dS.begin(), dS.end(), 0.f);
    const int ldo = p.H * p.dv;
    if (is_delta(p.kind)) {
      DeltaScratch s;
      if (!saved) run_forward_head(p, h, b, s, S.data(), nullptr, &recomputed);
      for (int i = nc - 1; i >= 0; --i) {
        s.ch.prepare(p, h, b[i], b[i + 1] - b[i]);
        delta_chunk_backward(p, h, s, states.data() + i * n, dO + row_off(b[i], p.H, h, p.dv), ldo,
                             dS.data(), out, dbeta);
      }
    } else {
      GateScratch s;
      if (!saved) run_forward_head(p, h, b, s, S.data(), nullptr, &recomputed);
      for (int i = nc - 1; i >= 0; --i) {
        s.ch.prepare(p, h, b[i], b[i + 1] - b[i]);
        gate_chunk_backward(p, h, s, states.data() + i * n, states.data() + (i + 1) * n,
                            dO + row_off(b[i], p.H, h, p.dv), ldo, dS.data(), out);
      }
    }
    if (ds0) std::memcpy(ds0 + h * n, dS.data(), n * sizeof(float));
  });
}

void la_summary(const LAProblem& p_in, float* a, float* u) {
  LAProblem p = p_in;
  p.s0 = nullptr;
  check_inputs(p);
  parallel_for(p.H, [&](int h) {
    const size_t n = static_cast<size_t>(p.dk) * p.dv;
    float* U = u + h * n;
    std::fill(U, U + n, 0.f);
    if (!p.causal) {  // non-causal linear: the block contributes K^T V to the shared state
      sgemm(true, false, p.dk, p.dv, p.T, 1.f, p.k + h * p.dk, p.H * p.dk, p.v + h * p.dv, p.H * p.dv, 0.f, U, p.dv);
      return;
    }
    const auto b = chunk_bounds(p, h);
    if (!is_delta(p.kind)) {
      GateScratch s;
      run_forward_head(p, h, b, s, U, nullptr, nullptr);
      if (p.kind == Kind::ScalarGate) {
        double G = 0;
        for (int t = 0; t < p.T; ++t) G += p.g[static_cast<size_t>(t) * p.H + h];
        a[h] = exp_of_double(G);
      } else if (p.kind == Kind::VectorGate) {
        for (int d = 0; d < p.dk; ++d) {
          double G = 0;
          for (int t = 0; t < p.T; ++t) G += p.g[row_off(t, p.H, h, p.dk) + d];
          a[static_cast<size_t>(h) * p.dk + d] = exp_of_double(G);
        }
      }
      return;
    }
    // Delta kinds: U from a zero start, A = prod_chunks (gamma I - e^{G0} Kr^T Wt).
    const int dk = p.dk;
    const size_t nn = static_cast<size_t>(dk) * dk;
    float* A = a + h * nn;
    std::fill(A, A + nn, 0.f);
    for (int d = 0; d < dk; ++d) A[static_cast<size_t>(d) * dk + d] = 1.f;
    Vec Ac(nn), next(nn);
    DeltaScratch s;
    const int nc = static_cast<int>(b.size()) - 1;
    for (int i = 0; i < nc; ++i) {
      s.ch.prepare(p, h, b[i], b[i + 1] - b[i]);
      const DeltaChunk& ch = s.ch;
      sgemm(true, false, dk, dk, ch.c, -ch.g0, ch.Kr.p, ch.Kr.ld, ch.Wt.data(), dk, 0.f, Ac.data(), dk);
      for (int d = 0; d < dk; ++d) Ac[static_cast<size_t>(d) * dk + d] += ch.gamma;
      sgemm(false, false, dk, dk, dk, 1.f, Ac.data(), dk, A, dk, 0.f, next.data(), dk);
      std::memcpy(A, next.data(), nn * sizeof(float));
      delta_chunk_forward(p, s, U, nullptr, 0);
    }
  });
}

void la_state_grad(const LAProblem& p_in, const float* dO, float* d) {
  LAProblem p = p_in;
  p.s0 = nullptr;
  check_inputs(p);
  parallel_for(p.H, [&](int h) {
    const size_t n = static_cast<size_t>(p.dk) * p.dv;
    float* D = d + h * n;
    std::fill(D, D + n, 0.f);
    if (!p.causal) {  // non-causal linear: every output reads the shared state, D = Q^T dO
      sgemm(true, false, p.dk, p.dv, p.T, 1.f, p.q + h * p.dk, p.H * p.dk, dO + h * p.dv, p.H * p.dv, 0.f, D, p.dv);
      return;
    }
    const auto b = chunk_bounds(p, h);
    const int nc = static_cast<int>(b.size()) - 1;
    const int ldo = p.H * p.dv;
    if (is_delta(p.kind)) {
      DeltaScratch s;
      for (int i = nc - 1; i >= 0; --i) {
        s.ch.prepare(p, h, b[i], b[i + 1] - b[i]);
        delta_P(p, s);
        delta_state_grad_step(p, s, dO + row_off(b[i], p.H, h, p.dv), ldo, D);
        for (size_t x = 0; x < n; ++x) D[x] = s.ch.gamma * D[x] + s.ch.g0 * s.dSx[x];
      }
    } else {
      GateScratch s;
      for (int i = nc - 1; i >= 0; --i) {
        s.ch.prepare(p, h, b[i], b[i + 1] - b[i]);
        gate_state_grad_step(p, s, dO + row_off(b[i], p.H, h, p.dv), ldo, D);
      }
    }
  });
}

void la_add_state_term(const LAProblem& p, const float* P, float* o) {
  check_inputs(p);
  if (is_delta(p.kind) || !p.causal)
    throw std::invalid_argument("the state term is separable only for causal linear, scalar_gate and vector_gate");
  constexpr int kRows = 256;
  parallel_for(p.H, [&](int h) {
    const size_t n = static_cast<size_t>(p.dk) * p.dv;
    const float* S = P + h * n;
    const int gn = p.kind == Kind::VectorGate ? p.dk : 1;
    std::vector<double> G(gn, 0.0), Gt(static_cast<size_t>(kRows) * gn);
    Vec e(static_cast<size_t>(kRows) * gn), qs(static_cast<size_t>(kRows) * p.dk);
    for (int t0 = 0; t0 < p.T; t0 += kRows) {
      const int rows = std::min(kRows, p.T - t0);
      View Q{p.q + row_off(t0, p.H, h, p.dk), p.H * p.dk};
      float* out = o + row_off(t0, p.H, h, p.dv);
      if (p.kind == Kind::Linear) {
        sgemm(false, false, rows, p.dv, p.dk, 1.f, Q.p, Q.ld, S, p.dv, 1.f, out, p.H * p.dv);
        continue;
      }
      // e^{G_t}: cumulative log gate from the block start through token t.
      for (int j = 0; j < rows; ++j) {
        const float* gt = p.g + row_off(t0 + j, p.H, h, gn);
        for (int d = 0; d < gn; ++d) Gt[static_cast<size_t>(j) * gn + d] = (G[d] += gt[d]);
      }
      exp_double_array(Gt.data(), e.data(), static_cast<size_t>(rows) * gn);
      scale_rows(rows, p.dk, Q, e, gn, qs.data());
      sgemm(false, false, rows, p.dv, p.dk, 1.f, qs.data(), p.dk, S, p.dv, 1.f, out, p.H * p.dv);
    }
  });
}

}  // namespace lasp
