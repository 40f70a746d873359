// Softmax attention on the CPU: flash-style tiling with an online softmax (forward) and the
// FlashAttention-2 recomputation scheme (backward). See softmax_attention.h for the contract.
//
// Forward: one task per (head, query tile of kBr rows). The task packs its query rows into a
// contiguous buffer, then walks the key tiles (kBc keys) it can see: S = scale·Q·K^T (sgemm),
// causal mask on the diagonal tiles only (tiles past the diagonal are never touched), online
// softmax update of the running max m and sum l, O = alpha·O + P·V (sgemm). Finally
// o = O / l and lse = m + log(l). K/V (and in the backward Q/dO) are handed to sgemm in place
// with row stride H·d: sgemm packs its B operand itself and streams A, so an extra copy into
// contiguous tiles only cost time (measured).
//
// Backward: D_i = rowsum(dO_i ⊙ O_i) first. Then one task per (head, group of key tiles):
// for each key tile of the group, over the query tiles that see it, recompute
// P = exp(scale·Q·K^T − lse), dV += P^T·dO, dP = dO·V^T, dS = P ⊙ (dP − D),
// dK += scale·dS^T·Q and dQ += scale·dS·K. dK/dV of a key tile belong to one task. dQ sums
// over key tiles: task group g accumulates into its own dQ slot (slot 0 is dq itself, the
// others are scratch), and the slots are added in a fixed order at the end, so the result is
// race-free and run-to-run deterministic (it depends on the group count, which depends on
// H, the key-tile count and the pool size).
//
// The elementwise row work (max, exp, sums) runs in AVX2+FMA intrinsics when the CPU has them
// (chosen at run time, no -march needed), else in portable loops.
#include "softmax_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gemm.h"
#include "threadpool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LASP_SM_X86 1
#else
#define LASP_SM_X86 0
#endif

// Tile sizes (overridable at build time for benchmarking). 64×128 measured best among
// {32,64,96,128}×{32,64,128} at H=4, d=64, though 64×64 and 128×64 are within a few percent.
#ifndef LASP_SM_BR
#define LASP_SM_BR 64
#endif
#ifndef LASP_SM_BC
#define LASP_SM_BC 128
#endif

