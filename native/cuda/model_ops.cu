// CUDA float32 model ops (model_ops.h): plain kernels that follow the CPU ops of
// native/src/model_ops.cc, native/src/short_conv.cc and native/src/gemm.cc formula by formula
// (same operation order inside each element, same exp clamps), so the results differ from the
// CPU ones only by the order of float32 sums.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "model_ops.h"

namespace lasp_cuda_ops {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

// Blocks for a grid-stride loop over n items (n > 0).
unsigned blocksFor(int64_t n, int threads = kThreads) {
  return static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, kMaxBlocks));
}

#define LASP_GRID_STRIDE(i, n) \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// Device scratch from the stream-ordered pool, freed (stream-ordered) on scope exit.
struct Scratch {
  void* p = nullptr;
  cudaStream_t s;
  cudaError_t err;
  Scratch(size_t bytes, cudaStream_t st) : s(st) { err = cudaMallocAsync(&p, bytes ? bytes : 16, st); }
  ~Scratch() {
    if (p) cudaFreeAsync(p, s);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// ---- device helpers ------------------------------------------------------------------------

// lasp::exp_clamped: e^x with x clamped to [-87.3, 88.7] (a NaN stays NaN, as the CPU's selects).
__device__ __forceinline__ float expClamped(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.7f ? 88.7f : x;
  return expf(x);
}

// model_ops.cc's sigmoid: 1 / (1 + exp_clamped(−z)).
__device__ __forceinline__ float sigmoidClamped(float z) { return 1.f / (1.f + expClamped(-z)); }

// short_conv.cc's sigmoidf: 1 / (1 + e^{−z}), no clamp.
__device__ __forceinline__ float sigmoidPlain(float z) { return 1.f / (1.f + expf(-z)); }

struct SumOp {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
};
// The CPU's max_of: keeps the running value unless the new one is greater (NaNs are skipped).
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return b > a ? b : a; }
};

// Butterfly over the 32 lanes: every lane ends with the same value (the ops are commutative).
template <class T, class Op>
__device__ __forceinline__ T warpReduce(T v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Reduction over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. sh holds 32 values; the leading barrier lets a block call this repeatedly.
template <class T, class Op>
__device__ T blockReduce(T v, Op op, T* sh) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warpReduce(v, op);
  __syncthreads();
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  T r = sh[0];
  for (int i = 1; i < nw; i++) r = op(r, sh[i]);
  return r;
}

// ---- elementwise ---------------------------------------------------------------------------

__global__ void addIntoKernel(float* __restrict__ dst, const float* __restrict__ src, int64_t n) {
  LASP_GRID_STRIDE(i, n) dst[i] += src[i];
}

__global__ void scaleKernel(float* __restrict__ x, int64_t n, float s) {
  LASP_GRID_STRIDE(i, n) x[i] *= s;
}

__global__ void zeroKernel(float* __restrict__ x, int64_t n) {
  LASP_GRID_STRIDE(i, n) x[i] = 0.f;
}

__global__ void swigluFwdKernel(const float* __restrict__ a, const float* __restrict__ b, int64_t n, float* __restrict__ y) {
  LASP_GRID_STRIDE(i, n) {
    const float ai = a[i];
    y[i] = ai * sigmoidClamped(ai) * b[i];
  }
}

// silu'(z) = s (1 + z (1 − s)), s = sigmoid(z).
__global__ void swigluBwdKernel(const float* __restrict__ a, const float* __restrict__ b, const float* __restrict__ dy, int64_t n,
                                float* __restrict__ da, float* __restrict__ db) {
  LASP_GRID_STRIDE(i, n) {
    const float ai = a[i], bi = b[i], g = dy[i];
    const float s = sigmoidClamped(ai);
    da[i] = g * bi * s * (1.f + ai * (1.f - s));
    db[i] = g * ai * s;
  }
}

// Stable logsigmoid: min(z, 0) − log1p(e^{−|z|}), times invTau.
__global__ void logSigmoidKernel(const float* __restrict__ z, int64_t n, float invTau, float* __restrict__ g) {
  LASP_GRID_STRIDE(i, n) {
    const float zi = z[i];
    const float e = expClamped(-fabsf(zi));
    g[i] = ((zi < 0.f ? zi : 0.f) - log1pf(e)) * invTau;
  }
}

__global__ void logSigmoidBwdKernel(const float* __restrict__ z, const float* __restrict__ dg, int64_t n, float invTau,
                                    float* __restrict__ dz) {
  LASP_GRID_STRIDE(i, n) dz[i] = dg[i] * invTau * sigmoidClamped(-z[i]);
}

__global__ void sigmoidFwdKernel(const float* __restrict__ z, int64_t n, float* __restrict__ y) {
  LASP_GRID_STRIDE(i, n) y[i] = sigmoidClamped(z[i]);
}

