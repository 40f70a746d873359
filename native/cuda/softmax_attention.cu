// Softmax attention in float32 on the GPU (contract: general_attention.h, as the CPU's
// native/src/softmax_attention.h): online softmax forward, FlashAttention-2 style backward.
//
// Forward and dQ: a block of kRows warps owns kRows consecutive query rows of one head (warp w:
// row i0 + w); it walks the key tiles of kKeys keys that any of its rows sees. Scores: lane l
// takes key j0 + l, q·k over dk in pieces of kDB dims staged (transposed, padded) in shared
// memory; the rows' q (and dO) sit in shared memory. The output (or dq) accumulators are in
// registers, lane l holding columns l + 32 r, r < P (P*32 >= max(dk, dv)); the 32 keys' values
// come straight from global memory (coalesced, shared by the block's warps through L1).
// dK/dV: the same with roles swapped, a warp per key row walking the query tiles that see it.
// D_i = dO_i·o_i comes first, from the o the caller passes (as the CPU does).
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "general_attention.h"

namespace lasp_cuda_general {
namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("lasp cuda softmax: ") + what + ": " + cudaGetErrorString(e));
}
void fail(const std::string& what) { throw std::invalid_argument("lasp cuda softmax: " + what); }

constexpr int kRows = 8;   // warps (query or key rows) per block
constexpr int kKeys = 32;  // keys (or queries) per tile
constexpr int kDB = 32;    // dims per staged piece
constexpr int kSmThreads = kRows * 32;

struct SmArgs {
  int Tq, Tk, H, dk, dv;
  long long qOff, window;
  bool causal;
  float scale;
  const float *q, *k, *v, *o, *lse, *dO, *D;
  float *oOut, *lseOut, *dq, *dk_, *dv_;
};

// Keys [first, end) visible to query i.
__device__ __forceinline__ long long key_first(const SmArgs& a, long long i) {
  if (!a.causal || a.window <= 0) return 0;
  const long long f = a.qOff + i - a.window + 1;
  return f > 0 ? f : 0;
}
__device__ __forceinline__ long long key_end(const SmArgs& a, long long i) {
  if (!a.causal) return a.Tk;
  const long long e = a.qOff + i + 1;
  return e < a.Tk ? e : a.Tk;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// rowdot[lane] = sum_d rows[w][d] * X[r0 + lane][d] over d < n, X [*, H, n] (head h), for the
// tile rows r0 + l < rEnd (others: 0). rows: kRows x ld in shared memory; buf: kDB x (kKeys+1).
__device__ __forceinline__ float tile_dots(const float* rows, int ld, const float* X, int H, int h, int n, long long r0,
                                           long long rEnd, float (*buf)[kKeys + 1]) {
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  float acc = 0.f;
  for (int d0 = 0; d0 < n; d0 += kDB) {
    __syncthreads();
    for (int x = tid; x < kDB * kKeys; x += kSmThreads) {
      const int jj = x / kDB, dd = x - jj * kDB;
      const long long r = r0 + jj;
      const int d = d0 + dd;
      buf[dd][jj] = (r < rEnd && d < n) ? X[(static_cast<size_t>(r) * H + h) * n + d] : 0.f;
    }
    __syncthreads();
    const float* row = rows + w * ld + d0;
#pragma unroll 8
    for (int dd = 0; dd < kDB; ++dd) acc += row[dd] * buf[dd][lane];
  }
  return acc;
}

// Loads row i of X [T, H, n] (head h) into rows[w][0..ld) (zeros past n or for i >= T).
__device__ __forceinline__ void load_row(float* rows, int ld, const float* X, int H, int h, int n, long long i, long long T) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  for (int d = lane; d < ld; d += 32) rows[w * ld + d] = (i < T && d < n) ? X[(static_cast<size_t>(i) * H + h) * n + d] : 0.f;
}

