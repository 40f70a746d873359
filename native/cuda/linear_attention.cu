// CUDA chunked linear attention: kinds linear, scalar_gate (chain kernels) and delta (WY form).
// Design notes: docs/cuda.md. Every kernel works on one (batch, head) and keeps its chunk tiles
// in shared memory; products between tiles run on the tensor cores (mma.sync bf16, float32
// accumulation) or, in the float32 checking mode, as plain FMAs.
#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "la_common.cuh"
#include "la_cuda.h"

namespace lasp_cuda {

Tuning tuning;

static std::string g_err;
std::string lastError() { return g_err; }

static void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    g_err = std::string(what) + ": " + cudaGetErrorString(e);
    throw std::runtime_error(g_err);
  }
}
#define CK(x) check((x), #x)
#define CKL(name) check(cudaGetLastError(), name)

void* Workspace::get(int slot, size_t bytes) {
  if (bytes == 0) bytes = 16;
  if (size[slot] < bytes) {
    if (ptr[slot]) CK(cudaFree(ptr[slot]));
    ptr[slot] = nullptr;
    CK(cudaMalloc(&ptr[slot], bytes));
    size[slot] = bytes;
  }
  return ptr[slot];
}
Workspace::~Workspace() {
  for (auto* p : ptr)
    if (p) cudaFree(p);
}

enum Slot {
  kUseg = 0, kGseg, kPin, kDG, kW, kU, kP, kX, kH, kVnew, kDH, kDU, kDKp, kDW, kNumSlots
};

static int num_sms() {
  static int n = 0;
  if (!n) {
    int dev = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  }
  return n;
}

static inline int cdiv(int a, int b) { return (a + b - 1) / b; }

// ============================================================================================
// Chain kernel: linear and scalar_gate. One block per (dv tile, sequence segment, batch·head):
//   O = (e^G ⊙ Q) S + ((Q K^T) ⊙ Γ) V;  S ← e^{G_C} S + (e^{G_C − G} ⊙ K)^T V   per chunk.
// With OUT=false it only runs the state recurrence from zero over its segment (the segment's
// end state U and total log decay), which a scan turns into every segment's starting state.
// The backward is three runs of the same kernel (roles swapped, time reversed: docs/cuda.md).
// ============================================================================================
struct ChainArgs {
  const void* q;
  const void* k;
  const void* v;
  int B, T, H, DKd, DVd;
  const float* g;       // [B,T,H] per-token log gates (original time order)
  const float* gconst;  // [H]
  int rev;              // run in reversed time (with the shifted gates of docs/cuda.md)
  int nseg, seglen;
  const float* Pin;  // [B*H, nseg, DK, DV] starting states (OUT) or null (zero)
  float* Useg;       // [B*H, nseg, DK, DV] segment end states from zero (!OUT)
  float* Gseg;       // [B*H, nseg] segment log decays (!OUT)
  void* o;           // [B,T,H,DV] output (OUT)
  const void* dotsrc;  // optional [B,T,H,DV]: dotdst[b,t,h] += dotsign · <o_t, dotsrc_t>
  float* dotdst;
  float dotsign;
};

__device__ __forceinline__ float chain_gate(const ChainArgs& a, int b, int h, int t) {
  if (!a.g && !a.gconst) return 0.f;
  if (t >= a.T) return 0.f;
  int p = t;
  if (a.rev) {
    if (t == 0) return 0.f;
    p = a.T - t;  // the gate of the next token in original order
  }
  return a.g ? a.g[(static_cast<int64_t>(b) * a.T + p) * a.H + h] : a.gconst[h];
}

template <typename E, int DK, int BV, bool OUT>
struct ChainSmem {
  static constexpr int PE = Pad<E>::v;
  static constexpr int LQ = DK + PE, LV = BV + PE, LSF = BV + PADF, LSB = BV + PE;
  static constexpr int LAF = C + PADF, LAB = C + PE, LOF = BV + PADF;
  // q, k, v: two buffers each (the next chunk is loaded while this one is computed).
  static constexpr size_t q = 0;
  static constexpr size_t k = q + (OUT ? 2 * C * LQ * sizeof(E) : 0);
  static constexpr size_t v = k + 2 * C * LQ * sizeof(E);
  static constexpr size_t sf = v + 2 * C * LV * sizeof(E);
  static constexpr size_t sb = sf + DK * LSF * 4;
  static constexpr size_t af = sb + (OUT ? DK * LSB * sizeof(E) : 0);
  static constexpr size_t ab = af + (OUT ? C * LAF * 4 : 0);
  static constexpr size_t of = ab + (OUT ? C * LAB * sizeof(E) : 0);
  static constexpr size_t gl = of + (OUT ? C * LOF * 4 : 0);
  static constexpr size_t gc = gl + C * 4;
  static constexpr size_t total = gc + C * 4;
};