__global__ void sigmoidBwdKernel(const float* __restrict__ y, const float* __restrict__ dy, int64_t n, float* __restrict__ dz) {
  LASP_GRID_STRIDE(i, n) {
    const float yi = y[i];
    dz[i] = dy[i] * yi * (1.f - yi);
  }
}

// p ← p·decay − stepSize · m / (sqrt(v)·invSqrtBc2 + eps), after the moment updates. Every
// operation separately rounded, in the CPU's order (the _rn intrinsics are never fused into FMAs):
// the same bits as lasp::adamw_step (built without FP contraction). A parameter moves by far less
// than its ulp-scale magnitude per step, so a fused product would show up as whole-ulp differences.
__global__ void adamWKernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v, int64_t n,
                            float b1, float b2, float eps, float decay, float stepSize, float invSqrtBc2) {
  const float c1 = __fsub_rn(1.f, b1), c2 = __fsub_rn(1.f, b2);
  LASP_GRID_STRIDE(i, n) {
    const float gi = g[i];
    const float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(c1, gi));
    const float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(c2, gi), gi));
    m[i] = mi;
    v[i] = vi;
    const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), invSqrtBc2), eps);
    p[i] = __fsub_rn(__fmul_rn(p[i], decay), __fdiv_rn(__fmul_rn(stepSize, mi), denom));
  }
}

// ---- row-wise: one warp per row ------------------------------------------------------------

constexpr int kRowsPerBlock = kThreads / 32;

// Every warp takes rows warp, warp + (all warps), ...: the loop is the same for the 32 lanes.
#define LASP_WARP_ROWS(row, n)                                                                   \
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5); row < (n); \
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock)

__global__ void rmsFwdKernel(const float* __restrict__ x, const float* __restrict__ w, int64_t N, int D, float eps,
                             float* __restrict__ y, float* __restrict__ rstd) {
  const int lane = threadIdx.x & 31;
  LASP_WARP_ROWS(row, N) {
    const float* xr = x + row * D;
    float s = 0.f;
    for (int j = lane; j < D; j += 32) s += xr[j] * xr[j];
    s = warpReduce(s, SumOp());
    const float r = static_cast<float>(1.0 / sqrt(static_cast<double>(s) / D + static_cast<double>(eps)));
    if (lane == 0) rstd[row] = r;
    float* yr = y + row * D;
    for (int j = lane; j < D; j += 32) yr[j] = xr[j] * r * w[j];
  }
}

// dx_j = r (w_j dy_j − (r² c / D) x_j), c = Σ_i dy_i w_i x_i.
__global__ void rmsBwdDxKernel(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ rstd,
                               const float* __restrict__ dy, int64_t N, int D, float* __restrict__ dx) {
  const int lane = threadIdx.x & 31;
  LASP_WARP_ROWS(row, N) {
    const float* xr = x + row * D;
    const float* gr = dy + row * D;
    float c = 0.f;
    for (int j = lane; j < D; j += 32) c += gr[j] * w[j] * xr[j];
    c = warpReduce(c, SumOp());
    const float r = rstd[row];
    const float k = r * r * c / static_cast<float>(D);
    float* out = dx + row * D;
    for (int j = lane; j < D; j += 32) out[j] = r * (w[j] * gr[j] - k * xr[j]);
  }
}

// Partial dw over a chunk of rows: block (32, 8) over 32 columns; part [chunks, D] in double.
__global__ void rmsBwdDwPartKernel(const float* __restrict__ x, const float* __restrict__ rstd, const float* __restrict__ dy,
                                   int64_t N, int D, int64_t rowsPer, double* __restrict__ part) {
  __shared__ double sh[8][33];
  const int j = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rowsPer, r1 = min(N, r0 + rowsPer);
  double acc = 0.0;
  if (j < D)
    for (int64_t n = r0 + threadIdx.y; n < r1; n += 8) acc += static_cast<double>(dy[n * D + j] * x[n * D + j] * rstd[n]);
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < D) {
    double s = sh[0][threadIdx.x];
    for (int i = 1; i < 8; i++) s += sh[i][threadIdx.x];
    part[static_cast<int64_t>(blockIdx.y) * D + j] = s;
  }
}

// out[i] = Σ_c part[c·n + i] (c in order), as float.
__global__ void sumPartsKernel(const double* __restrict__ part, int chunks, int64_t n, float* __restrict__ out) {
  LASP_GRID_STRIDE(i, n) {
    double s = 0.0;
    for (int c = 0; c < chunks; c++) s += part[static_cast<int64_t>(c) * n + i];
    out[i] = static_cast<float>(s);
  }
}