namespace lasp {
namespace {

constexpr int kBr = LASP_SM_BR;  // query rows per tile
constexpr int kBc = LASP_SM_BC;  // keys per tile
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------------------------
// exp: Cephes-style range reduction x = n·ln2 + r, |r| <= ln2/2, degree-6 polynomial for e^r,
// times 2^n built in the exponent bits. Relative error ~1e-7 on the normal range. Inputs below
// -87.3 (results in the denormal range, or -inf) give 0; inputs above 88 saturate at e^88;
// NaN stays NaN.
// ---------------------------------------------------------------------------------------------
constexpr float kExpLo = -87.3f;
constexpr float kExpHi = 88.0f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kExpC1 = 0.693359375f;
constexpr float kExpC2 = -2.12194440e-4f;
constexpr float kExpP0 = 1.9875691500e-4f;
constexpr float kExpP1 = 1.3981999507e-3f;
constexpr float kExpP2 = 8.3334519073e-3f;
constexpr float kExpP3 = 4.1665795894e-2f;
constexpr float kExpP4 = 1.6666665459e-1f;
constexpr float kExpP5 = 5.0000001201e-1f;

inline float exp_portable(float x) {
  const bool zero = x < kExpLo;  // also -inf; false for NaN
  x = x < kExpLo ? kExpLo : x;
  x = x > kExpHi ? kExpHi : x;
  // Round x·log2e to nearest with the 1.5·2^23 trick (|value| < 2^22 here); the integer n then
  // sits in the low mantissa bits of t. The build is ISO C++ (no FP contraction), so the
  // add/subtract pair is kept as written.
  const float magic = 12582912.f;
  const float t = x * kLog2e + magic;
  const float fx = t - magic;
  float r = x - fx * kExpC1;
  r = r - fx * kExpC2;
  const float z = r * r;
  float y = kExpP0;
  y = y * r + kExpP1;
  y = y * r + kExpP2;
  y = y * r + kExpP3;
  y = y * r + kExpP4;
  y = y * r + kExpP5;
  y = y * z + r + 1.f;
  uint32_t tb, mb;
  std::memcpy(&tb, &t, 4);
  std::memcpy(&mb, &magic, 4);
  const uint32_t eb = (tb - mb + 127u) << 23;  // 2^n
  float p2;
  std::memcpy(&p2, &eb, 4);
  y *= p2;
  return zero ? 0.f : y;
}

// ---- portable row kernels ----

float row_max_portable(const float* x, int n) {
  float acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = kNegInf;
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] = acc[k] < x[i + k] ? x[i + k] : acc[k];
  for (; i < n; ++i) acc[0] = acc[0] < x[i] ? x[i] : acc[0];
  float m = acc[0];
  for (int k = 1; k < 8; ++k) m = m < acc[k] ? acc[k] : m;
  return m;
}

// x[i] = exp(x[i] - m); returns the sum.
float exp_sub_sum_portable(float* x, int n, float m) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) {
      const float e = exp_portable(x[i + k] - m);
      x[i + k] = e;
      acc[k] += e;
    }
  for (; i < n; ++i) {
    const float e = exp_portable(x[i] - m);
    x[i] = e;
    acc[0] += e;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// x[i] = exp(x[i] - m).
void exp_sub_portable(float* x, int n, float m) {
  for (int i = 0; i < n; ++i) x[i] = exp_portable(x[i] - m);
}

// p[i] = p[i] * (dp[i] - D).
void ds_row_portable(float* p, const float* dp, int n, float D) {
  for (int i = 0; i < n; ++i) p[i] = p[i] * (dp[i] - D);
}

// sum_i a[i]*b[i]
float dot_portable(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  for (; i < n; ++i) acc[0] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// ---- AVX2 + FMA row kernels ----
#if LASP_SM_X86
#define LASP_AVX2 __attribute__((target("avx2,fma")))

LASP_AVX2 inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(kExpLo);
  const __m256 zero = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);  // x < lo (also -inf), not NaN
  x = _mm256_max_ps(lo, x);                              // NaN in x passes through
  x = _mm256_min_ps(_mm256_set1_ps(kExpHi), x);
  const __m256 fx =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(kExpC1), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(kExpC2), r);
  const __m256 z = _mm256_mul_ps(r, r);
  __m256 y = _mm256_set1_ps(kExpP0);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP1));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP2));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP3));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP4));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP5));
  y = _mm256_fmadd_ps(y, z, _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  __m256i n = _mm256_cvtps_epi32(fx);
  n = _mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(n));
  return _mm256_andnot_ps(zero, y);
}

LASP_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

LASP_AVX2 inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Mask with the first n (0..7) lanes set.
LASP_AVX2 inline __m256i tail_mask(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

LASP_AVX2 float row_max_avx2(const float* x, int n) {
  __m256 a0 = _mm256_set1_ps(kNegInf), a1 = a0;
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_max_ps(a0, _mm256_loadu_ps(x + i));
    a1 = _mm256_max_ps(a1, _mm256_loadu_ps(x + i + 8));
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_max_ps(a0, _mm256_loadu_ps(x + i));
  float m = hmax8(_mm256_max_ps(a0, a1));
  for (; i < n; ++i) m = m < x[i] ? x[i] : m;
  return m;
}

LASP_AVX2 float exp_sub_sum_avx2(float* x, int n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
    const __m256 e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm));
    _mm256_storeu_ps(x + i, e0);
    _mm256_storeu_ps(x + i + 8, e1);
    a0 = _mm256_add_ps(a0, e0);
    a1 = _mm256_add_ps(a1, e1);
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
    _mm256_storeu_ps(x + i, e0);
    a0 = _mm256_add_ps(a0, e0);
  }
  if (i < n) {
    const __m256i mask = tail_mask(n - i);
    const __m256 e0 = exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, mask), vm));
    _mm256_maskstore_ps(x + i, mask, e0);
    a1 = _mm256_add_ps(a1, _mm256_and_ps(e0, _mm256_castsi256_ps(mask)));
  }
  return hsum8(_mm256_add_ps(a0, a1));
}