template <int P>
__global__ void sm_forward_kernel(SmArgs a) {
  constexpr int LD = P * 32;
  __shared__ float sQ[kRows * LD];
  __shared__ float buf[kDB][kKeys + 1];
  const int h = blockIdx.y, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const long long i0 = static_cast<long long>(blockIdx.x) * kRows;
  const long long i = i0 + w;
  const bool rowOk = i < a.Tq;
  const long long iLast = min(i0 + kRows - 1, static_cast<long long>(a.Tq) - 1);
  load_row(sQ, LD, a.q, a.H, h, a.dk, i, a.Tq);
  const long long kLo = key_first(a, i0), kHi = key_end(a, iLast);
  const long long first = rowOk ? key_first(a, i) : 0, end = rowOk ? key_end(a, i) : 0;
  float m = -INFINITY, l = 0.f, acc[P];
#pragma unroll
  for (int r = 0; r < P; ++r) acc[r] = 0.f;
  for (long long j0 = kLo; j0 < kHi; j0 += kKeys) {
    const float dot = tile_dots(sQ, LD, a.k, a.H, h, a.dk, j0, kHi, buf);
    const long long j = j0 + lane;
    const bool vis = j >= first && j < end;
    const float s = vis ? dot * a.scale : -INFINITY;
    const float mx = warp_max(s);
    const float mNew = fmaxf(m, mx);
    if (mNew == -INFINITY) continue;  // warp-uniform: nothing visible yet
    const float p = vis ? expf(s - mNew) : 0.f;
    const float alpha = expf(m - mNew);  // 0 when m = -inf
    l = l * alpha + warp_sum(p);
    m = mNew;
#pragma unroll
    for (int r = 0; r < P; ++r) acc[r] *= alpha;
    for (int jj = 0; jj < kKeys; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      if (pj == 0.f) continue;  // warp-uniform
      const float* vr = a.v + (static_cast<size_t>(j0 + jj) * a.H + h) * a.dv;
#pragma unroll
      for (int r = 0; r < P; ++r) {
        const int c = lane + 32 * r;
        if (c < a.dv) acc[r] += pj * vr[c];
      }
    }
  }
  if (!rowOk) return;
  float* orow = a.oOut + (static_cast<size_t>(i) * a.H + h) * a.dv;
  const bool none = m == -INFINITY || !(l > 0.f);
  const float inv = none ? 0.f : 1.f / l;
#pragma unroll
  for (int r = 0; r < P; ++r) {
    const int c = lane + 32 * r;
    if (c < a.dv) orow[c] = none ? 0.f : acc[r] * inv;
  }
  if (lane == 0) a.lseOut[static_cast<size_t>(h) * a.Tq + i] = none ? -INFINITY : m + logf(l);
}

// D[h, i] = dO_i · o_i, one warp per (i, h).
__global__ void sm_delta_kernel(SmArgs a, float* D) {
  const long long wid = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (wid >= static_cast<long long>(a.Tq) * a.H) return;
  const long long i = wid / a.H;
  const int h = static_cast<int>(wid % a.H);
  const size_t off = (static_cast<size_t>(i) * a.H + h) * a.dv;
  float s = 0.f;
  for (int c = lane; c < a.dv; c += 32) s += a.dO[off + c] * a.o[off + c];
  s = warp_sum(s);
  if (lane == 0) D[static_cast<size_t>(h) * a.Tq + i] = s;
}

template <int P>
__global__ void sm_dq_kernel(SmArgs a) {
  constexpr int LD = P * 32;
  __shared__ float sQ[kRows * LD];
  __shared__ float sdO[kRows * LD];
  __shared__ float buf[kDB][kKeys + 1];
  const int h = blockIdx.y, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const long long i0 = static_cast<long long>(blockIdx.x) * kRows;
  const long long i = i0 + w;
  const bool rowOk = i < a.Tq;
  const long long iLast = min(i0 + kRows - 1, static_cast<long long>(a.Tq) - 1);
  load_row(sQ, LD, a.q, a.H, h, a.dk, i, a.Tq);
  load_row(sdO, LD, a.dO, a.H, h, a.dv, i, a.Tq);
  const long long kLo = key_first(a, i0), kHi = key_end(a, iLast);
  const long long first = rowOk ? key_first(a, i) : 0, end = rowOk ? key_end(a, i) : 0;
  const float lse = rowOk ? a.lse[static_cast<size_t>(h) * a.Tq + i] : -INFINITY;
  const float Di = rowOk ? a.D[static_cast<size_t>(h) * a.Tq + i] : 0.f;
  const bool live = lse != -INFINITY;
  float acc[P];
#pragma unroll
  for (int r = 0; r < P; ++r) acc[r] = 0.f;
  for (long long j0 = kLo; j0 < kHi; j0 += kKeys) {
    const float dot = tile_dots(sQ, LD, a.k, a.H, h, a.dk, j0, kHi, buf);
    const float dp = tile_dots(sdO, LD, a.v, a.H, h, a.dv, j0, kHi, buf);
    const long long j = j0 + lane;
    const bool vis = live && j >= first && j < end;
    const float p = vis ? expf(dot * a.scale - lse) : 0.f;
    const float ds = p * (dp - Di);
    for (int jj = 0; jj < kKeys; ++jj) {
      const float dsj = __shfl_sync(0xffffffffu, ds, jj);
      if (dsj == 0.f) continue;  // warp-uniform
      const float* kr = a.k + (static_cast<size_t>(j0 + jj) * a.H + h) * a.dk;
#pragma unroll
      for (int r = 0; r < P; ++r) {
        const int c = lane + 32 * r;
        if (c < a.dk) acc[r] += dsj * kr[c];
      }
    }
  }
  if (!rowOk) return;
  float* out = a.dq + (static_cast<size_t>(i) * a.H + h) * a.dk;
#pragma unroll
  for (int r = 0; r < P; ++r) {
    const int c = lane + 32 * r;
    if (c < a.dk) out[c] = a.scale * acc[r];
  }
}