__global__ void l2FwdKernel(const float* __restrict__ x, int64_t rows, int d, float eps, float* __restrict__ y,
                            float* __restrict__ inv) {
  const int lane = threadIdx.x & 31;
  LASP_WARP_ROWS(row, rows) {
    const float* xr = x + row * d;
    double s = 0.0;
    for (int j = lane; j < d; j += 32) s += static_cast<double>(xr[j]) * xr[j];
    s = warpReduce(s, SumOp());
    const float iv = static_cast<float>(1.0 / sqrt(s + static_cast<double>(eps)));
    if (lane == 0) inv[row] = iv;
    float* yr = y + row * d;
    for (int j = lane; j < d; j += 32) yr[j] = xr[j] * iv;
  }
}

__global__ void l2BwdKernel(const float* __restrict__ y, const float* __restrict__ inv, const float* __restrict__ dy, int64_t rows,
                            int d, float* __restrict__ dx) {
  const int lane = threadIdx.x & 31;
  LASP_WARP_ROWS(row, rows) {
    const float* yr = y + row * d;
    const float* gr = dy + row * d;
    double s = 0.0;
    for (int j = lane; j < d; j += 32) s += static_cast<double>(yr[j]) * gr[j];
    s = warpReduce(s, SumOp());
    const float iv = inv[row], dt = static_cast<float>(s);
    float* out = dx + row * d;
    for (int j = lane; j < d; j += 32) out[j] = iv * (gr[j] - yr[j] * dt);
  }
}

// ---- embedding -----------------------------------------------------------------------------

__global__ void embFwdKernel(const float* __restrict__ table, const int32_t* __restrict__ ids, int64_t N, int V, int D,
                             float* __restrict__ y) {
  LASP_GRID_STRIDE(i, N * D) {
    const int64_t n = i / D;
    const int j = static_cast<int>(i - n * D);
    const int32_t id = ids[n];
    y[i] = (id >= 0 && id < V) ? table[static_cast<int64_t>(id) * D + j] : 0.f;
  }
}

__global__ void embBwdKernel(const int32_t* __restrict__ ids, const float* __restrict__ dy, int64_t N, int V, int D,
                             float* __restrict__ dtable) {
  LASP_GRID_STRIDE(i, N * D) {
    const int64_t n = i / D;
    const int j = static_cast<int>(i - n * D);
    const int32_t id = ids[n];
    if (id >= 0 && id < V) atomicAdd(dtable + static_cast<int64_t>(id) * D + j, dy[i]);
  }
}

// ---- cross-entropy: one block per row ------------------------------------------------------

__global__ void ceRowKernel(const float* __restrict__ logits, const int32_t* __restrict__ targets, int64_t N, int V, float scale,
                            float* __restrict__ dlogits, double* __restrict__ rowLoss) {
  __shared__ float sh[32];
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const float* x = logits + row * V;
    float* d = dlogits + row * V;
    const int32_t t = targets[row];
    if (t < 0 || t >= V) {  // the same branch for the whole block
      for (int j = threadIdx.x; j < V; j += blockDim.x) d[j] = 0.f;
      if (threadIdx.x == 0) rowLoss[row] = 0.0;
      continue;
    }
    float m = x[0];
    for (int j = threadIdx.x; j < V; j += blockDim.x) m = MaxOp()(m, x[j]);
    m = blockReduce(m, MaxOp(), sh);
    float s = 0.f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += expClamped(x[j] - m);
    s = blockReduce(s, SumOp(), sh);  // s ≥ 1: the max term is e^0
    const float f = scale / s;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
      float v = __fmul_rn(expClamped(x[j] - m), f);
      if (j == t) v -= scale;
      d[j] = v;
    }
    if (threadIdx.x == 0) rowLoss[row] = static_cast<double>(m) + log(static_cast<double>(s)) - static_cast<double>(x[t]);
  }
}

// One block of 1024: loss = Σ rowLoss (fixed order), count = rows with a target in [0, V).
__global__ void ceSumKernel(const double* __restrict__ rowLoss, const int32_t* __restrict__ targets, int64_t N, int V,
                            double* __restrict__ loss, int64_t* __restrict__ count) {
  __shared__ double shd[32];
  __shared__ long long shc[32];
  double s = 0.0;
  long long c = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    s += rowLoss[i];
    c += (targets[i] >= 0 && targets[i] < V) ? 1 : 0;
  }
  s = blockReduce(s, SumOp(), shd);
  c = blockReduce(c, SumOp(), shc);
  if (threadIdx.x == 0) {
    *loss = s;
    *count = static_cast<int64_t>(c);
  }
}

// ---- sum of squares ------------------------------------------------------------------------

