// Device helpers shared by the CUDA linear-attention kernels: element types, block-level GEMMs
// between shared-memory tiles (tensor cores through ldmatrix + mma.sync for bf16, plain FMAs for
// the float32 checking mode), asynchronous tile loads.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

namespace lasp_cuda {

using bf16 = __nv_bfloat16;
constexpr int C = 64;          // tokens per chunk
constexpr int NT = 512;        // threads per block
constexpr int NW = NT / 32;    // warps per block
constexpr int PADF = 4;        // row padding of float32 shared tiles (elements, 16 bytes)

// Row padding (elements) of shared tiles of type E: 16 bytes, which keeps WMMA pointers 32-byte
// aligned for every 16-row/16-column tile offset and spreads rows over the banks.
template <typename E>
struct Pad {
  static constexpr int v = 16 / sizeof(E);
};

__device__ __forceinline__ float tof(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float tof(float x) { return x; }
template <typename E>
__device__ __forceinline__ E fromf(float x);
template <>
__device__ __forceinline__ bf16 fromf<bf16>(float x) { return __float2bfloat16(x); }
template <>
__device__ __forceinline__ float fromf<float>(float x) { return x; }

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }

// Tensor-core building blocks: ldmatrix (plain or transposed) and mma.sync m16n8k16 bf16.
__device__ __forceinline__ void ldsm4(unsigned (&r)[4], const void* p) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void ldsm4t(unsigned (&r)[4], const void* p) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void mma16816(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// A fragment (16×16 at m0, k0) of op(A); AT: A stored [K][M].
template <bool AT>
__device__ __forceinline__ void frag_a(unsigned (&a)[4], const bf16* A, int lda, int m0, int k0, int lane) {
  if (!AT) {
    ldsm4(a, A + (m0 + (lane & 15)) * lda + k0 + (lane >> 4) * 8);
  } else {
    ldsm4t(a, A + (k0 + (lane & 7) + ((lane >> 4) << 3)) * lda + m0 + ((lane >> 3) & 1) * 8);
  }
}
// B fragments of op(B) for k0..k0+15 and two 8-column blocks n0, n0+8: {b[0],b[1]}, {b[2],b[3]}.
// BT: B stored [N][K].
template <bool BT>
__device__ __forceinline__ void frag_b(unsigned (&b)[4], const bf16* B, int ldb, int k0, int n0, int lane) {
  if (BT) {
    ldsm4(b, B + (n0 + (lane & 7) + ((lane >> 4) << 3)) * ldb + k0 + ((lane >> 3) & 1) * 8);
  } else {
    ldsm4t(b, B + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ldb + n0 + (lane >> 4) * 8);
  }
}

// B fragment of op(B) = B (stored [K][N]) for k0..k0+15 and one 8-column block n0.
__device__ __forceinline__ void frag_b8(unsigned (&b)[2], const bf16* B, int ldb, int k0, int n0, int lane) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(B + (k0 + (lane & 15)) * ldb + n0));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(b[0]), "=r"(b[1]) : "r"(s));
}

