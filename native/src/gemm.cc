// Blocked single-precision GEMM with run-time instruction-set dispatch.
//
// Structure (Goto/BLIS style, row-major C):
//
//   for jc in N step NC             B block op(B)[pc:pc+kc, jc:jc+nc] (≤ KC × NC)     → L3
//     for pc in K step KC           (rank-kc updates; the first applies beta, later ones add)
//       pack B block into NR-wide micro-panels (kc × NR each, k-major, zero-padded on the right)
//       for ic in M step MC         A block op(A)[ic:ic+mc, pc:pc+kc] (≤ MC × KC)      → L2
//         optionally pack A block into MR-tall micro-panels (kc × MR each, k-major)
//         for jr in nc step NR      B micro-panel (kc × NR)                            → L1
//           for ir in mc step MR
//             micro-kernel: MR × NR register tile of C (+)= A micro-panel · B micro-panel
//
// The micro-kernel reads A through two strides (row stride rsa, k stride csa), so it runs on a
// packed A panel (rsa = 1, csa = MR) or straight on the caller's A (op(A) rows or columns).
// Small, cache-resident products (the common case inside the attention kernels) skip packing A:
// only B is copied, into a thread_local buffer, which keeps per-call overhead to one pass over B.
// Large products pack A too, so the hot loop streams contiguous, TLB-friendly memory.
//
// The micro-kernel is a template on the tile height (1..MR rows) and width (in vectors), so edge
// tiles run the same fully unrolled code with fewer accumulators. Columns past N inside the last
// vector are computed on zero padding and dropped by masked stores; C is only read when beta != 0.
//
// Instruction sets: AVX-512F (8×32 tile, 16 zmm accumulators), AVX2+FMA (6×16 tile, 12 ymm
// accumulators) and portable C++ (4×8). The kernels carry __attribute__((target)) so the build
// needs no -march flag; the choice is made once from __builtin_cpu_supports, and LASP_GEMM_ISA
// (generic|avx2|avx512) may force a lower path for testing.
//
// sgemm_mt runs the same loops, spread over lasp::parallel_for: per column block, the threads
// pack a group of consecutive B blocks together into one shared buffer, then each task takes a
// tile of C (a row block of about MC rows, split by columns too when rows are scarce), packs its
// own A rows and runs the group's rank-kc updates on it. Scratch buffers are thread_local;
// nothing else is shared or mutable.
#include "gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "threadpool.h"

namespace lasp {
namespace {

using idx = std::ptrdiff_t;

// Cache blocking, shared by every instruction set.
constexpr int KC = 256;   // depth of one rank-kc update: kc × NR B micro-panel stays in L1
constexpr int MC = 144;   // rows of the A block (MC × KC floats = 144 KiB) kept in L2
constexpr int NC = 2048;  // columns of the packed B block (KC × NC floats = 2 MiB), L3-resident

// op(X)[r][c] = p[r * rs + c * cs]: covers X and X^T of a row-major matrix.
struct View {
  const float* p;
  idx rs, cs;
  const float* at(idx r, idx c) const { return p + r * rs + c * cs; }
};

// ---------------------------------------------------------------------------------------------
// Scratch: 64-byte aligned, grow-only, one per thread and role (A block, B block).

class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { release(); }

  float* get(std::size_t n) {
    if (n > cap_) {
      release();
      p_ = static_cast<float*>(::operator new(n * sizeof(float), std::align_val_t(64)));
      cap_ = n;
    }
    return p_;
  }