__global__ void ssPartKernel(const float* __restrict__ x, int64_t n, double* __restrict__ part) {
  __shared__ double sh[32];
  double s = 0.0;
  LASP_GRID_STRIDE(i, n) s += static_cast<double>(x[i]) * x[i];
  s = blockReduce(s, SumOp(), sh);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// One block of 1024 over np partials; *out = the sum, or its square root.
__global__ void ssFinalKernel(const double* __restrict__ part, int64_t np, bool takeSqrt, double* __restrict__ out) {
  __shared__ double sh[32];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < np; i += blockDim.x) s += part[i];
  s = blockReduce(s, SumOp(), sh);
  if (threadIdx.x == 0) *out = takeSqrt ? sqrt(s) : s;
}

// ---- short convolution ---------------------------------------------------------------------

// Row t (down to −(K−1)) of sequence b: from x, from the halo, or null (zeros).
__device__ __forceinline__ const float* convRow(const float* x, const float* halo, int64_t T, int C, int K, int64_t b, int64_t t) {
  if (t >= 0) return x + (b * T + t) * C;
  if (!halo) return nullptr;
  return halo + (b * (K - 1) + (t + K - 1)) * C;
}

// z[b,t,c] = Σ_j w[j,c] x[b,t−j,c] (j ascending, from 0).
__device__ __forceinline__ float convAt(const float* x, const float* halo, const float* w, int64_t T, int C, int K, int64_t b,
                                        int64_t t, int c) {
  float z = 0.f;
  for (int j = 0; j < K; j++) {
    const float* xr = convRow(x, halo, T, C, K, b, t - j);
    if (xr) z += w[static_cast<int64_t>(j) * C + c] * xr[c];
  }
  return z;
}

__global__ void convFwdKernel(const float* __restrict__ x, const float* __restrict__ halo, const float* __restrict__ w, int B,
                              int64_t T, int C, int K, bool silu, float* __restrict__ y) {
  LASP_GRID_STRIDE(i, static_cast<int64_t>(B) * T * C) {
    const int64_t r = i / C;
    const int c = static_cast<int>(i - r * C);
    const int64_t b = r / T, t = r - b * T;
    const float v = convAt(x, halo, w, T, C, K, b, t, c);
    y[i] = silu ? v * sigmoidPlain(v) : v;
  }
}

// dz = dy · silu'(z) (z recomputed).
__global__ void convDzKernel(const float* __restrict__ x, const float* __restrict__ halo, const float* __restrict__ w,
                             const float* __restrict__ dy, int B, int64_t T, int C, int K, float* __restrict__ dz) {
  LASP_GRID_STRIDE(i, static_cast<int64_t>(B) * T * C) {
    const int64_t r = i / C;
    const int c = static_cast<int>(i - r * C);
    const int64_t b = r / T, t = r - b * T;
    const float v = convAt(x, halo, w, T, C, K, b, t, c), s = sigmoidPlain(v);
    dz[i] = dy[i] * s * (1.f + v * (1.f - s));
  }
}

// For t in [−(K−1), T): Σ_j w[j,c] dz[b,t+j,c] over 0 ≤ t+j < T, into dx (t ≥ 0) or dhalo (t < 0).
__global__ void convDxKernel(const float* __restrict__ w, const float* __restrict__ dz, int B, int64_t T, int C, int K,
                             float* __restrict__ dx, float* __restrict__ dhalo) {
  const int64_t span = T + K - 1;
  LASP_GRID_STRIDE(i, static_cast<int64_t>(B) * span * C) {
    const int64_t r = i / C;
    const int c = static_cast<int>(i - r * C);
    const int64_t b = r / span, tt = r - b * span, t = tt - (K - 1);
    float* out;
    if (t >= 0) {
      out = dx + (b * T + t) * C + c;
    } else {
      if (!dhalo) continue;
      out = dhalo + (b * (K - 1) + tt) * C + c;
    }
    float s = 0.f;
    for (int j = 0; j < K; j++) {
      if (t + j < 0 || t + j >= T) continue;
      s += w[static_cast<int64_t>(j) * C + c] * dz[(b * T + t + j) * C + c];
    }
    *out = s;
  }
}

// Partial dw[j,c] over a chunk of the B·T rows: grid (C/32, K, chunks), block (32, 8);
// part [chunks, K, C] in double.
__global__ void convDwPartKernel(const float* __restrict__ x, const float* __restrict__ halo, const float* __restrict__ dz, int B,
                                 int64_t T, int C, int K, int64_t rowsPer, double* __restrict__ part) {
  __shared__ double sh[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  const int j = blockIdx.y;
  const int64_t R = static_cast<int64_t>(B) * T;
  const int64_t r0 = static_cast<int64_t>(blockIdx.z) * rowsPer, r1 = min(R, r0 + rowsPer);
  double acc = 0.0;
  if (c < C)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const int64_t b = r / T, t = r - b * T;
      const float* xr = convRow(x, halo, T, C, K, b, t - j);
      if (xr) acc += static_cast<double>(dz[r * C + c]) * xr[c];
    }
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    double s = sh[0][threadIdx.x];
    for (int i = 1; i < 8; i++) s += sh[i][threadIdx.x];
    part[(static_cast<int64_t>(blockIdx.z) * K + j) * C + c] = s;
  }
}