// A warp's TM×16-row by 16-column output tile: c[i][nb][4] for row block i, column block nb.
template <int TM>
__device__ __forceinline__ void acc_load(float (&c)[TM][2][4], const float* Cm, int ldc, int m0, int n0,
                                         int lane, bool acc) {
  const int g = lane >> 2, t2 = (lane & 3) * 2;
#pragma unroll
  for (int i = 0; i < TM; i++)
#pragma unroll
    for (int nb = 0; nb < 2; nb++) {
      if (acc) {
        const float2 x = *reinterpret_cast<const float2*>(Cm + (m0 + i * 16 + g) * ldc + n0 + nb * 8 + t2);
        const float2 y = *reinterpret_cast<const float2*>(Cm + (m0 + i * 16 + g + 8) * ldc + n0 + nb * 8 + t2);
        c[i][nb][0] = x.x;
        c[i][nb][1] = x.y;
        c[i][nb][2] = y.x;
        c[i][nb][3] = y.y;
      } else {
        c[i][nb][0] = c[i][nb][1] = c[i][nb][2] = c[i][nb][3] = 0.f;
      }
    }
}
template <int TM>
__device__ __forceinline__ void acc_store(const float (&c)[TM][2][4], float* Cm, int ldc, int m0, int n0,
                                          int lane) {
  const int g = lane >> 2, t2 = (lane & 3) * 2;
#pragma unroll
  for (int i = 0; i < TM; i++)
#pragma unroll
    for (int nb = 0; nb < 2; nb++) {
      *reinterpret_cast<float2*>(Cm + (m0 + i * 16 + g) * ldc + n0 + nb * 8 + t2) = make_float2(c[i][nb][0], c[i][nb][1]);
      *reinterpret_cast<float2*>(Cm + (m0 + i * 16 + g + 8) * ldc + n0 + nb * 8 + t2) =
          make_float2(c[i][nb][2], c[i][nb][3]);
    }
}
template <bool AT, bool BT, int TM>
__device__ __forceinline__ void mma_k(float (&c)[TM][2][4], const bf16* A, int lda, const bf16* B, int ldb,
                                      int m0, int n0, int K, int lane) {
#pragma unroll 2
  for (int k = 0; k < K; k += 16) {
    unsigned b[4];
    frag_b<BT>(b, B, ldb, k, n0, lane);
#pragma unroll
    for (int i = 0; i < TM; i++) {
      unsigned a[4];
      frag_a<AT>(a, A, lda, m0 + i * 16, k, lane);
      mma16816(c[i][0], a, b[0], b[1]);
      mma16816(c[i][1], a, b[2], b[3]);
    }
  }
}

// C[M×N] (=, or += with ACC) op(A)[M×K] · op(B)[K×N], all operands in shared memory.
// AT: A is stored [K][M] (so op(A) = A^T); BT: B is stored [N][K]. M, N, K multiples of 16.
// bf16 operands: mma.sync m16n8k16 on the tensor cores, float32 accumulation; a warp computes a
// 32×16 tile when there are enough of them for all warps, else 16×16.
template <bool AT, bool BT, bool ACC>
__device__ __forceinline__ void bgemm(float* Cm, int ldc, const bf16* A, int lda, const bf16* B,
                                      int ldb, int M, int N, int K) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int tn = N >> 4;
  if ((M >> 5) * tn >= NW) {
    for (int t = warp; t < (M >> 5) * tn; t += NW) {
      const int m0 = (t / tn) * 32, n0 = (t % tn) * 16;
      float c[2][2][4];
      acc_load<2>(c, Cm, ldc, m0, n0, lane, ACC);
      mma_k<AT, BT, 2>(c, A, lda, B, ldb, m0, n0, K, lane);
      acc_store<2>(c, Cm, ldc, m0, n0, lane);
    }
  } else {
    for (int t = warp; t < (M >> 4) * tn; t += NW) {
      const int m0 = (t / tn) * 16, n0 = (t % tn) * 16;
      float c[1][2][4];
      acc_load<1>(c, Cm, ldc, m0, n0, lane, ACC);
      mma_k<AT, BT, 1>(c, A, lda, B, ldb, m0, n0, K, lane);
      acc_store<1>(c, Cm, ldc, m0, n0, lane);
    }
  }
}