 private:
  void release() {
    if (p_) ::operator delete(p_, std::align_val_t(64));
    p_ = nullptr;
    cap_ = 0;
  }
  float* p_ = nullptr;
  std::size_t cap_ = 0;
};

thread_local Scratch tls_a;
thread_local Scratch tls_b;

// ---------------------------------------------------------------------------------------------
// Packing. A micro-panel is kc × W floats, k-major: dst[p * W + j] = X[p][j] for j < w, 0 for
// w <= j < W, where X[p][j] = src[p * sk + j * sw]. B panels use W = NR (X = op(B) block), A
// panels use W = MR (X = op(A) block transposed: sk = A's k stride, sw = A's row stride).

template <int W>
void pack_panel(const float* src, idx sk, idx sw, int kc, int w, float* dst) {
  if (sw == 1) {  // rows of the panel are contiguous in memory
    if (w == W) {
      for (int p = 0; p < kc; ++p) std::memcpy(dst + p * W, src + p * sk, W * sizeof(float));
    } else {
      for (int p = 0; p < kc; ++p) {
        const float* s = src + p * sk;
        float* d = dst + p * W;
        for (int j = 0; j < w; ++j) d[j] = s[j];
        for (int j = w; j < W; ++j) d[j] = 0.f;
      }
    }
    return;
  }
  // Strided rows (a transpose when sk == 1): walk each source column contiguously. Blocks of
  // 8 k-steps keep the W destination lines of a block hot while the columns are read.
  for (int p0 = 0; p0 < kc; p0 += 8) {
    const int pe = std::min(kc, p0 + 8);
    for (int j = 0; j < w; ++j) {
      const float* s = src + j * sw;
      for (int p = p0; p < pe; ++p) dst[p * W + j] = s[p * sk];
    }
    for (int p = p0; p < pe; ++p)
      for (int j = w; j < W; ++j) dst[p * W + j] = 0.f;
  }
}

// AVX2 packing for panels whose source rows are strided and whose columns are contiguous
// (sk == 1, i.e. op(X) is a transposed view): 8 × 8 blocks are transposed in registers. Used by
// the AVX2 and AVX-512 paths for any W that is a multiple of 8; the rest goes to pack_panel.
__attribute__((target("avx2"))) inline void transpose8x8_store(const float* s, idx sw, float* d,
                                                                idx dstride) {
  __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + sw);
  __m256 r2 = _mm256_loadu_ps(s + 2 * sw), r3 = _mm256_loadu_ps(s + 3 * sw);
  __m256 r4 = _mm256_loadu_ps(s + 4 * sw), r5 = _mm256_loadu_ps(s + 5 * sw);
  __m256 r6 = _mm256_loadu_ps(s + 6 * sw), r7 = _mm256_loadu_ps(s + 7 * sw);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  r0 = _mm256_shuffle_ps(t0, t2, 0x44);
  r1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  r2 = _mm256_shuffle_ps(t1, t3, 0x44);
  r3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  r4 = _mm256_shuffle_ps(t4, t6, 0x44);
  r5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  r6 = _mm256_shuffle_ps(t5, t7, 0x44);
  r7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_store_ps(d, _mm256_permute2f128_ps(r0, r4, 0x20));
  _mm256_store_ps(d + dstride, _mm256_permute2f128_ps(r1, r5, 0x20));
  _mm256_store_ps(d + 2 * dstride, _mm256_permute2f128_ps(r2, r6, 0x20));
  _mm256_store_ps(d + 3 * dstride, _mm256_permute2f128_ps(r3, r7, 0x20));
  _mm256_store_ps(d + 4 * dstride, _mm256_permute2f128_ps(r0, r4, 0x31));
  _mm256_store_ps(d + 5 * dstride, _mm256_permute2f128_ps(r1, r5, 0x31));
  _mm256_store_ps(d + 6 * dstride, _mm256_permute2f128_ps(r2, r6, 0x31));
  _mm256_store_ps(d + 7 * dstride, _mm256_permute2f128_ps(r3, r7, 0x31));
}

template <int W>
__attribute__((target("avx2"))) void pack_panel_avx2(const float* src, idx sk, idx sw, int kc,
                                                     int w, float* dst) {
  static_assert(W % 8 == 0, "8x8 transposes need W to be a multiple of 8");
  const int kc8 = kc / 8 * 8, w8 = w / 8 * 8;
  if (sk != 1 || w8 == 0) return pack_panel<W>(src, sk, sw, kc, w, dst);
  for (int p = 0; p < kc8; p += 8)
    for (int j = 0; j < w8; j += 8) transpose8x8_store(src + j * sw + p, sw, dst + p * W + j, W);
  // Left-over columns (w8 <= j < W, zero past w) for the 8-aligned rows, then left-over rows.
  if (w8 < W) {
    for (int p = 0; p < kc8; ++p) {
      for (int j = w8; j < w; ++j) dst[p * W + j] = src[j * sw + p];
      for (int j = w; j < W; ++j) dst[p * W + j] = 0.f;
    }
  }
  if (kc8 < kc) pack_panel<W>(src + kc8, sk, sw, kc - kc8, w, dst + kc8 * W);
}