// ---- GEMM ----------------------------------------------------------------------------------

constexpr int GBM = 64, GBN = 64, GBK = 16;

// One 64×64 tile of op(A)·op(B) over k in [blockIdx.z·kPer, min(K, (blockIdx.z+1)·kPer)), 256
// threads of 4×4 outputs (rows 4·ty.., columns 4·tx..). Tiles are staged k-major in shared
// memory (zero outside the matrices); the loads are coalesced along the stored rows of A and B.
// SPLIT: raw sums into part[blockIdx.z] [M,N]; else C = alpha·sum + beta·C (C unread if beta == 0).
template <bool TA, bool TB, bool SPLIT>
__global__ void __launch_bounds__(256) gemmKernel(int M, int N, int K, int kPer, const float* __restrict__ A,
                                                  const float* __restrict__ B, float* __restrict__ C, float alpha, float beta,
                                                  float* __restrict__ part) {
  __shared__ __align__(16) float As[GBK][GBM + 4];
  __shared__ __align__(16) float Bs[GBK][GBN + 4];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int m0 = blockIdx.x * GBM, n0 = blockIdx.y * GBN;
  const int kBegin = blockIdx.z * kPer, kEnd = min(K, kBegin + kPer);
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.f;

  for (int k0 = kBegin; k0 < kEnd; k0 += GBK) {
#pragma unroll
    for (int l = 0; l < (GBM * GBK) / 256; l++) {
      const int idx = tid + l * 256;
      int mm, kk;
      if (TA) {  // stored K×M: consecutive threads along m
        mm = idx & (GBM - 1);
        kk = idx / GBM;
      } else {  // stored M×K: consecutive threads along k
        kk = idx & (GBK - 1);
        mm = idx / GBK;
      }
      const int gm = m0 + mm, gk = k0 + kk;
      float v = 0.f;
      if (gm < M && gk < kEnd) v = TA ? A[static_cast<size_t>(gk) * M + gm] : A[static_cast<size_t>(gm) * K + gk];
      As[kk][mm] = v;
    }
#pragma unroll
    for (int l = 0; l < (GBN * GBK) / 256; l++) {
      const int idx = tid + l * 256;
      int nn, kk;
      if (TB) {  // stored N×K: consecutive threads along k
        kk = idx & (GBK - 1);
        nn = idx / GBK;
      } else {  // stored K×N: consecutive threads along n
        nn = idx & (GBN - 1);
        kk = idx / GBN;
      }
      const int gn = n0 + nn, gk = k0 + kk;
      float v = 0.f;
      if (gn < N && gk < kEnd) v = TB ? B[static_cast<size_t>(gn) * K + gk] : B[static_cast<size_t>(gk) * N + gn];
      Bs[kk][nn] = v;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < GBK; kk++) {
      const float4 a4 = *reinterpret_cast<const float4*>(&As[kk][ty * 4]);
      const float4 b4 = *reinterpret_cast<const float4*>(&Bs[kk][tx * 4]);
      const float a[4] = {a4.x, a4.y, a4.z, a4.w};
      const float b[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int m = m0 + ty * 4 + i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int n = n0 + tx * 4 + j;
      if (n >= N) continue;
      const size_t o = static_cast<size_t>(m) * N + n;
      if (SPLIT) {
        part[static_cast<size_t>(blockIdx.z) * M * N + o] = acc[i][j];
      } else {
        C[o] = beta == 0.f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * C[o];
      }
    }
  }
}

// C = alpha · Σ_s part[s] + beta · C (slices in order).
__global__ void gemmSplitReduceKernel(const float* __restrict__ part, int splits, int64_t MN, float alpha, float beta,
                                      float* __restrict__ C) {
  LASP_GRID_STRIDE(i, MN) {
    float s = 0.f;
    for (int z = 0; z < splits; z++) s += part[static_cast<int64_t>(z) * MN + i];
    C[i] = beta == 0.f ? alpha * s : alpha * s + beta * C[i];
  }
}

template <bool SPLIT>
void launchGemm(bool ta, bool tb, dim3 grid, cudaStream_t st, int M, int N, int K, int kPer, const float* A, const float* B, float* C,
                float alpha, float beta, float* part) {
  if (ta && tb)
    gemmKernel<true, true, SPLIT><<<grid, 256, 0, st>>>(M, N, K, kPer, A, B, C, alpha, beta, part);
  else if (ta)
    gemmKernel<true, false, SPLIT><<<grid, 256, 0, st>>>(M, N, K, kPer, A, B, C, alpha, beta, part);
  else if (tb)
    gemmKernel<false, true, SPLIT><<<grid, 256, 0, st>>>(M, N, K, kPer, A, B, C, alpha, beta, part);
  else
    gemmKernel<false, false, SPLIT><<<grid, 256, 0, st>>>(M, N, K, kPer, A, B, C, alpha, beta, part);
}

int multiprocessors() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      sms <= 0)
    sms = 132;
  return sms;
}