// C += op(A)·op(B) where C is already initialised (or zeroed), for outputs with fewer 16×16 tiles
// than warps: K is split between warps and the partial sums are added with shared-memory atomics
// (so several calls may accumulate into one C in the same phase; summation order not fixed).
template <bool AT, bool BT>
__device__ __forceinline__ void bgemm_add(float* Cm, int ldc, const bf16* A, int lda, const bf16* B,
                                          int ldb, int M, int N, int K) {
  const int tn = N >> 4, tiles = (M >> 4) * tn;
  if (tiles >= NW) {
    bgemm<AT, BT, true>(Cm, ldc, A, lda, B, ldb, M, N, K);
    return;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int ks = K >> 4, splits = min(NW / tiles, ks), per = (ks + splits - 1) / splits;
  const int t = warp % tiles, sp = warp / tiles;
  if (sp >= splits) return;
  const int k0 = sp * per * 16, k1 = min(K, k0 + per * 16);
  if (k0 >= k1) return;
  const int m0 = (t / tn) * 16, n0 = (t % tn) * 16;
  float c[1][2][4];
  acc_load<1>(c, Cm, ldc, m0, n0, lane, false);
  mma_k<AT, BT, 1>(c, AT ? A + k0 * lda : A + k0, lda, BT ? B + k0 : B + k0 * ldb, ldb, m0, n0, k1 - k0, lane);
  const int g = lane >> 2, t2 = (lane & 3) * 2;
#pragma unroll
  for (int nb = 0; nb < 2; nb++) {
    float* r0 = Cm + (m0 + g) * ldc + n0 + nb * 8 + t2;
    float* r1 = Cm + (m0 + g + 8) * ldc + n0 + nb * 8 + t2;
    atomicAdd(r0, c[0][nb][0]);
    atomicAdd(r0 + 1, c[0][nb][1]);
    atomicAdd(r1, c[0][nb][2]);
    atomicAdd(r1 + 1, c[0][nb][3]);
  }
}

// The float32 checking mode: the same contract with plain FMAs.
template <bool AT, bool BT, bool ACC>
__device__ __forceinline__ void bgemm(float* Cm, int ldc, const float* A, int lda, const float* B,
                                      int ldb, int M, int N, int K) {
  for (int idx = threadIdx.x; idx < M * N; idx += NT) {
    const int m = idx / N, n = idx % N;
    float s = ACC ? Cm[m * ldc + n] : 0.f;
    for (int k = 0; k < K; k++) {
      const float a = AT ? A[k * lda + m] : A[m * lda + k];
      const float b = BT ? B[n * ldb + k] : B[k * ldb + n];
      s = fmaf(a, b, s);
    }
    Cm[m * ldc + n] = s;
  }
}

template <bool AT, bool BT>
__device__ __forceinline__ void bgemm_add(float* Cm, int ldc, const float* A, int lda, const float* B,
                                          int ldb, int M, int N, int K) {
  bgemm<AT, BT, true>(Cm, ldc, A, lda, B, ldb, M, N, K);
}

// Two products into one output: C (=|+=) op(A1)·op(B1) [K1] + op(A2)·op(B2) [K2].
template <bool AT1, bool BT1, bool AT2, bool BT2, bool ACC>
__device__ __forceinline__ void bgemm2(float* Cm, int ldc, const bf16* A1, int lda1, const bf16* B1,
                                       int ldb1, int K1, const bf16* A2, int lda2, const bf16* B2,
                                       int ldb2, int K2, int M, int N) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int tn = N >> 4;
  if ((M >> 5) * tn >= NW) {
    for (int t = warp; t < (M >> 5) * tn; t += NW) {
      const int m0 = (t / tn) * 32, n0 = (t % tn) * 16;
      float c[2][2][4];
      acc_load<2>(c, Cm, ldc, m0, n0, lane, ACC);
      mma_k<AT1, BT1, 2>(c, A1, lda1, B1, ldb1, m0, n0, K1, lane);
      mma_k<AT2, BT2, 2>(c, A2, lda2, B2, ldb2, m0, n0, K2, lane);
      acc_store<2>(c, Cm, ldc, m0, n0, lane);
    }
  } else {
    for (int t = warp; t < (M >> 4) * tn; t += NW) {
      const int m0 = (t / tn) * 16, n0 = (t % tn) * 16;
      float c[1][2][4];
      acc_load<1>(c, Cm, ldc, m0, n0, lane, ACC);
      mma_k<AT1, BT1, 1>(c, A1, lda1, B1, ldb1, m0, n0, K1, lane);
      mma_k<AT2, BT2, 1>(c, A2, lda2, B2, ldb2, m0, n0, K2, lane);
      acc_store<1>(c, Cm, ldc, m0, n0, lane);
    }
  }
}