template <typename E, int DK, int BV, bool OUT>
__global__ void __launch_bounds__(NT) chain_kernel(ChainArgs a) {
  using S = ChainSmem<E, DK, BV, OUT>;
  extern __shared__ __align__(128) unsigned char sm[];
  E* const Qs0 = reinterpret_cast<E*>(sm + S::q);
  E* const Ks0 = reinterpret_cast<E*>(sm + S::k);
  E* const Vs0 = reinterpret_cast<E*>(sm + S::v);
  float* Sf = reinterpret_cast<float*>(sm + S::sf);
  E* Sb = reinterpret_cast<E*>(sm + S::sb);
  float* Af = reinterpret_cast<float*>(sm + S::af);
  E* Ab = reinterpret_cast<E*>(sm + S::ab);
  float* Of = reinterpret_cast<float*>(sm + S::of);
  float* gl = reinterpret_cast<float*>(sm + S::gl);
  float* Gc = reinterpret_cast<float*>(sm + S::gc);

  const int tile = blockIdx.x, seg = blockIdx.y, bh = blockIdx.z;
  const int b = bh / a.H, h = bh % a.H, c0 = tile * BV;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const bool gated = a.g || a.gconst;
  const int T = a.T, H = a.H, DVd = a.DVd;
  const bool rev = a.rev;
  const int ts = seg * a.seglen, te = min(T, ts + a.seglen);
  const E* q = static_cast<const E*>(a.q);
  const E* k = static_cast<const E*>(a.k);
  const E* v = static_cast<const E*>(a.v);
  const int64_t sbase = (static_cast<int64_t>(bh) * a.nseg + seg) * DK * DVd;

  for (int i = tid; i < DK * BV; i += NT) {
    const int r = i / BV, c = i % BV;
    const float x = a.Pin ? a.Pin[sbase + r * DVd + c0 + c] : 0.f;
    Sf[r * S::LSF + c] = x;
    if (OUT) Sb[r * S::LSB + c] = fromf<E>(x);
  }
  float gsum = 0.f;
  auto issue = [&](int t0, int buf) {
    if (OUT) load_rows<E, C, DK>(Qs0 + buf * C * S::LQ, S::LQ, q, b, T, H, DK, h, t0, rev, 0);
    load_rows<E, C, DK>(Ks0 + buf * C * S::LQ, S::LQ, k, b, T, H, DK, h, t0, rev, 0);
    load_rows<E, C, BV>(Vs0 + buf * C * S::LV, S::LV, v, b, T, H, DVd, h, t0, rev, c0);
    cp_async_commit();
  };
  if (ts < te) issue(ts, 0);
  for (int t0 = ts, it = 0; t0 < te; t0 += C, it++) {
    const int buf = it & 1;
    E* Qs = Qs0 + buf * C * S::LQ;
    E* Ks = Ks0 + buf * C * S::LQ;
    E* Vs = Vs0 + buf * C * S::LV;
    if (tid < C) gl[tid] = chain_gate(a, b, h, t0 + tid);
    cp_async_wait_all();
    __syncthreads();
    if (t0 + C < te) issue(t0 + C, buf ^ 1);
    if (gated && warp == 0) {
      float x0 = gl[lane], x1 = gl[lane + 32];
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float y0 = __shfl_up_sync(0xffffffffu, x0, o);
        const float y1 = __shfl_up_sync(0xffffffffu, x1, o);
        if (lane >= o) {
          x0 += y0;
          x1 += y1;
        }
      }
      x1 += __shfl_sync(0xffffffffu, x0, 31);
      Gc[lane] = x0;
      Gc[lane + 32] = x1;
    }
    if (OUT) {
      bgemm<false, true, false>(Af, S::LAF, Qs, S::LQ, Ks, S::LQ, C, C, DK);
      bgemm<false, false, false>(Of, S::LOF, Qs, S::LQ, Sb, S::LSB, C, BV, DK);
    }
    __syncthreads();
    const float gC = gated ? Gc[C - 1] : 0.f;
    if (OUT) {
      for (int i = tid; i < C * C; i += NT) {
        const int r = i / C, c = i % C;
        float x = 0.f;
        if (c <= r) {
          x = Af[r * S::LAF + c];
          if (gated) x *= __expf(Gc[r] - Gc[c]);
        }
        Ab[r * S::LAB + c] = fromf<E>(x);
      }
      if (gated)
        for (int i = tid; i < C * BV; i += NT) Of[(i / BV) * S::LOF + i % BV] *= __expf(Gc[i / BV]);
    }
    if (gated) {
      for (int i = tid; i < C * DK; i += NT) {
        const int r = i / DK, c = i % DK;
        Ks[r * S::LQ + c] = fromf<E>(tof(Ks[r * S::LQ + c]) * __expf(gC - Gc[r]));
      }
      const float e = __expf(gC);
      for (int i = tid; i < DK * BV; i += NT) Sf[(i / BV) * S::LSF + i % BV] *= e;
    }
    __syncthreads();
    if (OUT) bgemm<false, false, true>(Of, S::LOF, Ab, S::LAB, Vs, S::LV, C, BV, C);
    bgemm<true, false, true>(Sf, S::LSF, Ks, S::LQ, Vs, S::LV, DK, BV, C);
    __syncthreads();
    if (OUT) {
      store_rows<E, C, BV>(static_cast<E*>(a.o), Of, S::LOF, b, T, H, DVd, h, t0, rev, c0);
      if (a.dotdst) {
        const E* ds = static_cast<const E*>(a.dotsrc);
        for (int r = warp; r < C; r += NW) {
          const int t = t0 + r;
          if (t >= T) continue;
          const int p = rev ? T - 1 - t : t;
          const int64_t row = (static_cast<int64_t>(b) * T + p) * H + h;
          float s = 0.f;
          for (int c = lane; c < BV; c += 32) s += Of[r * S::LOF + c] * tof(ds[row * DVd + c0 + c]);
          s = warp_sum(s);
          if (lane == 0) atomicAdd(&a.dotdst[row], a.dotsign * s);
        }
      }
      for (int i = tid; i < DK * BV; i += NT) {
        const int r = i / BV, c = i % BV;
        Sb[r * S::LSB + c] = fromf<E>(Sf[r * S::LSF + c]);
      }
    }
    gsum += gC;
    __syncthreads();
  }
  if (!OUT) {
    for (int i = tid; i < DK * BV; i += NT) {
      const int r = i / BV, c = i % BV;
      a.Useg[sbase + r * DVd + c0 + c] = Sf[r * S::LSF + c];
    }
    if (tile == 0 && tid == 0) a.Gseg[static_cast<int64_t>(bh) * a.nseg + seg] = gsum;
  }
}

// Segment starting states: P_0 = S0 (read transposed with trans), P_{s+1} = e^{G_s} P_s + U_s;
// fin = P_nseg (times e^{g_0} in reversed runs: that run's end state is then dS0).
__global__ void chain_scan(const float* Useg, const float* Gseg, float* Pout, const float* s0,
                           int trans, float* fin, const float* g, const float* gconst, int rev,
                           int T, int H, int DK, int DV, int nseg) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x, bh = blockIdx.y;
  if (e >= DK * DV) return;
  const int r = e / DV, c = e % DV, b = bh / H, h = bh % H;
  const int64_t n = static_cast<int64_t>(DK) * DV;
  float P = 0.f;
  if (s0) P = trans ? s0[bh * n + c * DK + r] : s0[bh * n + e];
  for (int s = 0; s < nseg; s++) {
    const int64_t i = static_cast<int64_t>(bh) * nseg + s;
    Pout[i * n + e] = P;
    P = __expf(Gseg[i]) * P + Useg[i * n + e];
  }
  if (fin) {
    float sc = 1.f;
    if (rev && (g || gconst)) sc = expf(g ? g[static_cast<int64_t>(b) * T * H + h] : gconst[h]);
    fin[bh * n + e] = P * sc;
  }
}

template <typename E, int DK, int BV, bool OUT>
static void launch_chain_kernel(const ChainArgs& a, int nt, cudaStream_t st) {
  using S = ChainSmem<E, DK, BV, OUT>;
  static bool attr = false;
  if (!attr) {
    CK(cudaFuncSetAttribute(chain_kernel<E, DK, BV, OUT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            static_cast<int>(S::total)));
    attr = true;
  }
  chain_kernel<E, DK, BV, OUT><<<dim3(nt, a.nseg, a.B * a.H), NT, S::total, st>>>(a);
  CKL("chain_kernel");
}

template <typename E, int DK, int BV>
static void chain_run_t(ChainArgs a, const float* s0, int trans, float* fin, Workspace& ws,
                        cudaStream_t st) {
  const int nt = a.DVd / BV, nc = cdiv(a.T, C), BH = a.B * a.H;
  int nseg = tuning.chainSegs > 0 ? tuning.chainSegs : cdiv(2 * num_sms(), BH * nt);
  nseg = std::max(1, std::min(nseg, nc));
  a.seglen = cdiv(nc, nseg) * C;
  a.nseg = cdiv(a.T, a.seglen);
  const size_t n = static_cast<size_t>(BH) * a.nseg * DK * a.DVd;
  a.Useg = static_cast<float*>(ws.get(kUseg, n * 4));
  a.Gseg = static_cast<float*>(ws.get(kGseg, static_cast<size_t>(BH) * a.nseg * 4));
  float* P = static_cast<float*>(ws.get(kPin, n * 4));
  a.Pin = nullptr;
  launch_chain_kernel<E, DK, BV, false>(a, nt, st);
  chain_scan<<<dim3(cdiv(DK * a.DVd, 256), BH), 256, 0, st>>>(a.Useg, a.Gseg, P, s0, trans, fin,
                                                              a.g, a.gconst, a.rev, a.T, a.H, DK,
                                                              a.DVd, a.nseg);
  CKL("chain_scan");
  a.Pin = P;
  launch_chain_kernel<E, DK, BV, true>(a, nt, st);
}