// The first error of this call's launches.
cudaError_t launched() { return cudaGetLastError(); }

}  // namespace

// ---- host launchers --------------------------------------------------------------------------

cudaError_t gemm(int M, int N, int K, const float* A, const float* B, float* C, bool transA, bool transB, float alpha, float beta,
                 cudaStream_t stream) {
  if (M < 0 || N < 0 || K < 0) return cudaErrorInvalidValue;
  if (M == 0 || N == 0) return cudaSuccess;
  const int64_t MN = static_cast<int64_t>(M) * N;
  if (K == 0 || alpha == 0.f) {  // lasp::sgemm's scale_c: beta 0 writes zeros, beta 1 leaves C alone
    if (beta == 0.f)
      zeroKernel<<<blocksFor(MN), kThreads, 0, stream>>>(C, MN);
    else if (beta != 1.f)
      scaleKernel<<<blocksFor(MN), kThreads, 0, stream>>>(C, MN, beta);
    return launched();
  }
  const int64_t tilesM = (M + GBM - 1) / GBM, tilesN = (N + GBN - 1) / GBN;
  if (tilesN > 65535) return cudaErrorInvalidValue;
  // Split K when the output tiles cannot fill the device (e.g. weight gradients: small M×N, K =
  // tokens): about two blocks per multiprocessor, every slice at least 256 deep.
  const int64_t tiles = tilesM * tilesN, want = 2 * static_cast<int64_t>(multiprocessors());
  int splits = 1;
  if (tiles < want && K >= 512) splits = static_cast<int>(std::min<int64_t>({(want + tiles - 1) / tiles, K / 256, 64}));
  int kPer = (K + splits - 1) / splits;
  kPer = (kPer + GBK - 1) / GBK * GBK;
  splits = (K + kPer - 1) / kPer;
  if (splits <= 1) {
    launchGemm<false>(transA, transB, dim3(static_cast<unsigned>(tilesM), static_cast<unsigned>(tilesN), 1), stream, M, N, K, K, A, B, C,
                      alpha, beta, nullptr);
    return launched();
  }
  Scratch part(static_cast<size_t>(splits) * MN * sizeof(float), stream);
  if (part.err != cudaSuccess) return part.err;
  launchGemm<true>(transA, transB, dim3(static_cast<unsigned>(tilesM), static_cast<unsigned>(tilesN), static_cast<unsigned>(splits)),
                   stream, M, N, K, kPer, A, B, C, alpha, beta, part.as<float>());
  gemmSplitReduceKernel<<<blocksFor(MN), kThreads, 0, stream>>>(part.as<float>(), splits, MN, alpha, beta, C);
  return launched();
}

cudaError_t addInto(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n > 0) addIntoKernel<<<blocksFor(n), kThreads, 0, stream>>>(dst, src, n);
  return launched();
}

cudaError_t scaleInPlace(float* x, int64_t n, float s, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n > 0) scaleKernel<<<blocksFor(n), kThreads, 0, stream>>>(x, n, s);
  return launched();
}

cudaError_t rmsNormForward(const float* x, const float* w, int64_t N, int D, float eps, float* y, float* rstd, cudaStream_t stream) {
  if (N < 0 || D < 1) return cudaErrorInvalidValue;
  if (N > 0) rmsFwdKernel<<<blocksFor(N, kRowsPerBlock), kThreads, 0, stream>>>(x, w, N, D, eps, y, rstd);
  return launched();
}

cudaError_t rmsNormBackward(const float* x, const float* w, const float* rstd, const float* dy, int64_t N, int D, float* dx, float* dw,
                            cudaStream_t stream) {
  if (N < 0 || D < 1) return cudaErrorInvalidValue;
  if (N == 0) {
    zeroKernel<<<blocksFor(D), kThreads, 0, stream>>>(dw, D);
    return launched();
  }
  rmsBwdDxKernel<<<blocksFor(N, kRowsPerBlock), kThreads, 0, stream>>>(x, w, rstd, dy, N, D, dx);
  const int chunks = static_cast<int>(std::min<int64_t>((N + 63) / 64, 512));
  const int64_t rowsPer = (N + chunks - 1) / chunks;
  Scratch part(static_cast<size_t>(chunks) * D * sizeof(double), stream);
  if (part.err != cudaSuccess) return part.err;
  rmsBwdDwPartKernel<<<dim3((D + 31) / 32, chunks), dim3(32, 8), 0, stream>>>(x, rstd, dy, N, D, rowsPer, part.as<double>());
  sumPartsKernel<<<blocksFor(D), kThreads, 0, stream>>>(part.as<double>(), chunks, D, dw);
  return launched();
}