template <bool AT1, bool BT1, bool AT2, bool BT2, bool ACC>
__device__ __forceinline__ void bgemm2(float* Cm, int ldc, const float* A1, int lda1,
                                       const float* B1, int ldb1, int K1, const float* A2,
                                       int lda2, const float* B2, int ldb2, int K2, int M, int N) {
  for (int idx = threadIdx.x; idx < M * N; idx += NT) {
    const int m = idx / N, n = idx % N;
    float s = ACC ? Cm[m * ldc + n] : 0.f;
    for (int k = 0; k < K1; k++)
      s = fmaf(AT1 ? A1[k * lda1 + m] : A1[m * lda1 + k], BT1 ? B1[n * ldb1 + k] : B1[k * ldb1 + n], s);
    for (int k = 0; k < K2; k++)
      s = fmaf(AT2 ? A2[k * lda2 + m] : A2[m * lda2 + k], BT2 ? B2[n * ldb2 + k] : B2[k * ldb2 + n], s);
    Cm[m * ldc + n] = s;
  }
}

// Sum over the lanes of a warp.
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Rows [t0, t0+R) of a [B,T,H,D] tensor (token t read from T-1-t when rev), columns
// [c0, c0+W), into dst (row stride ld) with cp.async; rows at or beyond T are zero-filled.
template <typename E, int R, int W, int NTH = NT>
__device__ __forceinline__ void load_rows(E* dst, int ld, const E* src, int b, int T, int H, int D,
                                          int h, int t0, bool rev, int c0) {
  constexpr int VEC = 16 / sizeof(E);
  constexpr int PER = W / VEC;
  static_assert(W % VEC == 0, "tile width");
  if constexpr ((R * PER) % NTH == 0 && NTH % PER == 0) {
    // Fast path for a whole tile (every row before T): each thread copies the same 16-byte column
    // of rows r, r + RS, r + 2·RS, …, so one 64-bit address per call and a constant step replace
    // the per-element index arithmetic and bounds branch (which were ~40% of the chain kernel's
    // executed instructions under ncu).
    if (t0 + R <= T) {
      constexpr int N = R * PER / NTH, RS = NTH / PER;
      const int r = static_cast<int>(threadIdx.x) / PER, cv = (static_cast<int>(threadIdx.x) % PER) * VEC;
      const int p = rev ? T - 1 - t0 - r : t0 + r;
      const E* g = src + ((static_cast<int64_t>(b) * T + p) * H + h) * D + c0 + cv;
      const int64_t step = static_cast<int64_t>(rev ? -RS : RS) * H * D;
      E* d = dst + r * ld + cv;
#pragma unroll
      for (int j = 0; j < N; j++) cp_async16(d + j * RS * ld, g + j * step);
      return;
    }
  }
  for (int i = threadIdx.x; i < R * PER; i += NTH) {
    const int r = i / PER, cv = (i % PER) * VEC;
    const int t = t0 + r;
    E* d = dst + r * ld + cv;
    if (t < T) {
      const int p = rev ? T - 1 - t : t;
      cp_async16(d, src + ((static_cast<int64_t>(b) * T + p) * H + h) * D + c0 + cv);
    } else {
      *reinterpret_cast<int4*>(d) = make_int4(0, 0, 0, 0);
    }
  }
}

// A dense [R][W] matrix with row stride lds (elements) into dst (row stride ld), cp.async.
template <typename E, int R, int W>
__device__ __forceinline__ void load_mat(E* dst, int ld, const E* src, int lds) {
  constexpr int VEC = 16 / sizeof(E);
  constexpr int PER = W / VEC;
  for (int i = threadIdx.x; i < R * PER; i += NT) {
    const int r = i / PER, cv = (i % PER) * VEC;
    cp_async16(dst + r * ld + cv, src + static_cast<int64_t>(r) * lds + cv);
  }
}