template <typename E>
static void chain_run(const ChainArgs& a, const float* s0, int trans, float* fin, Workspace& ws,
                      cudaStream_t st) {
  const int bv = tuning.chainBV ? tuning.chainBV : 64;
  if (a.DVd % 64 != 0 || (a.DKd != 64 && a.DKd != 128)) throw std::runtime_error("lasp_cuda: dk, dv must be 64 or 128");
  if constexpr (std::is_same_v<E, float>) {
    if (a.DKd != 64) throw std::runtime_error("lasp_cuda: the float32 mode supports d = 64 only");
    chain_run_t<float, 64, 64>(a, s0, trans, fin, ws, st);
  } else {
    if (a.DKd == 64) {
      if (bv == 32) chain_run_t<bf16, 64, 32>(a, s0, trans, fin, ws, st);
      else chain_run_t<bf16, 64, 64>(a, s0, trans, fin, ws, st);
    } else {
      if (bv == 32) chain_run_t<bf16, 128, 32>(a, s0, trans, fin, ws, st);
      else chain_run_t<bf16, 128, 64>(a, s0, trans, fin, ws, st);
    }
  }
}

// dg_m = Σ_{t ≥ m} dG_t with dG_t = q_t·dq_t − k_t·dk_t (already in dG) + [t = T−1] <dS_T, S_T>;
// dgconst[h] += Σ_m dg_m. One block of 1024 threads per (batch, head).
__global__ void gate_grad_kernel(const float* dG, const float* dSf, const float* Sf, float* dg,
                                 float* dgconst, int T, int H, int n) {
  __shared__ float red[32];
  __shared__ float part[1024];
  const int bh = blockIdx.x, b = bh / H, h = bh % H, tid = threadIdx.x;
  float x = 0.f;
  if (dSf && Sf)
    for (int i = tid; i < n; i += 1024) x += dSf[static_cast<int64_t>(bh) * n + i] * Sf[static_cast<int64_t>(bh) * n + i];
  x = warp_sum(x);
  if ((tid & 31) == 0) red[tid >> 5] = x;
  __syncthreads();
  float last = 0.f;
  for (int i = 0; i < 32; i++) last += red[i];
  // Piece of tokens per thread, scanned from the end.
  const int L = (T + 1023) / 1024;
  const int lo = tid * L, hi = min(T, lo + L);
  float s = 0.f;
  for (int t = lo; t < hi; t++) s += dG[(static_cast<int64_t>(b) * T + t) * H + h] + (t == T - 1 ? last : 0.f);
  part[tid] = s;
  __syncthreads();
  if (tid == 0) {
    float acc = 0.f;
    for (int i = 1023; i >= 0; i--) {
      const float p = part[i];
      part[i] = acc;  // sum of the pieces after i
      acc += p;
    }
  }
  __syncthreads();
  float acc = part[tid], tot = 0.f;
  for (int t = hi - 1; t >= lo; t--) {
    acc += dG[(static_cast<int64_t>(b) * T + t) * H + h] + (t == T - 1 ? last : 0.f);
    if (dg) dg[(static_cast<int64_t>(b) * T + t) * H + h] = acc;
    tot += acc;
  }
  if (dgconst) {
    tot = warp_sum(tot);
    if ((tid & 31) == 0) atomicAdd(&dgconst[h], tot);
  }
}

// ============================================================================================
// Delta rule (DeltaNet), WY form. Per chunk: X = (I + strictlyLower(diag(β) K K^T))^{-1},
// W = X (β ⊙ K), U = X (β ⊙ V), P = (Q K^T) ⊙ Mask (chunk-parallel "prep" kernel); then the
// sequential kernel per (dv tile, batch·head): U' = U − W S; O = Q S + P U'; S ← S + K^T U'.
// ============================================================================================
struct DeltaArgs {
  const void* q;
  const void* k;
  const void* v;
  const float* beta;
  int B, T, H, D, nc;
  void* W;  // [B,T,H,D]
  void* U;  // [B,T,H,D]
  void* P;  // [B*H, nc, C, C]
  void* X;  // [B*H, nc, C, C] (kept for the backward) or null
  const float* s0;
  float* sFinal;
  void* o;
  void* h;     // [B*H, nc, D, D] chunk-start states (save) or null
  void* vnew;  // [B,T,H,D] U' (save) or null
  // backward
  const void* dO;
  const float* dSFinal;
  float* dS0;
  void* dh;    // [B*H, nc, D, D] state gradients at chunk ends
  void* dU;    // [B,T,H,D] dU'
  float* dKp;  // [B,T,H,D] partial dK (float32)
  void* dW;    // [B,T,H,D]
  void* dq;
  void* dk;
  void* dv;
  float* dbeta;
};

template <typename E, int D>
struct PrepSmem {
  static constexpr int PE = Pad<E>::v, L = D + PE, LF = C + PADF, LB = C + PE, LA = D + PADF;
  static constexpr size_t k = 0, v = k + C * L * sizeof(E), q = v + C * L * sizeof(E);
  static constexpr size_t f1 = q + C * L * sizeof(E), f2 = f1 + C * LF * 4;
  static constexpr size_t pb = f2 + C * LF * 4, acc = pb + C * LB * sizeof(E);
  static constexpr size_t tmp = acc + C * LA * 4, bet = tmp + 3 * 256 * 4, total = bet + C * 4;
};