LASP_AVX2 void exp_sub_avx2(float* x, int n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm)));
  if (i < n) {
    const __m256i mask = tail_mask(n - i);
    _mm256_maskstore_ps(x + i, mask, exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, mask), vm)));
  }
}

LASP_AVX2 void ds_row_avx2(float* p, const float* dp, int n, float D) {
  const __m256 vd = _mm256_set1_ps(D);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(p + i, _mm256_mul_ps(_mm256_loadu_ps(p + i), _mm256_sub_ps(_mm256_loadu_ps(dp + i), vd)));
  for (; i < n; ++i) p[i] = p[i] * (dp[i] - D);
}

LASP_AVX2 float dot_avx2(const float* a, const float* b, int n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
  float s = hsum8(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}
#undef LASP_AVX2
#endif  // LASP_SM_X86

#ifdef LASP_SM_PORTABLE_ONLY  // testing hook: never take the AVX2 path
constexpr bool kForcePortable = true;
#else
constexpr bool kForcePortable = false;
#endif

struct RowKernels {
  float (*row_max)(const float*, int);
  float (*exp_sub_sum)(float*, int, float);
  void (*exp_sub)(float*, int, float);
  void (*ds_row)(float*, const float*, int, float);
  float (*dot)(const float*, const float*, int);
};

const RowKernels& row_kernels() {
  static const RowKernels k = [] {
#if LASP_SM_X86
    __builtin_cpu_init();
    if (!kForcePortable && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return RowKernels{row_max_avx2, exp_sub_sum_avx2, exp_sub_avx2, ds_row_avx2, dot_avx2};
#endif
    return RowKernels{row_max_portable, exp_sub_sum_portable, exp_sub_portable, ds_row_portable,
                      dot_portable};
  }();
  return k;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

// Per-thread scratch, grown on demand (never per tile).
struct Scratch {
  std::vector<float> q, s, o, m, l;  // forward
  std::vector<float> dk, dv, p, dp;  // backward
};
Scratch& scratch() {
  static thread_local Scratch s;
  return s;
}
inline float* grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Copies rows [r0, r0+n) of head h from a [T,H,d] array into a contiguous [n,d] buffer.
inline void pack_rows(const float* src, int H, int d, int h, int r0, int n, float* dst) {
  const size_t ld = static_cast<size_t>(H) * d;
  const float* s = src + static_cast<size_t>(r0) * ld + static_cast<size_t>(h) * d;
  for (int r = 0; r < n; ++r) std::memcpy(dst + static_cast<size_t>(r) * d, s + r * ld, sizeof(float) * d);
}

// Writes a contiguous [n,d] buffer into rows [r0, r0+n) of head h of a [T,H,d] array.
inline void unpack_rows(const float* src, int H, int d, int h, int r0, int n, float* dst) {
  const size_t ld = static_cast<size_t>(H) * d;
  float* o = dst + static_cast<size_t>(r0) * ld + static_cast<size_t>(h) * d;
  for (int r = 0; r < n; ++r) std::memcpy(o + r * ld, src + static_cast<size_t>(r) * d, sizeof(float) * d);
}

// Number of keys visible to query row i (global position qOffset + i): keys [first, visible).
inline long long visible_keys(const SoftmaxProblem& p, long long i) {
  if (!p.causal) return p.Tk;
  return std::min<long long>(p.Tk, p.qOffset + i + 1);
}

// First key visible to query row i: 0 without a window, else qOffset + i − window + 1 (≥ 0).
inline long long first_key(const SoftmaxProblem& p, long long i) {
  if (!p.causal || p.window <= 0) return 0;
  return std::max<long long>(0, p.qOffset + i - p.window + 1);
}

// Columns [a, b) of a key tile starting at j0 with bc keys that query row i sees (b <= a: none).
inline void tile_range(const SoftmaxProblem& p, long long i, int j0, int bc, int& a, int& b) {
  const long long lo = first_key(p, i) - j0;
  const long long hi = visible_keys(p, i) - j0;
  a = static_cast<int>(std::max<long long>(0, std::min<long long>(bc, lo)));
  b = static_cast<int>(std::max<long long>(0, std::min<long long>(bc, hi)));
  if (b < a) b = a;
}

}  // namespace

// =============================================================================================
// Forward
// =============================================================================================

void softmax_attention_forward(const SoftmaxProblem& p, float* o, float* lse) {
  const int Tq = p.Tq, H = p.H, dk = p.dk, dv = p.dv;
  if (Tq <= 0 || H <= 0) return;
  const int nQT = (Tq + kBr - 1) / kBr;
  const RowKernels& K = row_kernels();

  // Largest tasks (late query tiles under causal) first, for load balance.
  parallel_for(nQT * H, [&](int t) {
    const int it = nQT - 1 - t / H;
    const int h = t % H;
    const int i0 = it * kBr;
    const int br = std::min(kBr, Tq - i0);
    // Keys seen by any row of the tile: [kStart, kEnd); the key tiles stay aligned to kBc.
    const int kEnd = static_cast<int>(visible_keys(p, static_cast<long long>(i0) + br - 1));
    const int kStart = static_cast<int>(first_key(p, i0) / kBc) * kBc;
    const int ldk = H * dk, ldv = H * dv;

    Scratch& sc = scratch();
    float* Qp = grow(sc.q, static_cast<size_t>(kBr) * dk);
    float* S = grow(sc.s, static_cast<size_t>(kBr) * kBc);
    float* O = grow(sc.o, static_cast<size_t>(kBr) * dv);
    float* m = grow(sc.m, kBr);
    float* l = grow(sc.l, kBr);

    pack_rows(p.q, H, dk, h, i0, br, Qp);
    for (int r = 0; r < br; ++r) {
      m[r] = kNegInf;
      l[r] = 0.f;
    }
    std::fill(O, O + static_cast<size_t>(br) * dv, 0.f);

    for (int j0 = kStart; j0 < kEnd; j0 += kBc) {
      const int bc = std::min(kBc, kEnd - j0);
      // K and V are read in place (row stride H·d): they are the B operands, which sgemm
      // packs itself, so copying them here first would only add a pass.
      const float* Kt = p.k + static_cast<size_t>(j0) * ldk + static_cast<size_t>(h) * dk;
      const float* Vt = p.v + static_cast<size_t>(j0) * ldv + static_cast<size_t>(h) * dv;
      sgemm(false, true, br, bc, dk, p.scale, Qp, dk, Kt, ldk, 0.f, S, bc);
      for (int r = 0; r < br; ++r) {
        float* s = S + static_cast<size_t>(r) * bc;
        // Visible columns of this row in the tile: [a, b) (a > 0 only with a window).
        int a = 0, b = 0;
        tile_range(p, static_cast<long long>(i0) + r, j0, bc, a, b);
        const int nv = b - a;
        const float mx = nv > 0 ? K.row_max(s + a, nv) : kNegInf;
        const float mOld = m[r];
        const float mNew = mOld < mx ? mx : mOld;
        if (mNew == kNegInf) {  // nothing visible yet: P row is 0
          std::fill(s, s + bc, 0.f);
          continue;
        }
        const float rs = nv > 0 ? K.exp_sub_sum(s + a, nv, mNew) : 0.f;
        for (int c = 0; c < a; ++c) s[c] = 0.f;
        for (int c = b; c < bc; ++c) s[c] = 0.f;
        if (mNew != mOld) {
          const float alpha = exp_portable(mOld - mNew);  // 0 when mOld = -inf
          l[r] = l[r] * alpha + rs;
          float* orow = O + static_cast<size_t>(r) * dv;
          for (int c = 0; c < dv; ++c) orow[c] *= alpha;
          m[r] = mNew;
        } else {
          l[r] += rs;
        }
      }
      sgemm(false, false, br, dv, bc, 1.f, S, bc, Vt, ldv, 1.f, O, dv);
    }

    // Finalise: o = O / l, lse = m + log(l).
    const size_t ldo = static_cast<size_t>(H) * dv;
    for (int r = 0; r < br; ++r) {
      float* orow = o + static_cast<size_t>(i0 + r) * ldo + static_cast<size_t>(h) * dv;
      const float* Orow = O + static_cast<size_t>(r) * dv;
      float* lrow = lse + static_cast<size_t>(h) * Tq + i0 + r;
      if (m[r] == kNegInf || !(l[r] > 0.f)) {
        for (int c = 0; c < dv; ++c) orow[c] = 0.f;
        *lrow = kNegInf;
      } else {
        const float inv = 1.f / l[r];
        for (int c = 0; c < dv; ++c) orow[c] = Orow[c] * inv;
        *lrow = m[r] + std::log(l[r]);
      }
    }
  });
}

// =============================================================================================
// Backward
// =============================================================================================

void softmax_attention_backward(const SoftmaxProblem& p, const float* o, const float* lse,
                                const float* dO, float* dq, float* dk, float* dv) {
  const int Tq = p.Tq, Tk = p.Tk, H = p.H, dk_ = p.dk, dv_ = p.dv;
  if (H <= 0) return;
  const size_t nq = static_cast<size_t>(Tq > 0 ? Tq : 0) * H * dk_;
  std::fill(dq, dq + nq, 0.f);
  if (Tk <= 0) return;
  const RowKernels& K = row_kernels();
  const int nQT = Tq > 0 ? (Tq + kBr - 1) / kBr : 0;
  const int nKT = (Tk + kBc - 1) / kBc;

  // D[h, i] = rowsum(dO_i ⊙ O_i), layout [H, Tq] like lse.
  std::vector<float> Dv(static_cast<size_t>(H) * (Tq > 0 ? Tq : 0));
  if (Tq > 0) {
    const int nChunks = std::min(Tq, 64);
    parallel_for(nChunks, [&](int ch) {
      const int r0 = static_cast<int>(static_cast<long long>(Tq) * ch / nChunks);
      const int r1 = static_cast<int>(static_cast<long long>(Tq) * (ch + 1) / nChunks);
      for (int i = r0; i < r1; ++i)
        for (int h = 0; h < H; ++h) {
          const size_t off = (static_cast<size_t>(i) * H + h) * dv_;
          Dv[static_cast<size_t>(h) * Tq + i] = K.dot(dO + off, o + off, dv_);
        }
    });
  }

  // Key-tile groups: task (h, g) handles key tiles g, g+G, g+2G, ... of head h (strided, so the
  // groups carry similar work under causal) and accumulates dQ into slot g. Aim for ~4 tasks
  // per thread; cap the scratch dQ slots at ~256 MiB.
  int G = 1;
  if (Tq > 0) {
    const int want = (4 * num_threads() + H - 1) / H;
    G = std::max(1, std::min(want, nKT));
    const size_t capFloats = size_t(64) << 20;
    while (G > 1 && static_cast<size_t>(G - 1) * nq > capFloats) --G;
  }
  std::vector<float> slots(static_cast<size_t>(G - 1) * nq, 0.f);
  auto slot = [&](int g) { return g == 0 ? dq : slots.data() + static_cast<size_t>(g - 1) * nq; };

  const size_t ldq = static_cast<size_t>(H) * dk_;
  const int ldk = H * dk_, ldv = H * dv_;
  parallel_for(H * G, [&](int t) {
    const int h = t % H;
    const int g = t / H;
    float* dQs = slot(g);
    Scratch& sc = scratch();
    float* dKa = grow(sc.dk, static_cast<size_t>(kBc) * dk_);
    float* dVa = grow(sc.dv, static_cast<size_t>(kBc) * dv_);
    float* P = grow(sc.p, static_cast<size_t>(kBr) * kBc);
    float* dP = grow(sc.dp, static_cast<size_t>(kBr) * kBc);

    for (int jt = g; jt < nKT; jt += G) {
      const int j0 = jt * kBc;
      const int bc = std::min(kBc, Tk - j0);
      std::fill(dKa, dKa + static_cast<size_t>(bc) * dk_, 0.f);
      std::fill(dVa, dVa + static_cast<size_t>(bc) * dv_, 0.f);
      // First query row that sees key j0: qOffset + i >= j0. With a window, rows past
      // qOffset + i = j0 + bc − 1 + window − 1 see none of the tile's keys: [iFirst, iEnd).
      long long iFirst = p.causal ? std::max<long long>(0, j0 - p.qOffset) : 0;
      long long iEnd = Tq;
      if (p.causal && p.window > 0)
        iEnd = std::max<long long>(0, std::min<long long>(Tq, static_cast<long long>(j0) + bc + p.window - 1 - p.qOffset));
      if (iFirst < iEnd) {
        const float* Kp = p.k + static_cast<size_t>(j0) * ldk + static_cast<size_t>(h) * dk_;
        const float* Vp = p.v + static_cast<size_t>(j0) * ldv + static_cast<size_t>(h) * dv_;
        const int itEnd = static_cast<int>((iEnd + kBr - 1) / kBr);
        for (int it = static_cast<int>(iFirst / kBr); it < itEnd; ++it) {
          const int i0 = it * kBr;
          const int br = std::min(kBr, Tq - i0);
          // Q and dO rows of this tile, read in place (row stride H·d): as B operands sgemm packs
          // them anyway, and as A operands it streams them; measured faster than copying.
          const float* Qp = p.q + static_cast<size_t>(i0) * ldk + static_cast<size_t>(h) * dk_;
          const float* dOp = dO + static_cast<size_t>(i0) * ldv + static_cast<size_t>(h) * dv_;
          const int lq = ldk, lo = ldv;
          const float* lrow = lse + static_cast<size_t>(h) * Tq + i0;
          const float* Drow = Dv.data() + static_cast<size_t>(h) * Tq + i0;

          // P = exp(scale·Q·K^T − lse), masked entries 0.
          sgemm(false, true, br, bc, dk_, p.scale, Qp, lq, Kp, ldk, 0.f, P, bc);
          for (int r = 0; r < br; ++r) {
            float* s = P + static_cast<size_t>(r) * bc;
            int a = 0, b = 0;
            tile_range(p, static_cast<long long>(i0) + r, j0, bc, a, b);
            if (lrow[r] == kNegInf) b = a;
            if (b > a) K.exp_sub(s + a, b - a, lrow[r]);
            for (int c = 0; c < a; ++c) s[c] = 0.f;
            for (int c = b; c < bc; ++c) s[c] = 0.f;
          }
          // dV += P^T·dO
          sgemm(true, false, bc, dv_, br, 1.f, P, bc, dOp, lo, 1.f, dVa, dv_);
          // dP = dO·V^T
          sgemm(false, true, br, bc, dv_, 1.f, dOp, lo, Vp, ldv, 0.f, dP, bc);
          // dS = P ⊙ (dP − D), in place in P
          for (int r = 0; r < br; ++r)
            K.ds_row(P + static_cast<size_t>(r) * bc, dP + static_cast<size_t>(r) * bc, bc, Drow[r]);
          // dK += scale·dS^T·Q
          sgemm(true, false, bc, dk_, br, p.scale, P, bc, Qp, lq, 1.f, dKa, dk_);
          // dQ(slot) += scale·dS·K, straight into the strided [Tq,H,dk] slot
          sgemm(false, false, br, dk_, bc, p.scale, P, bc, Kp, ldk, 1.f,
                dQs + static_cast<size_t>(i0) * ldq + static_cast<size_t>(h) * dk_, static_cast<int>(ldq));
        }
      }
      unpack_rows(dKa, H, dk_, h, j0, bc, dk);
      unpack_rows(dVa, H, dv_, h, j0, bc, dv);
    }
  });

  // dq = slot 0 + slot 1 + ... in a fixed order.
  if (G > 1) {
    const int nChunks = static_cast<int>(std::min<size_t>(64, (nq + 4095) / 4096));
    parallel_for(nChunks, [&](int ch) {
      const size_t a = nq * ch / nChunks, b = nq * (ch + 1) / nChunks;
      for (int g = 1; g < G; ++g) {
        const float* s = slot(g);
        for (size_t x = a; x < b; ++x) dq[x] += s[x];
      }
    });
  }
}

}  // namespace lasp