__device__ __forceinline__ void store8(bf16* d, const float* s, float scale) {
  const float4 x0 = *reinterpret_cast<const float4*>(s), x1 = *reinterpret_cast<const float4*>(s + 4);
  __nv_bfloat162 h[4] = {__floats2bfloat162_rn(x0.x * scale, x0.y * scale), __floats2bfloat162_rn(x0.z * scale, x0.w * scale),
                         __floats2bfloat162_rn(x1.x * scale, x1.y * scale), __floats2bfloat162_rn(x1.z * scale, x1.w * scale)};
  *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(h);
}
__device__ __forceinline__ void store8(float* d, const float* s, float scale) {
  const float4 x0 = *reinterpret_cast<const float4*>(s), x1 = *reinterpret_cast<const float4*>(s + 4);
  *reinterpret_cast<float4*>(d) = make_float4(x0.x * scale, x0.y * scale, x0.z * scale, x0.w * scale);
  *reinterpret_cast<float4*>(d + 4) = make_float4(x1.x * scale, x1.y * scale, x1.z * scale, x1.w * scale);
}

// Store a float32 shared [R][W] tile to rows of a [B,T,H,D] tensor of type O (skipping t >= T),
// 8 elements per thread and store; with ZERO the shared tile is cleared behind the reads.
template <typename O, int R, int W, bool ZERO = false>
__device__ __forceinline__ void store_rows(O* dst, float* src, int ld, int b, int T, int H, int D, int h,
                                           int t0, bool rev, int c0, float scale = 1.f) {
  constexpr int PER = W / 8;
  for (int i = threadIdx.x; i < R * PER; i += NT) {
    const int r = i / PER, c = (i % PER) * 8;
    const int t = t0 + r;
    float* s = src + r * ld + c;
    if (t < T) {
      const int p = rev ? T - 1 - t : t;
      store8(dst + ((static_cast<int64_t>(b) * T + p) * H + h) * D + c0 + c, s, scale);
    }
    if (ZERO) {
      *reinterpret_cast<float4*>(s) = make_float4(0.f, 0.f, 0.f, 0.f);
      *reinterpret_cast<float4*>(s + 4) = make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
}

// Same for an E-typed shared tile (16-byte copies).
template <typename E, int R, int W>
__device__ __forceinline__ void store_rows_e(E* dst, const E* src, int ld, int b, int T, int H,
                                             int D, int h, int t0, int c0) {
  constexpr int VEC = 16 / sizeof(E), PER = W / VEC;
  for (int i = threadIdx.x; i < R * PER; i += NT) {
    const int r = i / PER, c = (i % PER) * VEC;
    const int t = t0 + r;
    if (t >= T) continue;
    *reinterpret_cast<uint4*>(dst + ((static_cast<int64_t>(b) * T + t) * H + h) * D + c0 + c) =
        *reinterpret_cast<const uint4*>(src + r * ld + c);
  }
}

// dst[R][W] (E) = src[R][W] (float32), 4 elements per thread and step.
template <typename E, int R, int W>
__device__ __forceinline__ void cvt_tile(E* dst, int ldd, const float* src, int lds) {
  constexpr int PER = W / 4;
  for (int i = threadIdx.x; i < R * PER; i += NT) {
    const int r = i / PER, c = (i % PER) * 4;
    const float4 x = *reinterpret_cast<const float4*>(src + r * lds + c);
    if constexpr (std::is_same_v<E, float>) {
      *reinterpret_cast<float4*>(dst + r * ldd + c) = x;
    } else {
      __nv_bfloat162 h[2] = {__floats2bfloat162_rn(x.x, x.y), __floats2bfloat162_rn(x.z, x.w)};
      *reinterpret_cast<uint2*>(dst + r * ldd + c) = *reinterpret_cast<const uint2*>(h);
    }
  }
}

}  // namespace lasp_cuda