template <typename E, int D>
__global__ void __launch_bounds__(NT) delta_prep_kernel(DeltaArgs a) {
  using S = PrepSmem<E, D>;
  extern __shared__ __align__(128) unsigned char sm[];
  E* Ks = reinterpret_cast<E*>(sm + S::k);
  E* Vs = reinterpret_cast<E*>(sm + S::v);
  E* Qs = reinterpret_cast<E*>(sm + S::q);
  float* F1 = reinterpret_cast<float*>(sm + S::f1);
  float* F2 = reinterpret_cast<float*>(sm + S::f2);
  E* Pb = reinterpret_cast<E*>(sm + S::pb);
  float* Acc = reinterpret_cast<float*>(sm + S::acc);
  float* Tmp = reinterpret_cast<float*>(sm + S::tmp);
  float* bet = reinterpret_cast<float*>(sm + S::bet);
  const int c = blockIdx.x, bh = blockIdx.z, b = bh / a.H, h = bh % a.H, tid = threadIdx.x;
  const int T = a.T, H = a.H, t0 = c * C;
  constexpr int LF = S::LF;
  load_rows<E, C, D>(Ks, S::L, static_cast<const E*>(a.k), b, T, H, D, h, t0, false, 0);
  load_rows<E, C, D>(Vs, S::L, static_cast<const E*>(a.v), b, T, H, D, h, t0, false, 0);
  load_rows<E, C, D>(Qs, S::L, static_cast<const E*>(a.q), b, T, H, D, h, t0, false, 0);
  cp_async_commit();
  if (tid < C) bet[tid] = t0 + tid < T ? a.beta[(static_cast<int64_t>(b) * T + t0 + tid) * H + h] : 0.f;
  cp_async_wait_all();
  __syncthreads();
  bgemm<false, true, false>(F1, LF, Ks, S::L, Ks, S::L, C, C, D);
  bgemm<false, true, false>(F2, LF, Qs, S::L, Ks, S::L, C, C, D);
  __syncthreads();
  for (int i = tid; i < C * C; i += NT) {
    const int r = i / C, cc = i % C;
    F1[r * LF + cc] = r > cc ? bet[r] * F1[r * LF + cc] : 0.f;
    Pb[r * S::LB + cc] = fromf<E>(cc <= r ? F2[r * LF + cc] : 0.f);
  }
  __syncthreads();
  const int64_t cbase = (static_cast<int64_t>(bh) * a.nc + c) * C * C;
  E* Pg = static_cast<E*>(a.P) + cbase;
  for (int i = tid; i < C * C; i += NT) Pg[i] = Pb[(i / C) * S::LB + i % C];
  for (int i = tid; i < C * C; i += NT) F2[(i / C) * LF + i % C] = 0.f;
  __syncthreads();
  // X = (I + A)^{-1}, A = F1 strictly lower: the four 16×16 diagonal blocks by substitution
  // (a thread per column), then the blocks below them, block row by block row.
  if (tid < 64) {
    const int blk = tid >> 4, cl = tid & 15, cc = blk * 16 + cl;
    for (int r = cl; r < 16; r++) {
      const int i = blk * 16 + r;
      float x = r == cl ? 1.f : 0.f;
      for (int j = cl; j < r; j++) x -= F1[i * LF + blk * 16 + j] * F2[(blk * 16 + j) * LF + cc];
      F2[i * LF + cc] = x;
    }
  }
  __syncthreads();
  for (int ib = 1; ib < 4; ib++) {
    for (int idx = tid; idx < ib * 256; idx += NT) {
      const int jb = idx >> 8, rr = (idx >> 4) & 15, cc = idx & 15;
      float s = 0.f;
      for (int m = jb * 16; m < ib * 16; m++) s += F1[(ib * 16 + rr) * LF + m] * F2[m * LF + jb * 16 + cc];
      Tmp[idx] = s;
    }
    __syncthreads();
    for (int idx = tid; idx < ib * 256; idx += NT) {
      const int jb = idx >> 8, rr = (idx >> 4) & 15, cc = idx & 15;
      float s = 0.f;
      for (int l = 0; l < 16; l++) s += F2[(ib * 16 + rr) * LF + ib * 16 + l] * Tmp[jb * 256 + l * 16 + cc];
      F2[(ib * 16 + rr) * LF + jb * 16 + cc] = -s;
    }
    __syncthreads();
  }
  for (int i = tid; i < C * C; i += NT) {
    const E x = fromf<E>(F2[(i / C) * LF + i % C]);
    Pb[(i / C) * S::LB + i % C] = x;
    if (a.X) static_cast<E*>(a.X)[cbase + i] = x;
  }
  for (int i = tid; i < C * D; i += NT) {
    const int r = i / D, cc = i % D;
    Ks[r * S::L + cc] = fromf<E>(tof(Ks[r * S::L + cc]) * bet[r]);
    Vs[r * S::L + cc] = fromf<E>(tof(Vs[r * S::L + cc]) * bet[r]);
  }
  __syncthreads();
  bgemm<false, false, false>(Acc, S::LA, Pb, S::LB, Ks, S::L, C, D, C);
  __syncthreads();
  store_rows<E, C, D>(static_cast<E*>(a.W), Acc, S::LA, b, T, H, D, h, t0, false, 0);
  __syncthreads();
  bgemm<false, false, false>(Acc, S::LA, Pb, S::LB, Vs, S::L, C, D, C);
  __syncthreads();
  store_rows<E, C, D>(static_cast<E*>(a.U), Acc, S::LA, b, T, H, D, h, t0, false, 0);
}

template <typename E, int D, int BV>
struct DSeqSmem {
  static constexpr int PE = Pad<E>::v, L = D + PE, LB = C + PE, LV = BV + PE, LVF = BV + PADF;
  // One stage holds a chunk's w, q, k, p, u tiles; two stages (the next chunk loads meanwhile).
  static constexpr size_t w = 0, q = w + C * L * sizeof(E), k = q + C * L * sizeof(E);
  static constexpr size_t p = k + C * L * sizeof(E), u = p + C * LB * sizeof(E);
  static constexpr size_t stage = u + C * LV * sizeof(E);
  static constexpr size_t sf = 2 * stage, sb = sf + D * LVF * 4;
  static constexpr size_t uf = sb + D * LV * sizeof(E), ub = uf + C * LVF * 4;
  static constexpr size_t of = ub + C * LV * sizeof(E), total = of + C * LVF * 4;
};

// Forward sequential pass. With SAVE, also the chunk-start states h and U' for the backward.
template <typename E, int D, int BV, bool SAVE>
__global__ void __launch_bounds__(NT) delta_fwd_kernel(DeltaArgs a) {
  using S = DSeqSmem<E, D, BV>;
  extern __shared__ __align__(128) unsigned char sm[];
  float* Sf = reinterpret_cast<float*>(sm + S::sf);
  E* Sb = reinterpret_cast<E*>(sm + S::sb);
  float* Uf = reinterpret_cast<float*>(sm + S::uf);
  E* Ub = reinterpret_cast<E*>(sm + S::ub);
  float* Of = reinterpret_cast<float*>(sm + S::of);
  const int c0 = blockIdx.x * BV, bh = blockIdx.z, b = bh / a.H, h = bh % a.H, tid = threadIdx.x;
  const int T = a.T, H = a.H;
  const int64_t n = static_cast<int64_t>(D) * D;
  for (int i = tid; i < D * BV; i += NT) {
    const int r = i / BV, c = i % BV;
    const float x = a.s0 ? a.s0[bh * n + r * D + c0 + c] : 0.f;
    Sf[r * S::LVF + c] = x;
    Sb[r * S::LV + c] = fromf<E>(x);
  }
  auto issue = [&](int ch) {
    unsigned char* st = sm + (ch & 1) * S::stage;
    const int t0 = ch * C;
    load_rows<E, C, D>(reinterpret_cast<E*>(st + S::w), S::L, static_cast<const E*>(a.W), b, T, H, D, h, t0, false, 0);
    load_rows<E, C, D>(reinterpret_cast<E*>(st + S::q), S::L, static_cast<const E*>(a.q), b, T, H, D, h, t0, false, 0);
    load_rows<E, C, D>(reinterpret_cast<E*>(st + S::k), S::L, static_cast<const E*>(a.k), b, T, H, D, h, t0, false, 0);
    load_rows<E, C, BV>(reinterpret_cast<E*>(st + S::u), S::LV, static_cast<const E*>(a.U), b, T, H, D, h, t0, false, c0);
    load_mat<E, C, C>(reinterpret_cast<E*>(st + S::p), S::LB,
                      static_cast<const E*>(a.P) + (static_cast<int64_t>(bh) * a.nc + ch) * C * C, C);
    cp_async_commit();
  };
  issue(0);
  __syncthreads();
  for (int ch = 0; ch < a.nc; ch++) {
    const int t0 = ch * C;
    unsigned char* st = sm + (ch & 1) * S::stage;
    E* Ws = reinterpret_cast<E*>(st + S::w);
    E* Qs = reinterpret_cast<E*>(st + S::q);
    E* Ks = reinterpret_cast<E*>(st + S::k);
    E* Pb = reinterpret_cast<E*>(st + S::p);
    E* Us = reinterpret_cast<E*>(st + S::u);
    if (SAVE) {
      E* hg = static_cast<E*>(a.h) + (static_cast<int64_t>(bh) * a.nc + ch) * n;
      for (int i = tid; i < D * BV; i += NT) hg[(i / BV) * D + c0 + i % BV] = Sb[(i / BV) * S::LV + i % BV];
    }
    cp_async_wait_all();
    __syncthreads();
    if (ch + 1 < a.nc) issue(ch + 1);
    bgemm<false, false, false>(Uf, S::LVF, Ws, S::L, Sb, S::LV, C, BV, D);
    bgemm<false, false, false>(Of, S::LVF, Qs, S::L, Sb, S::LV, C, BV, D);
    __syncthreads();
    for (int i = tid; i < C * BV; i += NT) {
      const int r = i / BV, c = i % BV;
      Ub[r * S::LV + c] = fromf<E>(tof(Us[r * S::LV + c]) - Uf[r * S::LVF + c]);
    }
    __syncthreads();
    if (SAVE) store_rows_e<E, C, BV>(static_cast<E*>(a.vnew), Ub, S::LV, b, T, H, D, h, t0, c0);
    bgemm<false, false, true>(Of, S::LVF, Pb, S::LB, Ub, S::LV, C, BV, C);
    bgemm<true, false, true>(Sf, S::LVF, Ks, S::L, Ub, S::LV, D, BV, C);
    __syncthreads();
    store_rows<E, C, BV>(static_cast<E*>(a.o), Of, S::LVF, b, T, H, D, h, t0, false, c0);
    for (int i = tid; i < D * BV; i += NT) Sb[(i / BV) * S::LV + i % BV] = fromf<E>(Sf[(i / BV) * S::LVF + i % BV]);
    __syncthreads();
  }
  if (a.sFinal)
    for (int i = tid; i < D * BV; i += NT) a.sFinal[bh * n + (i / BV) * D + c0 + i % BV] = Sf[(i / BV) * S::LVF + i % BV];
}