// ---------------------------------------------------------------------------------------------
// Micro-kernels. tile<M, NV>(n, k, a, rsa, csa, b, c, ldc, alpha, beta):
//   C[0:M, 0:n] = alpha · Σ_p a[i*rsa + p*csa] · b[p*NR + j] + beta · C   (beta == 0: C not read)
// with b a packed kc × NR micro-panel, M <= MR rows, NV vectors covering the n <= NV·VL columns.

using PackFn = void (*)(const float* src, idx sk, idx sw, int kc, int w, float* dst);
using TileFn = void (*)(int n, int k, const float* a, idx rsa, idx csa, const float* b, float* c,
                        idx ldc, float alpha, float beta);

// Table of tile<1..MR, 1..NV> for an instruction set; tile(m, nv) picks the instantiation.
template <template <int, int> class Tile, int MR, int NVMAX>
struct TileTable {
  TileFn fn[MR][NVMAX];
  constexpr TileTable() : fn() { fill<1, 1>(); }

 private:
  template <int M, int NV>
  constexpr void fill() {
    fn[M - 1][NV - 1] = &Tile<M, NV>::run;
    if constexpr (NV < NVMAX) {
      fill<M, NV + 1>();
    } else if constexpr (M < MR) {
      fill<M + 1, 1>();
    }
  }
};

// ---- Portable C++ (4 × 8) ----

struct Generic {
  static constexpr int MR = 4, VL = 8, NVMAX = 1, NR = 8;
  static constexpr PackFn pack_a = &pack_panel<MR>, pack_b = &pack_panel<NR>;

  template <int M, int NV>
  struct Tile {
    static void run(int n, int k, const float* a, idx rsa, idx csa, const float* b, float* c,
                    idx ldc, float alpha, float beta) {
      float acc[M][NR] = {};
      for (int p = 0; p < k; ++p, a += csa, b += NR) {
        for (int i = 0; i < M; ++i) {
          const float ai = a[i * rsa];
          for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
        }
      }
      for (int i = 0; i < M; ++i) {
        float* ci = c + i * ldc;
        if (beta == 0.f) {
          for (int j = 0; j < n; ++j) ci[j] = alpha * acc[i][j];
        } else {
          for (int j = 0; j < n; ++j) ci[j] = alpha * acc[i][j] + beta * ci[j];
        }
      }
    }
  };
};

// ---- AVX2 + FMA (6 × 16: 12 ymm accumulators, 2 B loads + 6 A broadcasts per k) ----

alignas(32) constexpr int32_t kLaneMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                               0,  0,  0,  0,  0,  0,  0,  0};

struct Avx2 {
  static constexpr int MR = 6, VL = 8, NVMAX = 2, NR = VL * NVMAX;
  static constexpr PackFn pack_a = &pack_panel<MR>, pack_b = &pack_panel_avx2<NR>;

  template <int M, int NV>
  struct Tile {
    __attribute__((target("avx2,fma"))) static void run(int n, int k, const float* a, idx rsa,
                                                         idx csa, const float* b, float* c,
                                                         idx ldc, float alpha, float beta) {
      __m256 acc[M][NV];
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_ps();
      if (beta != 0.f) {  // C is needed only after the k loop: start fetching it now
#pragma GCC unroll 8
        for (int i = 0; i < M; ++i) {
          _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + n - 1), _MM_HINT_T0);
        }
      }

#pragma GCC unroll 2
      for (int p = 0; p < k; ++p, a += csa, b += NR) {
        __m256 bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) bv[v] = _mm256_load_ps(b + v * VL);
#pragma GCC unroll 8
        for (int i = 0; i < M; ++i) {
          const __m256 ai = _mm256_broadcast_ss(a + i * rsa);
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
        }
      }

      const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
      const int tail = n - (NV - 1) * VL;  // columns in the last vector, 1..VL
      const __m256i mask =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kLaneMask + VL - tail));
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i) {
        float* ci = c + i * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          __m256 r = _mm256_mul_ps(acc[i][v], va);
          if (v < NV - 1 || tail == VL) {
            if (beta != 0.f) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + v * VL), r);
            _mm256_storeu_ps(ci + v * VL, r);
          } else {
            if (beta != 0.f) r = _mm256_fmadd_ps(vb, _mm256_maskload_ps(ci + v * VL, mask), r);
            _mm256_maskstore_ps(ci + v * VL, mask, r);
          }
        }
      }
    }
  };
};