cudaError_t swigluForward(const float* a, const float* b, int64_t n, float* y, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n > 0) swigluFwdKernel<<<blocksFor(n), kThreads, 0, stream>>>(a, b, n, y);
  return launched();
}

cudaError_t swigluBackward(const float* a, const float* b, const float* dy, int64_t n, float* da, float* db, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n > 0) swigluBwdKernel<<<blocksFor(n), kThreads, 0, stream>>>(a, b, dy, n, da, db);
  return launched();
}

cudaError_t embeddingForward(const float* table, const int32_t* ids, int64_t N, int V, int D, float* y, cudaStream_t stream) {
  if (N < 0 || V < 1 || D < 1) return cudaErrorInvalidValue;
  if (N > 0) embFwdKernel<<<blocksFor(N * D), kThreads, 0, stream>>>(table, ids, N, V, D, y);
  return launched();
}

cudaError_t embeddingBackward(const int32_t* ids, const float* dy, int64_t N, int V, int D, float* dtable, cudaStream_t stream) {
  if (N < 0 || V < 1 || D < 1) return cudaErrorInvalidValue;
  const int64_t VD = static_cast<int64_t>(V) * D;
  zeroKernel<<<blocksFor(VD), kThreads, 0, stream>>>(dtable, VD);
  if (N > 0) embBwdKernel<<<blocksFor(N * D), kThreads, 0, stream>>>(ids, dy, N, V, D, dtable);
  return launched();
}

cudaError_t crossEntropy(const float* logits, const int32_t* targets, int64_t N, int V, float scale, float* dlogits, double* loss,
                         int64_t* count, cudaStream_t stream) {
  if (N < 0 || V < 1) return cudaErrorInvalidValue;
  Scratch rowLoss(static_cast<size_t>(N) * sizeof(double), stream);
  if (rowLoss.err != cudaSuccess) return rowLoss.err;
  if (N > 0)
    ceRowKernel<<<static_cast<unsigned>(std::min<int64_t>(N, kMaxBlocks)), kThreads, 0, stream>>>(logits, targets, N, V, scale, dlogits,
                                                                                                   rowLoss.as<double>());
  ceSumKernel<<<1, 1024, 0, stream>>>(rowLoss.as<double>(), targets, N, V, loss, count);
  return launched();
}

cudaError_t logSigmoidScaled(const float* z, int64_t n, float invTau, float* g, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n > 0) logSigmoidKernel<<<blocksFor(n), kThreads, 0, stream>>>(z, n, invTau, g);
  return launched();
}

cudaError_t logSigmoidScaledBackward(const float* z, const float* dg, int64_t n, float invTau, float* dz, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n > 0) logSigmoidBwdKernel<<<blocksFor(n), kThreads, 0, stream>>>(z, dg, n, invTau, dz);
  return launched();
}

cudaError_t sigmoidForward(const float* z, int64_t n, float* y, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n > 0) sigmoidFwdKernel<<<blocksFor(n), kThreads, 0, stream>>>(z, n, y);
  return launched();
}

cudaError_t sigmoidBackward(const float* y, const float* dy, int64_t n, float* dz, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n > 0) sigmoidBwdKernel<<<blocksFor(n), kThreads, 0, stream>>>(y, dy, n, dz);
  return launched();
}

cudaError_t l2NormalizeRows(const float* x, int64_t rows, int d, float eps, float* y, float* inv, cudaStream_t stream) {
  if (rows < 0 || d < 1) return cudaErrorInvalidValue;
  if (rows > 0) l2FwdKernel<<<blocksFor(rows, kRowsPerBlock), kThreads, 0, stream>>>(x, rows, d, eps, y, inv);
  return launched();
}

cudaError_t l2NormalizeRowsBackward(const float* y, const float* inv, const float* dy, int64_t rows, int d, float* dx,
                                    cudaStream_t stream) {
  if (rows < 0 || d < 1) return cudaErrorInvalidValue;
  if (rows > 0) l2BwdKernel<<<blocksFor(rows, kRowsPerBlock), kThreads, 0, stream>>>(y, inv, dy, rows, d, dx);
  return launched();
}