// Backward sequential pass, last chunk first: dU' = P^T dO + K dS_end;
// dS_start = dS_end + Q^T dO − W^T dU'. Saves dS_end per chunk (dh) and dU'.
template <typename E, int D, int BV>
__global__ void __launch_bounds__(NT) delta_bwd_seq_kernel(DeltaArgs a) {
  using S = DSeqSmem<E, D, BV>;  // w, q, k, p as in the forward; u ← dO; sf/sb ← dS; uf/ub ← dU'
  extern __shared__ __align__(128) unsigned char sm[];
  float* dSf = reinterpret_cast<float*>(sm + S::sf);
  E* dSb = reinterpret_cast<E*>(sm + S::sb);
  float* dUf = reinterpret_cast<float*>(sm + S::uf);
  E* nUb = reinterpret_cast<E*>(sm + S::ub);
  const int c0 = blockIdx.x * BV, bh = blockIdx.z, b = bh / a.H, h = bh % a.H, tid = threadIdx.x;
  const int T = a.T, H = a.H;
  const int64_t n = static_cast<int64_t>(D) * D;
  for (int i = tid; i < D * BV; i += NT) {
    const int r = i / BV, c = i % BV;
    const float x = a.dSFinal ? a.dSFinal[bh * n + r * D + c0 + c] : 0.f;
    dSf[r * S::LVF + c] = x;
    dSb[r * S::LV + c] = fromf<E>(x);
  }
  auto issue = [&](int ch) {
    unsigned char* st = sm + (ch & 1) * S::stage;
    const int t0 = ch * C;
    load_rows<E, C, D>(reinterpret_cast<E*>(st + S::w), S::L, static_cast<const E*>(a.W), b, T, H, D, h, t0, false, 0);
    load_rows<E, C, D>(reinterpret_cast<E*>(st + S::q), S::L, static_cast<const E*>(a.q), b, T, H, D, h, t0, false, 0);
    load_rows<E, C, D>(reinterpret_cast<E*>(st + S::k), S::L, static_cast<const E*>(a.k), b, T, H, D, h, t0, false, 0);
    load_rows<E, C, BV>(reinterpret_cast<E*>(st + S::u), S::LV, static_cast<const E*>(a.dO), b, T, H, D, h, t0, false, c0);
    load_mat<E, C, C>(reinterpret_cast<E*>(st + S::p), S::LB,
                      static_cast<const E*>(a.P) + (static_cast<int64_t>(bh) * a.nc + ch) * C * C, C);
    cp_async_commit();
  };
  issue(a.nc - 1);
  __syncthreads();
  for (int ch = a.nc - 1; ch >= 0; ch--) {
    const int t0 = ch * C;
    unsigned char* st = sm + (ch & 1) * S::stage;
    E* Ws = reinterpret_cast<E*>(st + S::w);
    E* Qs = reinterpret_cast<E*>(st + S::q);
    E* Ks = reinterpret_cast<E*>(st + S::k);
    E* Pb = reinterpret_cast<E*>(st + S::p);
    E* dOs = reinterpret_cast<E*>(st + S::u);
    {
      E* dhg = static_cast<E*>(a.dh) + (static_cast<int64_t>(bh) * a.nc + ch) * n;
      for (int i = tid; i < D * BV; i += NT) dhg[(i / BV) * D + c0 + i % BV] = dSb[(i / BV) * S::LV + i % BV];
    }
    cp_async_wait_all();
    __syncthreads();
    if (ch > 0) issue(ch - 1);
    bgemm2<true, false, false, false, false>(dUf, S::LVF, Pb, S::LB, dOs, S::LV, C, Ks, S::L, dSb,
                                             S::LV, D, C, BV);
    __syncthreads();
    for (int i = tid; i < C * BV; i += NT) {
      const int r = i / BV, c = i % BV;
      nUb[r * S::LV + c] = fromf<E>(-dUf[r * S::LVF + c]);
    }
    store_rows<E, C, BV>(static_cast<E*>(a.dU), dUf, S::LVF, b, T, H, D, h, t0, false, c0);
    __syncthreads();
    bgemm2<true, false, true, false, true>(dSf, S::LVF, Qs, S::L, dOs, S::LV, C, Ws, S::L, nUb,
                                           S::LV, C, D, BV);
    __syncthreads();
    for (int i = tid; i < D * BV; i += NT) dSb[(i / BV) * S::LV + i % BV] = fromf<E>(dSf[(i / BV) * S::LVF + i % BV]);
    __syncthreads();
  }
  if (a.dS0)
    for (int i = tid; i < D * BV; i += NT) a.dS0[bh * n + (i / BV) * D + c0 + i % BV] = dSf[(i / BV) * S::LVF + i % BV];
}

template <typename E, int D>
struct DB2aSmem {
  static constexpr int PE = Pad<E>::v, L = D + PE, LF = C + PADF, LB = C + PE, LA = D + PADF;
  static constexpr size_t r1sz = std::max(2 * C * L, D * L) * sizeof(E);
  static constexpr size_t r1 = 0, up = r1 + r1sz, k = up + C * L * sizeof(E);
  static constexpr size_t s = k + C * L * sizeof(E), dpf = s + D * L * sizeof(E);
  static constexpr size_t dpb = dpf + C * LF * 4, acc = dpb + C * LB * sizeof(E);
  static constexpr size_t total = acc + C * LA * 4;
};