// ---- AVX-512F (8 × 32: 16 zmm accumulators, 2 B loads + 8 A broadcasts per k) ----

struct Avx512 {
  static constexpr int MR = 8, VL = 16, NVMAX = 2, NR = VL * NVMAX;
  static constexpr PackFn pack_a = &pack_panel_avx2<MR>, pack_b = &pack_panel_avx2<NR>;

  template <int M, int NV>
  struct Tile {
    __attribute__((target("avx512f"))) static void run(int n, int k, const float* a, idx rsa,
                                                       idx csa, const float* b, float* c,
                                                       idx ldc, float alpha, float beta) {
      __m512 acc[M][NV];
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
      if (beta != 0.f) {  // C is needed only after the k loop: start fetching it now
#pragma GCC unroll 8
        for (int i = 0; i < M; ++i) {
          _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + n - 1), _MM_HINT_T0);
        }
      }

#pragma GCC unroll 2
      for (int p = 0; p < k; ++p, a += csa, b += NR) {
        __m512 bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + v * VL);
#pragma GCC unroll 8
        for (int i = 0; i < M; ++i) {
          const __m512 ai = _mm512_set1_ps(a[i * rsa]);
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
      }

      const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
      const int tail = n - (NV - 1) * VL;  // columns in the last vector, 1..VL
      const __mmask16 mask = static_cast<__mmask16>((1u << tail) - 1u);
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i) {
        float* ci = c + i * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          __m512 r = _mm512_mul_ps(acc[i][v], va);
          if (v < NV - 1 || tail == VL) {
            if (beta != 0.f) r = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + v * VL), r);
            _mm512_storeu_ps(ci + v * VL, r);
          } else {
            if (beta != 0.f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask, ci + v * VL), r);
            _mm512_mask_storeu_ps(ci + v * VL, mask, r);
          }
        }
      }
    }
  };
};

// ---------------------------------------------------------------------------------------------
// Blocked driver, in two pieces so that sgemm_mt can share one packed B block among threads.

// Packs NR-wide micro-panels [j0, j1) (column offsets, multiples of NR) of the kc × nc block
// op(B)[pc:pc+kc, jc:jc+nc] into buf, panel jr at buf + jr · kc.
template <class ISA>
void pack_b_block(View B, int pc, int kc, int jc, int nc, int j0, int j1, float* buf) {
  for (int jr = j0; jr < j1; jr += ISA::NR)
    ISA::pack_b(B.at(pc, jc + jr), B.rs, B.cs, kc, std::min(ISA::NR, nc - jr),
                buf + static_cast<idx>(jr) * kc);
}

// C[i0:i1, jc+j0 : jc+j1] (+)= alpha · op(A)[i0:i1, pc:pc+kc] · (packed B block panels [j0, j1)),
// with C scaled by bt first (bt == 0: C not read). A is packed per MC-row block into tls_a when
// pack_a is set, else read in place. j0 is a multiple of NR; j1 is one too, or the block's nc.
template <class ISA>
void macro_block(View A, const float* bbuf, int pc, int kc, int jc, int j0, int j1, int i0,
                 int i1, float alpha, float bt, float* C, idx ldc, bool pack_a) {
  constexpr int MR = ISA::MR, NR = ISA::NR, VL = ISA::VL;
  constexpr int MCb = MC / MR * MR;
  static constexpr TileTable<ISA::template Tile, MR, ISA::NVMAX> table;
  float* abuf = pack_a ? tls_a.get(static_cast<std::size_t>(kc) * MCb) : nullptr;

  for (int ic = i0; ic < i1; ic += MCb) {
    const int mc = std::min(MCb, i1 - ic);
    if (pack_a) {
      for (int ir = 0; ir < mc; ir += MR)
        ISA::pack_a(A.at(ic + ir, pc), A.cs, A.rs, kc, std::min(MR, mc - ir),
                    abuf + static_cast<idx>(ir) * kc);
    }
    for (int jr = j0; jr < j1; jr += NR) {
      const int nr = std::min(NR, j1 - jr);
      const int nv = (nr + VL - 1) / VL;
      const float* bp = bbuf + static_cast<idx>(jr) * kc;
      for (int ir = 0; ir < mc; ir += MR) {
        const int mr = std::min(MR, mc - ir);
        float* cp = C + (ic + ir) * ldc + jc + jr;
        const TileFn fn = table.fn[mr - 1][nv - 1];
        if (pack_a)
          fn(nr, kc, abuf + static_cast<idx>(ir) * kc, 1, MR, bp, cp, ldc, alpha, bt);
        else
          fn(nr, kc, A.at(ic + ir, pc), A.rs, A.cs, bp, cp, ldc, alpha, bt);
      }
    }
  }
}