template <int P>
__global__ void sm_dkdv_kernel(SmArgs a) {
  constexpr int LD = P * 32;
  __shared__ float sK[kRows * LD];
  __shared__ float sV[kRows * LD];
  __shared__ float buf[kDB][kKeys + 1];
  const int h = blockIdx.y, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const long long j0 = static_cast<long long>(blockIdx.x) * kRows;
  const long long j = j0 + w;
  const bool keyOk = j < a.Tk;
  const long long jLast = min(j0 + kRows - 1, static_cast<long long>(a.Tk) - 1);
  load_row(sK, LD, a.k, a.H, h, a.dk, j, a.Tk);
  load_row(sV, LD, a.v, a.H, h, a.dv, j, a.Tk);
  // Queries that see any key of the block: [iLo, iHi).
  long long iLo = 0, iHi = a.Tq;
  if (a.causal) {
    iLo = j0 - a.qOff > 0 ? j0 - a.qOff : 0;
    if (a.window > 0) {
      const long long e = jLast + a.window - a.qOff;  // rows i < e see key jLast
      iHi = e < a.Tq ? e : a.Tq;
      if (iHi < 0) iHi = 0;
    }
  }
  float accK[P], accV[P];
#pragma unroll
  for (int r = 0; r < P; ++r) accK[r] = accV[r] = 0.f;
  for (long long q0 = iLo; q0 < iHi; q0 += kKeys) {
    const float dot = tile_dots(sK, LD, a.q, a.H, h, a.dk, q0, iHi, buf);
    const float dp = tile_dots(sV, LD, a.dO, a.H, h, a.dv, q0, iHi, buf);
    const long long i = q0 + lane;
    float p = 0.f, ds = 0.f;
    if (keyOk && i < iHi) {
      const float lse = a.lse[static_cast<size_t>(h) * a.Tq + i];
      if (lse != -INFINITY && j >= key_first(a, i) && j < key_end(a, i)) {
        p = expf(dot * a.scale - lse);
        ds = p * (dp - a.D[static_cast<size_t>(h) * a.Tq + i]);
      }
    }
    for (int ii = 0; ii < kKeys; ++ii) {
      const float pi = __shfl_sync(0xffffffffu, p, ii);
      const float dsi = __shfl_sync(0xffffffffu, ds, ii);
      if (pi == 0.f && dsi == 0.f) continue;  // warp-uniform
      const size_t row = static_cast<size_t>(q0 + ii) * a.H + h;
      const float* dor = a.dO + row * a.dv;
      const float* qr = a.q + row * a.dk;
#pragma unroll
      for (int r = 0; r < P; ++r) {
        const int c = lane + 32 * r;
        if (c < a.dv) accV[r] += pi * dor[c];
        if (c < a.dk) accK[r] += dsi * qr[c];
      }
    }
  }
  if (!keyOk) return;
  float* outK = a.dk_ + (static_cast<size_t>(j) * a.H + h) * a.dk;
  float* outV = a.dv_ + (static_cast<size_t>(j) * a.H + h) * a.dv;
#pragma unroll
  for (int r = 0; r < P; ++r) {
    const int c = lane + 32 * r;
    if (c < a.dk) outK[c] = a.scale * accK[r];
    if (c < a.dv) outV[c] = accV[r];
  }
}