// Chunk-parallel: dQ = dO S^T + dP K (dP = (dO U'^T) ⊙ Mask), dK_partial = dP^T Q + U' dS_end^T,
// dW = −dU' S^T.
template <typename E, int D>
__global__ void __launch_bounds__(NT) delta_bwd_a_kernel(DeltaArgs a) {
  using S = DB2aSmem<E, D>;
  extern __shared__ __align__(128) unsigned char sm[];
  E* dOs = reinterpret_cast<E*>(sm + S::r1);
  E* Qs = dOs + C * S::L;
  E* dHs = reinterpret_cast<E*>(sm + S::r1);
  E* Up = reinterpret_cast<E*>(sm + S::up);
  E* Ks = reinterpret_cast<E*>(sm + S::k);
  E* Ss = reinterpret_cast<E*>(sm + S::s);
  float* dPf = reinterpret_cast<float*>(sm + S::dpf);
  E* dPb = reinterpret_cast<E*>(sm + S::dpb);
  float* Acc = reinterpret_cast<float*>(sm + S::acc);
  const int ch = blockIdx.x, bh = blockIdx.z, b = bh / a.H, h = bh % a.H, tid = threadIdx.x;
  const int T = a.T, H = a.H, t0 = ch * C;
  const int64_t n = static_cast<int64_t>(D) * D, cb = (static_cast<int64_t>(bh) * a.nc + ch) * n;
  load_rows<E, C, D>(dOs, S::L, static_cast<const E*>(a.dO), b, T, H, D, h, t0, false, 0);
  load_rows<E, C, D>(Qs, S::L, static_cast<const E*>(a.q), b, T, H, D, h, t0, false, 0);
  load_rows<E, C, D>(Up, S::L, static_cast<const E*>(a.vnew), b, T, H, D, h, t0, false, 0);
  load_rows<E, C, D>(Ks, S::L, static_cast<const E*>(a.k), b, T, H, D, h, t0, false, 0);
  load_mat<E, D, D>(Ss, S::L, static_cast<const E*>(a.h) + cb, D);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  bgemm<false, true, false>(dPf, S::LF, dOs, S::L, Up, S::L, C, C, D);
  __syncthreads();
  for (int i = tid; i < C * C; i += NT) {
    const int r = i / C, c = i % C;
    dPb[r * S::LB + c] = fromf<E>(c <= r ? dPf[r * S::LF + c] : 0.f);
  }
  __syncthreads();
  bgemm2<false, true, false, false, false>(Acc, S::LA, dOs, S::L, Ss, S::L, D, dPb, S::LB, Ks, S::L, C, C, D);
  __syncthreads();
  store_rows<E, C, D>(static_cast<E*>(a.dq), Acc, S::LA, b, T, H, D, h, t0, false, 0);
  __syncthreads();
  bgemm<true, false, false>(Acc, S::LA, dPb, S::LB, Qs, S::L, C, D, C);
  __syncthreads();
  load_mat<E, D, D>(dHs, S::L, static_cast<const E*>(a.dh) + cb, D);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  bgemm<false, true, true>(Acc, S::LA, Up, S::L, dHs, S::L, C, D, D);
  __syncthreads();
  store_rows<float, C, D>(a.dKp, Acc, S::LA, b, T, H, D, h, t0, false, 0);
  load_rows<E, C, D>(Up, S::L, static_cast<const E*>(a.dU), b, T, H, D, h, t0, false, 0);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  bgemm<false, true, false>(Acc, S::LA, Up, S::L, Ss, S::L, C, D, D);
  __syncthreads();
  store_rows<E, C, D>(static_cast<E*>(a.dW), Acc, S::LA, b, T, H, D, h, t0, false, 0, -1.f);
}

template <typename E, int D>
struct DB2bSmem {
  static constexpr int PE = Pad<E>::v, L = D + PE, LF = C + PADF, LB = C + PE, LA = D + PADF;
  static constexpr size_t k = 0, v = k + C * L * sizeof(E), dw = v + C * L * sizeof(E);
  static constexpr size_t du = dw + C * L * sizeof(E), x = du + C * L * sizeof(E);
  static constexpr size_t f1 = x + C * LB * sizeof(E), f2 = f1 + C * LF * 4;
  static constexpr size_t eb = f2 + C * LF * 4, acc = eb + C * LB * sizeof(E);
  static constexpr size_t acc2 = acc + C * LA * 4, bet = acc2 + C * LA * 4;
  static constexpr size_t dbs = bet + C * 4, total = dbs + C * 4;
};