// Pack A unless the op(A) rows of one rank-kc update are few enough to stay cache-resident.
bool should_pack_a(int M, int K) { return static_cast<idx>(M) * std::min(K, KC) > 128 * 128; }

// Single-threaded product. Requires M, N, K >= 1.
template <class ISA>
void gemm_st(View A, View B, int M, int N, int K, float alpha, float beta, float* C, idx ldc) {
  constexpr int NR = ISA::NR;
  const bool pack_a = should_pack_a(M, K);
  const int nc_max = (std::min(N, NC) + NR - 1) / NR * NR;
  float* bbuf = tls_b.get(static_cast<std::size_t>(std::min(K, KC)) * nc_max);
  for (int jc = 0; jc < N; jc += NC) {
    const int nc = std::min(NC, N - jc);
    for (int pc = 0; pc < K; pc += KC) {
      const int kc = std::min(KC, K - pc);
      pack_b_block<ISA>(B, pc, kc, jc, nc, 0, nc, bbuf);
      macro_block<ISA>(A, bbuf, pc, kc, jc, 0, nc, 0, M, alpha, pc == 0 ? beta : 1.f, C, ldc,
                       pack_a);
    }
  }
}

// Multi-threaded product. Requires M, N, K >= 1. Per column block jc, the K range is taken in
// groups of consecutive KC steps whose packed B fits in MT_B_FLOATS. For each group the threads
// first pack its B blocks together (split by KC step and micro-panel range), then compute a grid
// of C tasks (row blocks of about MC rows × column chunks); each task runs the group's KC steps
// in order, packing its own A rows. Grouping cuts the number of parallel_for rounds (each one a
// wake-up and a barrier) without growing B past the shared cache. The packed B lives in the
// caller's thread_local buffer; parallel_for returns only when every task is done, so it is
// never overwritten while a task still reads it.
constexpr idx MT_B_FLOATS = idx{1} << 20;  // 4 MiB of packed B per group