cudaError_t shortConvForward(const float* x, const float* halo, const float* w, int B, int64_t T, int C, int K, bool silu, float* y,
                             cudaStream_t stream) {
  if (B < 1 || T < 1 || C < 1 || K < 1 || K > 64) return cudaErrorInvalidValue;
  const int64_t n = static_cast<int64_t>(B) * T * C;
  convFwdKernel<<<blocksFor(n), kThreads, 0, stream>>>(x, halo, w, B, T, C, K, silu, y);
  return launched();
}

cudaError_t shortConvBackward(const float* x, const float* halo, const float* w, const float* dy, int B, int64_t T, int C, int K,
                              bool silu, float* dx, float* dw, float* dhalo, cudaStream_t stream) {
  if (B < 1 || T < 1 || C < 1 || K < 1 || K > 64) return cudaErrorInvalidValue;
  const int64_t n = static_cast<int64_t>(B) * T * C, R = static_cast<int64_t>(B) * T;
  Scratch dzBuf(silu ? static_cast<size_t>(n) * sizeof(float) : 0, stream);
  if (dzBuf.err != cudaSuccess) return dzBuf.err;
  const float* dz = dy;
  if (silu) {
    convDzKernel<<<blocksFor(n), kThreads, 0, stream>>>(x, halo, w, dy, B, T, C, K, dzBuf.as<float>());
    dz = dzBuf.as<float>();
  }
  const int64_t nOut = static_cast<int64_t>(B) * (T + K - 1) * C;
  convDxKernel<<<blocksFor(nOut), kThreads, 0, stream>>>(w, dz, B, T, C, K, dx, dhalo);
  const int chunks = static_cast<int>(std::min<int64_t>((R + 127) / 128, 256));
  const int64_t rowsPer = (R + chunks - 1) / chunks;
  const int64_t KC = static_cast<int64_t>(K) * C;
  Scratch part(static_cast<size_t>(chunks) * KC * sizeof(double), stream);
  if (part.err != cudaSuccess) return part.err;
  convDwPartKernel<<<dim3((C + 31) / 32, K, chunks), dim3(32, 8), 0, stream>>>(x, halo, dz, B, T, C, K, rowsPer, part.as<double>());
  sumPartsKernel<<<blocksFor(KC), kThreads, 0, stream>>>(part.as<double>(), chunks, KC, dw);
  return launched();
}

cudaError_t adamW(float* params, const float* grads, float* m, float* v, int64_t n, float lr, float beta1, float beta2, float eps,
                  float weightDecay, int64_t step, cudaStream_t stream) {
  if (n < 0 || step < 1) return cudaErrorInvalidValue;
  // As lasp::adamw_step: the corrections in double, rounded to float once.
  const double t = static_cast<double>(step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), t);
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), t);
  const float decay = static_cast<float>(1.0 - static_cast<double>(lr) * weightDecay);
  const float stepSize = static_cast<float>(lr / bc1);
  const float invSqrtBc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  if (n > 0) adamWKernel<<<blocksFor(n), kThreads, 0, stream>>>(params, grads, m, v, n, beta1, beta2, eps, decay, stepSize, invSqrtBc2);
  return launched();
}

namespace {

cudaError_t sumSquaresImpl(int count, const float* const* xs, const int64_t* ns, bool takeSqrt, double* out, cudaStream_t stream) {
  if (count < 0) return cudaErrorInvalidValue;
  constexpr int64_t kPerBlock = kThreads * 8;
  int64_t total = 0;
  for (int i = 0; i < count; i++) {
    if (ns[i] < 0) return cudaErrorInvalidValue;
    total += std::min<int64_t>((ns[i] + kPerBlock - 1) / kPerBlock, 1024);
  }
  Scratch part(static_cast<size_t>(total) * sizeof(double), stream);
  if (part.err != cudaSuccess) return part.err;
  int64_t at = 0;
  for (int i = 0; i < count; i++) {
    const int64_t blocks = std::min<int64_t>((ns[i] + kPerBlock - 1) / kPerBlock, 1024);
    if (blocks == 0) continue;
    ssPartKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(xs[i], ns[i], part.as<double>() + at);
    at += blocks;
  }
  ssFinalKernel<<<1, 1024, 0, stream>>>(part.as<double>(), total, takeSqrt, out);
  return launched();
}

}  // namespace

cudaError_t sumSquares(int count, const float* const* xs, const int64_t* ns, double* out, cudaStream_t stream) {
  return sumSquaresImpl(count, xs, ns, false, out, stream);
}

cudaError_t gradNorm(int count, const float* const* xs, const int64_t* ns, double* out, cudaStream_t stream) {
  return sumSquaresImpl(count, xs, ns, true, out, stream);
}

}  // namespace lasp_cuda_ops