// Chunk-parallel, through the WY transform: dX = (dW K^T + dU V^T) diag(β), dKβ = X^T dW,
// dVβ = X^T dU, dA = −(X^T dX X^T) ⊙ strictlyLower; dK, dV, dβ.
template <typename E, int D>
__global__ void __launch_bounds__(NT) delta_bwd_b_kernel(DeltaArgs a) {
  using S = DB2bSmem<E, D>;
  extern __shared__ __align__(128) unsigned char sm[];
  E* Ks = reinterpret_cast<E*>(sm + S::k);
  E* Vs = reinterpret_cast<E*>(sm + S::v);
  E* dWs = reinterpret_cast<E*>(sm + S::dw);
  E* dUs = reinterpret_cast<E*>(sm + S::du);
  E* Xs = reinterpret_cast<E*>(sm + S::x);
  float* F1 = reinterpret_cast<float*>(sm + S::f1);
  float* F2 = reinterpret_cast<float*>(sm + S::f2);
  E* Eb = reinterpret_cast<E*>(sm + S::eb);
  float* Acc = reinterpret_cast<float*>(sm + S::acc);
  float* Acc2 = reinterpret_cast<float*>(sm + S::acc2);
  float* bet = reinterpret_cast<float*>(sm + S::bet);
  float* dbs = reinterpret_cast<float*>(sm + S::dbs);
  const int ch = blockIdx.x, bh = blockIdx.z, b = bh / a.H, h = bh % a.H, tid = threadIdx.x;
  const int warp = tid >> 5, lane = tid & 31;
  const int T = a.T, H = a.H, t0 = ch * C;
  load_rows<E, C, D>(Ks, S::L, static_cast<const E*>(a.k), b, T, H, D, h, t0, false, 0);
  load_rows<E, C, D>(Vs, S::L, static_cast<const E*>(a.v), b, T, H, D, h, t0, false, 0);
  load_rows<E, C, D>(dWs, S::L, static_cast<const E*>(a.dW), b, T, H, D, h, t0, false, 0);
  load_rows<E, C, D>(dUs, S::L, static_cast<const E*>(a.dU), b, T, H, D, h, t0, false, 0);
  load_mat<E, C, C>(Xs, S::LB, static_cast<const E*>(a.X) + (static_cast<int64_t>(bh) * a.nc + ch) * C * C, C);
  cp_async_commit();
  for (int i = tid; i < C * D; i += NT) {
    const int r = i / D, c = i % D, t = t0 + r;
    Acc2[r * S::LA + c] = t < T ? a.dKp[((static_cast<int64_t>(b) * T + t) * H + h) * D + c] : 0.f;
  }
  if (tid < C) {
    bet[tid] = t0 + tid < T ? a.beta[(static_cast<int64_t>(b) * T + t0 + tid) * H + h] : 0.f;
    dbs[tid] = 0.f;
  }
  cp_async_wait_all();
  __syncthreads();
  bgemm2<false, true, false, true, false>(F1, S::LF, dWs, S::L, Ks, S::L, D, dUs, S::L, Vs, S::L, D, C, C);
  __syncthreads();
  for (int i = tid; i < C * C; i += NT) {
    const int r = i / C, c = i % C;
    Eb[r * S::LB + c] = fromf<E>(F1[r * S::LF + c] * bet[c]);
  }
  __syncthreads();
  bgemm<true, false, false>(Acc, S::LA, Xs, S::LB, dWs, S::L, C, D, C);  // dKβ
  bgemm<true, false, false>(F1, S::LF, Xs, S::LB, Eb, S::LB, C, C, C);   // Y = X^T dX
  __syncthreads();
  for (int r = warp; r < C; r += NW) {
    float s = 0.f;
    for (int c = lane; c < D; c += 32) {
      const float x = Acc[r * S::LA + c];
      s += tof(Ks[r * S::L + c]) * x;
      Acc2[r * S::LA + c] += bet[r] * x;
    }
    s = warp_sum(s);
    if (lane == 0) dbs[r] += s;
  }
  for (int i = tid; i < C * C; i += NT) Eb[(i / C) * S::LB + i % C] = fromf<E>(F1[(i / C) * S::LF + i % C]);
  __syncthreads();
  bgemm<true, false, false>(Acc, S::LA, Xs, S::LB, dUs, S::L, C, D, C);  // dVβ
  bgemm<false, true, false>(F2, S::LF, Eb, S::LB, Xs, S::LB, C, C, C);   // Z = Y X^T
  bgemm<false, true, false>(F1, S::LF, Ks, S::L, Ks, S::L, C, C, D);     // K K^T
  __syncthreads();
  E* dvg = static_cast<E*>(a.dv);
  for (int r = warp; r < C; r += NW) {
    const int t = t0 + r;
    float s = 0.f;
    for (int c = lane; c < D; c += 32) {
      const float x = Acc[r * S::LA + c];
      s += tof(Vs[r * S::L + c]) * x;
      if (t < T) dvg[((static_cast<int64_t>(b) * T + t) * H + h) * D + c] = fromf<E>(bet[r] * x);
    }
    for (int c = lane; c < C; c += 32) {
      const float dA = r > c ? -F2[r * S::LF + c] : 0.f;
      s += dA * F1[r * S::LF + c];
      Eb[r * S::LB + c] = fromf<E>(bet[r] * dA);
    }
    s = warp_sum(s);
    if (lane == 0) dbs[r] += s;
  }
  __syncthreads();
  bgemm2<false, false, true, false, true>(Acc2, S::LA, Eb, S::LB, Ks, S::L, C, Eb, S::LB, Ks, S::L, C, C, D);
  __syncthreads();
  store_rows<E, C, D>(static_cast<E*>(a.dk), Acc2, S::LA, b, T, H, D, h, t0, false, 0);
  if (tid < C && t0 + tid < T) a.dbeta[(static_cast<int64_t>(b) * T + t0 + tid) * H + h] = dbs[tid];
}

template <typename K, size_t SMEM>
static void set_smem(K kernel) {
  CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(SMEM)));
}

template <typename E, int D, int BV>
static void delta_seq_launch(const DeltaArgs& a, bool save, bool bwd, cudaStream_t st) {
  using S = DSeqSmem<E, D, BV>;
  const dim3 grid(D / BV, 1, a.B * a.H);
  if (bwd) {
    set_smem<decltype(&delta_bwd_seq_kernel<E, D, BV>), S::total>(delta_bwd_seq_kernel<E, D, BV>);
    delta_bwd_seq_kernel<E, D, BV><<<grid, NT, S::total, st>>>(a);
  } else if (save) {
    set_smem<decltype(&delta_fwd_kernel<E, D, BV, true>), S::total>(delta_fwd_kernel<E, D, BV, true>);
    delta_fwd_kernel<E, D, BV, true><<<grid, NT, S::total, st>>>(a);
  } else {
    set_smem<decltype(&delta_fwd_kernel<E, D, BV, false>), S::total>(delta_fwd_kernel<E, D, BV, false>);
    delta_fwd_kernel<E, D, BV, false><<<grid, NT, S::total, st>>>(a);
  }
  CKL("delta sequential kernel");
}

template <typename E, int D>
static void delta_seq(const DeltaArgs& a, bool save, bool bwd, cudaStream_t st) {
  const int bv = tuning.deltaBV ? tuning.deltaBV : 16;
  if (bv == 32) delta_seq_launch<E, D, 32>(a, save, bwd, st);
  else delta_seq_launch<E, D, 16>(a, save, bwd, st);
}

template <typename E, int D>
static void delta_forward_t(DeltaArgs a, bool save, cudaStream_t st) {
  const dim3 grid(a.nc, 1, a.B * a.H);
  set_smem<decltype(&delta_prep_kernel<E, D>), PrepSmem<E, D>::total>(delta_prep_kernel<E, D>);
  delta_prep_kernel<E, D><<<grid, NT, PrepSmem<E, D>::total, st>>>(a);
  CKL("delta_prep_kernel");
  delta_seq<E, D>(a, save, false, st);
}

template <typename E, int D>
static void delta_backward_t(const DeltaArgs& a, cudaStream_t st) {
  delta_seq<E, D>(a, false, true, st);
  const dim3 grid(a.nc, 1, a.B * a.H);
  set_smem<decltype(&delta_bwd_a_kernel<E, D>), DB2aSmem<E, D>::total>(delta_bwd_a_kernel<E, D>);
  delta_bwd_a_kernel<E, D><<<grid, NT, DB2aSmem<E, D>::total, st>>>(a);
  CKL("delta_bwd_a_kernel");
  set_smem<decltype(&delta_bwd_b_kernel<E, D>), DB2bSmem<E, D>::total>(delta_bwd_b_kernel<E, D>);
  delta_bwd_b_kernel<E, D><<<grid, NT, DB2bSmem<E, D>::total, st>>>(a);
  CKL("delta_bwd_b_kernel");
}

// ============================================================================================
// Host entry points
// ============================================================================================
static size_t esize(const Problem& p) { return p.prec == Prec::BF16 ? 2 : 4; }

static void validate(const Problem& p) {
  auto ok = [](int d) { return d == 64 || d == 128; };
  if (p.B < 1 || p.T < 1 || p.H < 1) throw std::runtime_error("lasp_cuda: B, T, H must be >= 1");
  if (!ok(p.dk) || !ok(p.dv)) throw std::runtime_error("lasp_cuda: dk and dv must be 64 or 128");
  if (p.prec == Prec::F32 && (p.dk != 64 || p.dv != 64))
    throw std::runtime_error("lasp_cuda: the float32 mode supports dk = dv = 64 only");
  if (p.kind == Kind::Delta && p.dk != p.dv) throw std::runtime_error("lasp_cuda: delta needs dk = dv");
  if (p.kind == Kind::Delta && !p.beta) throw std::runtime_error("lasp_cuda: delta needs beta");
  if (p.kind == Kind::ScalarGate && !p.g && !p.gconst)
    throw std::runtime_error("lasp_cuda: scalar_gate needs g or gconst");
}