template <class ISA>
void gemm_mt(View A, View B, int M, int N, int K, float alpha, float beta, float* C, idx ldc) {
  constexpr int MR = ISA::MR, NR = ISA::NR;
  const int threads = num_threads();
  // Wide products with few rows: split by columns only, into chunks of at least 512 columns
  // (so that re-packing A per chunk stays cheap). Each task then owns its B columns and packs
  // them itself through gemm_st: no shared B, no barriers between packing and computing.
  if (M <= 2 * MC && N >= 2 * threads * 512) {
    const int panels = (N + NR - 1) / NR;
    const int chunks = std::min(4 * threads, N / 512);
    const int tn = (panels + chunks - 1) / chunks * NR;
    parallel_for((N + tn - 1) / tn, [&](int t) {
      const int j0 = t * tn;
      gemm_st<ISA>(A, View{B.at(0, j0), B.rs, B.cs}, M, std::min(tn, N - j0), K, alpha, beta,
                   C + j0, ldc);
    });
    return;
  }

  const int nc_max = (std::min(N, NC) + NR - 1) / NR * NR;
  const idx slot = static_cast<idx>(std::min(K, KC)) * nc_max;  // floats per packed KC step
  const int ksteps = (K + KC - 1) / KC;
  const int group = static_cast<int>(std::max<idx>(1, std::min<idx>(ksteps, MT_B_FLOATS / slot)));
  float* bbuf = tls_b.get(static_cast<std::size_t>(group * slot));

  // Row blocks: about MC rows (a multiple of MR), and a count that is a multiple of the thread
  // count when there are several per thread, so the last round leaves no thread idle.
  int mb = (M + MC - 1) / MC;
  if (mb > threads) mb = (mb + threads - 1) / threads * threads;
  const int tm = ((M + mb - 1) / mb + MR - 1) / MR * MR;
  mb = (M + tm - 1) / tm;

  for (int jc = 0; jc < N; jc += NC) {
    const int nc = std::min(NC, N - jc);
    const int panels = (nc + NR - 1) / NR;
    // Column chunks (multiples of NR) only when the row blocks alone cannot feed the threads.
    const int nb = std::min(panels, std::max(1, (2 * threads + mb - 1) / mb));
    const int tn = (panels + nb - 1) / nb * NR;
    const int nbe = (nc + tn - 1) / tn;
    // B packing: each KC step of the group is split into pt ranges of pper panels.
    const int pt = std::max(1, std::min(panels, threads / group));
    const int pper = (panels + pt - 1) / pt;

    for (int pg = 0; pg < K; pg += group * KC) {
      const int steps = std::min(group, (K - pg + KC - 1) / KC);
      parallel_for(steps * pt, [&](int t) {
        const int pc = pg + (t / pt) * KC, kc = std::min(KC, K - pc);
        const int j0 = (t % pt) * pper * NR, j1 = std::min(nc, j0 + pper * NR);
        if (j0 < j1) pack_b_block<ISA>(B, pc, kc, jc, nc, j0, j1, bbuf + (t / pt) * slot);
      });
      parallel_for(mb * nbe, [&](int t) {
        const int i0 = (t / nbe) * tm, j0 = (t % nbe) * tn;
        for (int s = 0; s < steps; ++s) {
          const int pc = pg + s * KC, kc = std::min(KC, K - pc);
          macro_block<ISA>(A, bbuf + s * slot, pc, kc, jc, j0, std::min(nc, j0 + tn), i0,
                           std::min(M, i0 + tm), alpha, pc == 0 ? beta : 1.f, C, ldc, true);
        }
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch.

using GemmFn = void (*)(View, View, int, int, int, float, float, float*, idx);

struct Isa {
  const char* name;
  GemmFn st, mt;
};

Isa pick_isa() {
  __builtin_cpu_init();
  const bool has512 = __builtin_cpu_supports("avx512f");
  const bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  int level = has512 ? 2 : has2 ? 1 : 0;
  if (const char* env = std::getenv("LASP_GEMM_ISA")) {
    if (std::strcmp(env, "generic") == 0) level = 0;
    if (std::strcmp(env, "avx2") == 0 && has2) level = std::min(level, 1);
  }
  switch (level) {
    case 2: return {"avx512", &gemm_st<Avx512>, &gemm_mt<Avx512>};
    case 1: return {"avx2", &gemm_st<Avx2>, &gemm_mt<Avx2>};
    default: return {"generic", &gemm_st<Generic>, &gemm_mt<Generic>};
  }
}

const Isa& isa() {
  static const Isa chosen = pick_isa();
  return chosen;
}

// C = beta · C over M × N (beta == 0 writes zeros without reading C).
void scale_c(int M, int N, float beta, float* C, idx ldc) {
  for (int i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (beta == 0.f) {
      std::fill(c, c + N, 0.f);
    } else if (beta != 1.f) {
      for (int j = 0; j < N; ++j) c[j] *= beta;
    }
  }
}

View view_a(bool ta, const float* A, int lda) { return ta ? View{A, 1, lda} : View{A, lda, 1}; }
View view_b(bool tb, const float* B, int ldb) { return tb ? View{B, 1, ldb} : View{B, ldb, 1}; }

}  // namespace

void sgemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.f) return scale_c(M, N, beta, C, ldc);
  isa().st(view_a(transA, A, lda), view_b(transB, B, ldb), M, N, K, alpha, beta, C, ldc);
}

void sgemm_mt(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
              const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.f) return scale_c(M, N, beta, C, ldc);
  // Below a few MFLOP the threads' start-up and barriers cost more than they save.
  const bool small = 2.0 * M * N * K < 8e6;
  const GemmFn fn = small || num_threads() <= 1 ? isa().st : isa().mt;
  fn(view_a(transA, A, lda), view_b(transB, B, ldb), M, N, K, alpha, beta, C, ldc);
}

const char* gemm_isa() { return isa().name; }

}  // namespace lasp