SmArgs sm_args(const SoftmaxProblem& p) {
  if (p.Tq < 1 || p.Tk < 1 || p.H < 1 || p.dk < 1 || p.dv < 1) fail("Tq, Tk, H, dk and dv must be >= 1");
  if (p.dk > kMaxDim || p.dv > kMaxDim) fail("dk and dv must be <= " + std::to_string(kMaxDim));
  if (p.window > 0 && !p.causal) fail("window needs causal attention");
  if (p.qOffset < 0) fail("qOffset must be >= 0");
  if (!p.q || !p.k || !p.v) fail("q, k and v are required");
  SmArgs a{};
  a.Tq = p.Tq;
  a.Tk = p.Tk;
  a.H = p.H;
  a.dk = p.dk;
  a.dv = p.dv;
  a.qOff = p.qOffset;
  a.window = p.window;
  a.causal = p.causal;
  a.scale = p.scale;
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  return a;
}

int per_lane(int dk, int dv) {
  const int d = dk > dv ? dk : dv;
  if (d <= 32) return 1;
  if (d <= 64) return 2;
  if (d <= 128) return 4;
  if (d <= 256) return 8;
  return 16;
}

#define LASP_SM_DISPATCH(KERNEL, GRID, ARGS, ST)                               \
  switch (per_lane(ARGS.dk, ARGS.dv)) {                                        \
    case 1:                                                                    \
      KERNEL<1><<<GRID, kSmThreads, 0, ST>>>(ARGS);                            \
      break;                                                                   \
    case 2:                                                                    \
      KERNEL<2><<<GRID, kSmThreads, 0, ST>>>(ARGS);                            \
      break;                                                                   \
    case 4:                                                                    \
      KERNEL<4><<<GRID, kSmThreads, 0, ST>>>(ARGS);                            \
      break;                                                                   \
    case 8:                                                                    \
      KERNEL<8><<<GRID, kSmThreads, 0, ST>>>(ARGS);                            \
      break;                                                                   \
    default:                                                                   \
      KERNEL<16><<<GRID, kSmThreads, 0, ST>>>(ARGS);                           \
      break;                                                                   \
  }                                                                            \
  ck(cudaGetLastError(), #KERNEL " launch")

}  // namespace

void softmaxForward(const SoftmaxProblem& p, float* o, float* lse, cudaStream_t st) {
  SmArgs a = sm_args(p);
  if (!o || !lse) fail("o and lse are required");
  a.oOut = o;
  a.lseOut = lse;
  const dim3 grid((p.Tq + kRows - 1) / kRows, p.H);
  LASP_SM_DISPATCH(sm_forward_kernel, grid, a, st);
}

void softmaxBackward(const SoftmaxProblem& p, const float* o, const float* lse, const float* dO, float* dq, float* dk,
                     float* dv, cudaStream_t st) {
  SmArgs a = sm_args(p);
  if (!o || !lse || !dO || !dq || !dk || !dv) fail("o, lse, dO, dq, dk and dv are required");
  a.o = o;
  a.lse = lse;
  a.dO = dO;
  a.dq = dq;
  a.dk_ = dk;
  a.dv_ = dv;
  float* D = nullptr;
  ck(cudaMallocAsync(reinterpret_cast<void**>(&D), static_cast<size_t>(p.H) * p.Tq * sizeof(float), st), "cudaMallocAsync");
  a.D = D;
  const long long warps = static_cast<long long>(p.Tq) * p.H;
  sm_delta_kernel<<<static_cast<unsigned>((warps * 32 + 255) / 256), 256, 0, st>>>(a, D);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) {
    const dim3 gq((p.Tq + kRows - 1) / kRows, p.H);
    try {
      LASP_SM_DISPATCH(sm_dq_kernel, gq, a, st);
      const dim3 gk((p.Tk + kRows - 1) / kRows, p.H);
      LASP_SM_DISPATCH(sm_dkdv_kernel, gk, a, st);
    } catch (...) {
      cudaFreeAsync(D, st);
      throw;
    }
  }
  cudaFreeAsync(D, st);
  ck(e, "sm_delta_kernel launch");
}

}  // namespace lasp_cuda_general