static DeltaArgs delta_args(const Problem& p, Workspace& ws, bool save) {
  DeltaArgs a{};
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.beta = p.beta;
  a.B = p.B;
  a.T = p.T;
  a.H = p.H;
  a.D = p.dk;
  a.nc = cdiv(p.T, C);
  const size_t es = esize(p), BH = static_cast<size_t>(p.B) * p.H;
  const size_t rows = static_cast<size_t>(p.B) * p.T * p.H * p.dk;
  const size_t cc = BH * a.nc * C * C, hh = BH * a.nc * p.dk * p.dv;
  a.W = ws.get(kW, rows * es);
  a.U = ws.get(kU, rows * es);
  a.P = ws.get(kP, cc * es);
  a.X = ws.get(kX, cc * es);
  if (save) {
    a.h = ws.get(kH, hh * es);
    a.vnew = ws.get(kVnew, rows * es);
  } else {
    a.h = ws.size[kH] >= hh * es ? ws.ptr[kH] : nullptr;
    a.vnew = ws.size[kVnew] >= rows * es ? ws.ptr[kVnew] : nullptr;
  }
  a.s0 = p.s0;
  return a;
}

void forward(const Problem& p, void* o, float* sFinal, Workspace& ws, bool save, cudaStream_t st) {
  validate(p);
  const bool f32 = p.prec == Prec::F32;
  if (p.kind == Kind::Delta) {
    DeltaArgs a = delta_args(p, ws, save);
    a.o = o;
    a.sFinal = sFinal;
    if (!save) a.X = nullptr;
    if (f32) delta_forward_t<float, 64>(a, save, st);
    else if (p.dk == 64) delta_forward_t<bf16, 64>(a, save, st);
    else delta_forward_t<bf16, 128>(a, save, st);
    return;
  }
  ChainArgs a{};
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.B = p.B;
  a.T = p.T;
  a.H = p.H;
  a.DKd = p.dk;
  a.DVd = p.dv;
  a.g = p.kind == Kind::ScalarGate ? p.g : nullptr;
  a.gconst = p.kind == Kind::ScalarGate && !p.g ? p.gconst : nullptr;
  a.o = o;
  if (f32) chain_run<float>(a, p.s0, 0, sFinal, ws, st);
  else chain_run<bf16>(a, p.s0, 0, sFinal, ws, st);
}

void backward(const Problem& p, const void* dO, const float* dSFinal, const float* sFinal, void* dq,
              void* dk, void* dv, float* dg, float* dgconst, float* dbeta, float* dS0, Workspace& ws,
              cudaStream_t st) {
  validate(p);
  const bool f32 = p.prec == Prec::F32;
  if (p.kind == Kind::Delta) {
    DeltaArgs a = delta_args(p, ws, false);
    if (!a.h || !a.vnew) throw std::runtime_error("lasp_cuda: delta backward needs a forward with save=true");
    const size_t es = esize(p), BH = static_cast<size_t>(p.B) * p.H;
    const size_t rows = static_cast<size_t>(p.B) * p.T * p.H * p.dk;
    a.dO = dO;
    a.dSFinal = dSFinal;
    a.dS0 = dS0;
    a.dh = ws.get(kDH, BH * a.nc * p.dk * p.dv * es);
    a.dU = ws.get(kDU, rows * es);
    a.dKp = static_cast<float*>(ws.get(kDKp, rows * 4));
    a.dW = ws.get(kDW, rows * es);
    a.dq = dq;
    a.dk = dk;
    a.dv = dv;
    a.dbeta = dbeta;
    if (f32) delta_backward_t<float, 64>(a, st);
    else if (p.dk == 64) delta_backward_t<bf16, 64>(a, st);
    else delta_backward_t<bf16, 128>(a, st);
    return;
  }
  const bool gated = p.kind == Kind::ScalarGate;
  const float* g = gated ? p.g : nullptr;
  const float* gc = gated && !p.g ? p.gconst : nullptr;
  float* dG = nullptr;
  const size_t ntok = static_cast<size_t>(p.B) * p.T * p.H;
  if (gated && (dg || dgconst)) {
    dG = static_cast<float*>(ws.get(kDG, ntok * 4));
    CK(cudaMemsetAsync(dG, 0, ntok * 4, st));
    if (dgconst) CK(cudaMemsetAsync(dgconst, 0, p.H * 4, st));
  }
  auto run = [&](const void* q, const void* k, const void* v, int DK, int DV, int rev, void* o,
                 const void* dotsrc, float sign, const float* s0, int trans, float* fin) {
    ChainArgs a{};
    a.q = q;
    a.k = k;
    a.v = v;
    a.B = p.B;
    a.T = p.T;
    a.H = p.H;
    a.DKd = DK;
    a.DVd = DV;
    a.g = g;
    a.gconst = gc;
    a.rev = rev;
    a.o = o;
    a.dotsrc = dG ? dotsrc : nullptr;
    a.dotdst = dG && dotsrc ? dG : nullptr;
    a.dotsign = sign;
    if (f32) chain_run<float>(a, s0, trans, fin, ws, st);
    else chain_run<bf16>(a, s0, trans, fin, ws, st);
  };
  // dQ: roles (dO, V, K), S0ᵀ; dK: (V, dO, Q) reversed, dS_Tᵀ; dV: (K, Q, dO) reversed, dS_T → dS0.
  run(dO, p.v, p.k, p.dv, p.dk, 0, dq, p.q, 1.f, p.s0, 1, nullptr);
  run(p.v, dO, p.q, p.dv, p.dk, 1, dk, p.k, -1.f, dSFinal, 1, nullptr);
  run(p.k, p.q, dO, p.dk, p.dv, 1, dv, nullptr, 0.f, dSFinal, 0, dS0);
  if (dG) {
    gate_grad_kernel<<<p.B * p.H, 1024, 0, st>>>(dG, dSFinal, sFinal, g ? dg : nullptr, dgconst, p.T,
                                                 p.H, p.dk * p.dv);
    CKL("gate_grad_kernel");
  }
}

double forward_flops(const Problem& p) {
  const double n = static_cast<double>(p.B) * p.T * p.H, dk = p.dk, dv = p.dv;
  if (p.kind == Kind::Delta)  // prep: KKᵀ, QKᵀ, W, U; sequential: WS, QS, PU', KᵀU'
    return n * (2 * C * dk * 3 + 2 * C * dv + 2 * C * dv + 3 * 2 * dk * dv);
  return n * (2 * C * dk + 2 * C * dv + 2 * 2 * dk * dv);  // QKᵀ, AV, QS, KᵀV
}

double backward_flops(const Problem& p) {
  const double n = static_cast<double>(p.B) * p.T * p.H, dk = p.dk, dv = p.dv;
  if (p.kind == Kind::Delta)
    return n * (2 * C * dv + 3 * 2 * dk * dv                       // sequential
                + 2 * C * dv + 2 * C * dk * 2 + 3 * 2 * dk * dv     // chunk-parallel a
                + 2 * C * (dk + dv) + 2 * C * dk + 2 * C * dv        // dX, dKβ, dVβ
                + 2 * 2 * C * C + 2 * C * dk + 2 * 2 * C * dk);      // Y, Z, KKᵀ, DK, DᵀK
  // three chain runs: (dO,V,K), (V,dO,Q), (K,Q,dO)
  return n * (2 * C * dv + 2 * C * dk + 4 * dk * dv) * 2 + n * (2 * C * dk + 2 * C * dv + 4 * dk * dv);
}

}  // namespace lasp_cuda
