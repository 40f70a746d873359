// General float32 recurrent kernels for every linear-attention kind (see general_attention.h for
// the contract and DESIGN.md §2 for the math).
//
// Per token t, per dv column j of the state (each column evolves independently):
//   s' = a_t (.) S_{t-1}      a_t = 1 (linear, delta), e^{g_t} (scalar_gate, gated_delta),
//                             e^{g_t} per row (vector_gate)
//   gate kinds:  S_t = s' + k_t v_tj
//   delta kinds: u_tj = v_tj - k_t.s';  S_t = s' + beta_t k_t u_tj
//   o_tj = q_t . S_t
// Backward, walking t downwards with G = dL/dS_t (from later tokens and dSFinal):
//   G += q_t dO_tj;  dq_t += S_t dO_tj (summed over j)
//   gate kinds:  dv_tj = k_t.G;  dk_t += G v_tj;  ds' = G
//   delta kinds: w = k_t.G, du = beta w;  dv_tj = du;  dbeta_t += u_tj w;
//                dk_t += beta u_tj G - du s';  ds' = G - du k_t
//   dg_t += sum(ds' (.) s') (per row for vector_gate);  G = a_t (.) ds'  (= dL/dS_{t-1})
//
// Thread layout: a block of kThreads = 4 warps owns one (sequence b, head h, tile of CB dv
// columns). A group of L lanes (L = 16 for dk <= 16, else 32) owns one column; lane li holds rows
// li + L*m, m < NPT, of that column in registers (dk <= L*NPT). Sums over dk are xor-shuffles
// inside the group. Inputs are staged in shared memory F tokens at a time (F*dkpad <= 1536).
// Sums over columns (dq, dk, dg, dbeta) go into shared accumulators per staged piece with
// shared atomics, then into global memory (plain stores with one dv tile, atomics with several;
// the launcher zeroes the outputs first).
// Backward: the forward keeps S before every kCheckpoint-th token; per chunk (last first) the
// backward reloads it, recomputes the chunk's states forward into a per-thread global scratch
// (hist) and the delta rule's u into shared memory, then walks the chunk's tokens in reverse.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "general_attention.h"

namespace lasp_cuda_general {
namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("lasp cuda general: ") + what + ": " + cudaGetErrorString(e));
}

void fail(const std::string& what) { throw std::invalid_argument("lasp cuda general: " + what); }

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

template <int L, int NPT>
struct Cfg {
  static constexpr int kDKP = L * NPT;     // padded dk
  static constexpr int kCPW = 32 / L;      // columns per warp
  static constexpr int kCB = kWarps * kCPW;  // columns per block
  static constexpr int kF0 = 1536 / kDKP;
  static constexpr int kF = kF0 > 64 ? 64 : (kF0 < 1 ? 1 : kF0);  // tokens per staged piece
};

template <int KIND>
struct KindTraits {
  static constexpr bool kVec = KIND == Kind::kVectorGate;
  static constexpr bool kScal = KIND == Kind::kScalarGate || KIND == Kind::kGatedDelta;
  static constexpr bool kDel = KIND == Kind::kDelta || KIND == Kind::kGatedDelta;
};

// Sum over the aligned group of L lanes (every lane of the warp must call it).
template <int L>
__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
  for (int o = L / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

struct Seq {
  int T, H, dk, dv, b, h;
  __device__ __forceinline__ size_t tok(int t) const { return (static_cast<size_t>(b) * T + t) * H + h; }
};

// Stages tokens [t0, t0+n) of the block's (b, h, column tile) into shared memory. Null sources
// (q, v, dO) leave their arrays untouched (v: zeros are written when vZero).
template <int KIND, int DKP, int CB>
__device__ __forceinline__ void stage(const Seq& s, int tile, int t0, int n, const float* q, const float* k,
                                      const float* g, const float* beta, const float* v, const float* dO, float* sq,
                                      float* sk, float* sa, float* sb, float* sv, float* sdo) {
  using KT = KindTraits<KIND>;
  const int tid = threadIdx.x;
  for (int x = tid; x < n * DKP; x += kThreads) {
    const int c = x / DKP, i = x - c * DKP;
    const bool ok = i < s.dk;
    const size_t r = s.tok(t0 + c) * s.dk + i;
    if (q) sq[x] = ok ? q[r] : 0.f;
    sk[x] = ok ? k[r] : 0.f;
    if constexpr (KT::kVec) sa[x] = ok ? expf(g[r]) : 1.f;
  }
  if constexpr (KT::kScal || KT::kDel) {
    for (int x = tid; x < n; x += kThreads) {
      const size_t r = s.tok(t0 + x);
      if constexpr (KT::kScal) sa[x] = expf(g[r]);
      if constexpr (KT::kDel) sb[x] = beta[r];
    }
  }
  for (int x = tid; x < n * CB; x += kThreads) {
    const int c = x / CB, cc = x - c * CB;
    const int j = tile * CB + cc;
    const bool ok = j < s.dv;
    const size_t r = s.tok(t0 + c) * s.dv + j;
    sv[x] = (v && ok) ? v[r] : 0.f;
    if (dO) sdo[x] = ok ? dO[r] : 0.f;
  }
}

// ---------------------------------------------------------------------------------------------
// Forward

struct FwdArgs {
  int T, H, dk, dv, ntiles, nck;
  const float *q, *k, *v, *g, *beta, *s0;
  float *o, *sfinal, *ckpt;
  bool accumulate;   // o += instead of o =
  bool s0Identity;   // S0 = I (dv must equal dk)
};

template <int KIND, int L, int NPT>
__global__ void fwd_kernel(FwdArgs a) {
  using C = Cfg<L, NPT>;
  using KT = KindTraits<KIND>;
  constexpr int DKP = C::kDKP, F = C::kF, CB = C::kCB;
  __shared__ float sq[F * DKP], sk[F * DKP];
  __shared__ float sa[KT::kVec ? F * DKP : F];
  __shared__ float sb[F];
  __shared__ float sv[F * CB];
  const int tile = blockIdx.x;
  const Seq s{a.T, a.H, a.dk, a.dv, static_cast<int>(blockIdx.z), static_cast<int>(blockIdx.y)};
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int li = lane % L;
  const int cl = warp * C::kCPW + lane / L;
  const int j = tile * CB + cl;
  const bool jv = j < a.dv;
  const bool withO = a.o != nullptr;
  const size_t sbase = (static_cast<size_t>(s.b) * a.H + s.h) * a.dk;  // row 0 of this head's state
  float S[NPT];
#pragma unroll
  for (int m = 0; m < NPT; ++m) {
    const int i = li + L * m;
    float x = 0.f;
    if (i < a.dk && jv) {
      if (a.s0Identity)
        x = i == j ? 1.f : 0.f;
      else if (a.s0)
        x = a.s0[(sbase + i) * a.dv + j];
    }
    S[m] = x;
  }
  for (int t0 = 0; t0 < a.T; t0 += F) {
    const int n = min(F, a.T - t0);
    __syncthreads();
    stage<KIND, DKP, CB>(s, tile, t0, n, withO ? a.q : nullptr, a.k, a.g, a.beta, a.v, nullptr, sq, sk, sa, sb, sv,
                         nullptr);
    __syncthreads();
    for (int c = 0; c < n; ++c) {
      const int t = t0 + c;
      if (a.ckpt && t % kCheckpoint == 0 && jv) {
        float* dst = a.ckpt + ((static_cast<size_t>(s.b) * a.H + s.h) * a.nck + t / kCheckpoint) * a.dk * a.dv;
#pragma unroll
        for (int m = 0; m < NPT; ++m) {
          const int i = li + L * m;
          if (i < a.dk) dst[static_cast<size_t>(i) * a.dv + j] = S[m];
        }
      }
      const float* qc = sq + c * DKP;
      const float* kc = sk + c * DKP;
      float sp[NPT];
#pragma unroll
      for (int m = 0; m < NPT; ++m) {
        float f = 1.f;
        if constexpr (KT::kVec) f = sa[c * DKP + li + L * m];
        if constexpr (KT::kScal) f = sa[c];
        sp[m] = KT::kVec || KT::kScal ? S[m] * f : S[m];
      }
      const float vj = sv[c * CB + cl];
      float out = 0.f;
      if constexpr (KT::kDel) {
        float ks = 0.f, qs = 0.f, qk = 0.f;
#pragma unroll
        for (int m = 0; m < NPT; ++m) {
          const float km = kc[li + L * m];
          ks += km * sp[m];
          if (withO) {
            const float qm = qc[li + L * m];
            qs += qm * sp[m];
            qk += qm * km;
          }
        }
        ks = group_sum<L>(ks);
        const float bu = sb[c] * (vj - ks);
#pragma unroll
        for (int m = 0; m < NPT; ++m) S[m] = sp[m] + kc[li + L * m] * bu;
        if (withO) {
          qs = group_sum<L>(qs);
          qk = group_sum<L>(qk);
          out = qs + bu * qk;
        }
      } else {
        float qs = 0.f;
#pragma unroll
        for (int m = 0; m < NPT; ++m) {
          S[m] = sp[m] + kc[li + L * m] * vj;
          if (withO) qs += qc[li + L * m] * S[m];
        }
        if (withO) out = group_sum<L>(qs);
      }
      if (withO && li == 0 && jv) {
        float* dst = a.o + s.tok(t) * a.dv + j;
        *dst = a.accumulate ? *dst + out : out;
      }
    }
  }
  if (a.sfinal && jv) {
#pragma unroll
    for (int m = 0; m < NPT; ++m) {
      const int i = li + L * m;
      if (i < a.dk) a.sfinal[(sbase + i) * a.dv + j] = S[m];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward

struct BwdArgs {
  int T, H, dk, dv, ntiles, nck;
  const float *q, *k, *v, *g, *beta, *dO, *dSf, *ckpt;
  float *dq, *dk_, *dv_, *dg, *dbeta, *dS0;
  float* hist;  // grads: per-thread scratch, kCheckpoint*NPT floats per thread
  bool grads;   // false: only the state gradient (dS0), no states needed
  bool atomic;  // several dv tiles: accumulate dq, dk, dg, dbeta with atomics
};

__device__ __forceinline__ void put(float* p, float x, bool atomic) {
  if (atomic)
    atomicAdd(p, x);
  else
    *p = x;
}

template <int KIND, int L, int NPT>
__global__ void bwd_kernel(BwdArgs a) {
  using C = Cfg<L, NPT>;
  using KT = KindTraits<KIND>;
  constexpr int DKP = C::kDKP, F = C::kF, CB = C::kCB;
  __shared__ float sq[F * DKP], sk[F * DKP];
  __shared__ float sa[KT::kVec ? F * DKP : F];
  __shared__ float sb[F];
  __shared__ float sv[F * CB], sdo[F * CB];
  __shared__ float acq[F * DKP], ack[F * DKP];
  __shared__ float acg[KT::kVec ? F * DKP : 1];
  __shared__ float acs[F], acb[F];
  __shared__ float su[KT::kDel ? kCheckpoint * CB : 1];
  const int tile = blockIdx.x;
  const Seq s{a.T, a.H, a.dk, a.dv, static_cast<int>(blockIdx.z), static_cast<int>(blockIdx.y)};
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int li = lane % L;
  const int cl = warp * C::kCPW + lane / L;
  const int j = tile * CB + cl;
  const bool jv = j < a.dv;
  const size_t sbase = (static_cast<size_t>(s.b) * a.H + s.h) * a.dk;
  float G[NPT];
#pragma unroll
  for (int m = 0; m < NPT; ++m) {
    const int i = li + L * m;
    G[m] = (a.dSf && i < a.dk && jv) ? a.dSf[(sbase + i) * a.dv + j] : 0.f;
  }
  float* hist = nullptr;
  if (a.grads)
    hist = a.hist + ((static_cast<size_t>(s.b) * a.H + s.h) * a.ntiles + tile) * (static_cast<size_t>(kCheckpoint) * NPT * kThreads) + tid;
  for (int ci = a.nck - 1; ci >= 0; --ci) {
    const int ts = ci * kCheckpoint, te = min(a.T, ts + kCheckpoint);
    if (a.grads) {
      // Recompute the chunk's states: hist[lt] = S_{t-1} (before token t = ts + lt).
      float S[NPT];
      const float* src = a.ckpt + ((static_cast<size_t>(s.b) * a.H + s.h) * a.nck + ci) * a.dk * a.dv;
#pragma unroll
      for (int m = 0; m < NPT; ++m) {
        const int i = li + L * m;
        S[m] = (i < a.dk && jv) ? src[static_cast<size_t>(i) * a.dv + j] : 0.f;
      }
      for (int t0 = ts; t0 < te; t0 += F) {
        const int n = min(F, te - t0);
        __syncthreads();
        stage<KIND, DKP, CB>(s, tile, t0, n, nullptr, a.k, a.g, a.beta, a.v, nullptr, sq, sk, sa, sb, sv, sdo);
        __syncthreads();
        for (int c = 0; c < n; ++c) {
          const int lt = t0 + c - ts;
#pragma unroll
          for (int m = 0; m < NPT; ++m) hist[(static_cast<size_t>(lt) * NPT + m) * kThreads] = S[m];
          const float* kc = sk + c * DKP;
          float sp[NPT];
#pragma unroll
          for (int m = 0; m < NPT; ++m) {
            float f = 1.f;
            if constexpr (KT::kVec) f = sa[c * DKP + li + L * m];
            if constexpr (KT::kScal) f = sa[c];
            sp[m] = KT::kVec || KT::kScal ? S[m] * f : S[m];
          }
          const float vj = sv[c * CB + cl];
          if constexpr (KT::kDel) {
            float ks = 0.f;
#pragma unroll
            for (int m = 0; m < NPT; ++m) ks += kc[li + L * m] * sp[m];
            ks = group_sum<L>(ks);
            const float u = vj - ks;
            if (li == 0) su[lt * CB + cl] = u;
            const float bu = sb[c] * u;
#pragma unroll
            for (int m = 0; m < NPT; ++m) S[m] = sp[m] + kc[li + L * m] * bu;
          } else {
#pragma unroll
            for (int m = 0; m < NPT; ++m) S[m] = sp[m] + kc[li + L * m] * vj;
          }
        }
      }
    }
    // Reverse walk over the chunk, one staged piece at a time (last piece first).
    const int npieces = (te - ts + F - 1) / F;
    for (int pc = npieces - 1; pc >= 0; --pc) {
      const int t0 = ts + pc * F, n = min(F, te - t0);
      __syncthreads();
      stage<KIND, DKP, CB>(s, tile, t0, n, a.q, a.k, a.g, a.beta, a.grads ? a.v : nullptr, a.dO, sq, sk, sa, sb, sv, sdo);
      if (a.grads) {
        for (int x = tid; x < n * DKP; x += kThreads) {
          acq[x] = 0.f;
          ack[x] = 0.f;
          if constexpr (KT::kVec) acg[x] = 0.f;
        }
        for (int x = tid; x < n; x += kThreads) {
          acs[x] = 0.f;
          acb[x] = 0.f;
        }
      }
      __syncthreads();
      float cur[NPT];
      if (a.grads) {
        const int lt = t0 + n - 1 - ts;
#pragma unroll
        for (int m = 0; m < NPT; ++m) cur[m] = hist[(static_cast<size_t>(lt) * NPT + m) * kThreads];
      }
      for (int c = n - 1; c >= 0; --c) {
        const int lt = t0 + c - ts;
        const float* qc = sq + c * DKP;
        const float* kc = sk + c * DKP;
        const float dov = sdo[c * CB + cl];
        float f[NPT];
#pragma unroll
        for (int m = 0; m < NPT; ++m) {
          f[m] = 1.f;
          if constexpr (KT::kVec) f[m] = sa[c * DKP + li + L * m];
          if constexpr (KT::kScal) f[m] = sa[c];
          G[m] += qc[li + L * m] * dov;
        }
        float beta = 0.f;
        if constexpr (KT::kDel) beta = sb[c];
        if (!a.grads) {
          if constexpr (KT::kDel) {
            float w = 0.f;
#pragma unroll
            for (int m = 0; m < NPT; ++m) w += kc[li + L * m] * G[m];
            const float du = beta * group_sum<L>(w);
#pragma unroll
            for (int m = 0; m < NPT; ++m) G[m] -= du * kc[li + L * m];
          }
          if constexpr (KT::kVec || KT::kScal) {
#pragma unroll
            for (int m = 0; m < NPT; ++m) G[m] *= f[m];
          }
          continue;
        }
        float nxt[NPT];
        if (c > 0) {
#pragma unroll
          for (int m = 0; m < NPT; ++m) nxt[m] = hist[(static_cast<size_t>(lt - 1) * NPT + m) * kThreads];
        }
        float sp[NPT], St[NPT];
        float u = 0.f, bu = 0.f;
        const float vj = sv[c * CB + cl];
        if constexpr (KT::kDel) {
          u = su[lt * CB + cl];
          bu = beta * u;
        }
#pragma unroll
        for (int m = 0; m < NPT; ++m) {
          sp[m] = KT::kVec || KT::kScal ? cur[m] * f[m] : cur[m];
          St[m] = sp[m] + kc[li + L * m] * (KT::kDel ? bu : vj);
          atomicAdd(&acq[c * DKP + li + L * m], St[m] * dov);
        }
        float w = 0.f;
#pragma unroll
        for (int m = 0; m < NPT; ++m) w += kc[li + L * m] * G[m];
        w = group_sum<L>(w);
        float ds[NPT];
        float dvj;
        if constexpr (KT::kDel) {
          const float du = beta * w;
          dvj = du;
          if (li == 0) atomicAdd(&acb[c], u * w);
#pragma unroll
          for (int m = 0; m < NPT; ++m) {
            atomicAdd(&ack[c * DKP + li + L * m], bu * G[m] - du * sp[m]);
            ds[m] = G[m] - du * kc[li + L * m];
          }
        } else {
          dvj = w;
#pragma unroll
          for (int m = 0; m < NPT; ++m) {
            atomicAdd(&ack[c * DKP + li + L * m], G[m] * vj);
            ds[m] = G[m];
          }
        }
        if constexpr (KT::kVec) {
#pragma unroll
          for (int m = 0; m < NPT; ++m) atomicAdd(&acg[c * DKP + li + L * m], ds[m] * sp[m]);
        }
        if constexpr (KT::kScal) {
          float part = 0.f;
#pragma unroll
          for (int m = 0; m < NPT; ++m) part += ds[m] * sp[m];
          part = group_sum<L>(part);
          if (li == 0) atomicAdd(&acs[c], part);
        }
        if (li == 0 && jv) a.dv_[s.tok(t0 + c) * a.dv + j] = dvj;
#pragma unroll
        for (int m = 0; m < NPT; ++m) {
          G[m] = KT::kVec || KT::kScal ? ds[m] * f[m] : ds[m];
          if (c > 0) cur[m] = nxt[m];
        }
      }
      if (a.grads) {
        __syncthreads();
        for (int x = tid; x < n * a.dk; x += kThreads) {
          const int c = x / a.dk, i = x - c * a.dk;
          const size_t r = s.tok(t0 + c) * a.dk + i;
          put(a.dq + r, acq[c * DKP + i], a.atomic);
          put(a.dk_ + r, ack[c * DKP + i], a.atomic);
          if constexpr (KT::kVec) {
            if (a.dg) put(a.dg + r, acg[c * DKP + i], a.atomic);
          }
        }
        for (int x = tid; x < n; x += kThreads) {
          const size_t r = s.tok(t0 + x);
          if constexpr (KT::kScal) {
            if (a.dg) put(a.dg + r, acs[x], a.atomic);
          }
          if constexpr (KT::kDel) {
            if (a.dbeta) put(a.dbeta + r, acb[x], a.atomic);
          }
        }
      }
    }
  }
  if (a.dS0 && jv) {
#pragma unroll
    for (int m = 0; m < NPT; ++m) {
      const int i = li + L * m;
      if (i < a.dk) a.dS0[(sbase + i) * a.dv + j] = G[m];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

// a[b,h,d] = exp(sum_t g[b,t,h,d]) (n = 1 for scalar gates, dk for vector gates); the sum in
// double as the CPU does. One warp per (b, h, d).
__global__ void gate_total_kernel(int B, int T, int H, int n, const float* g, float* a) {
  const long long w = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= static_cast<long long>(B) * H * n) return;
  const int d = static_cast<int>(w % n);
  const int h = static_cast<int>((w / n) % H);
  const int b = static_cast<int>(w / (static_cast<long long>(n) * H));
  double acc = 0;
  for (int t = lane; t < T; t += 32) acc += g[((static_cast<size_t>(b) * T + t) * H + h) * n + d];
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) a[w] = static_cast<float>(exp(acc));
}

// out[x][c][r] = in[x][r][c] for x < nmat, in [rows, cols].
__global__ void transpose_kernel(int nmat, int rows, int cols, const float* in, float* out) {
  const size_t n = static_cast<size_t>(nmat) * rows * cols;
  for (size_t e = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t x = e / (static_cast<size_t>(rows) * cols);
    const size_t rc = e - x * rows * cols;
    const size_t r = rc / cols, c = rc - r * cols;
    out[(x * cols + c) * rows + r] = in[e];
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch

int ncheckpoints(int T) { return (T + kCheckpoint - 1) / kCheckpoint; }

// Calls f.template run<L, NPT>() for the dk configuration.
template <typename Fn>
void by_dk(int dk, Fn&& f) {
  if (dk <= 16)
    f.template run<16, 1>();
  else if (dk <= 32)
    f.template run<32, 1>();
  else if (dk <= 64)
    f.template run<32, 2>();
  else if (dk <= 128)
    f.template run<32, 4>();
  else if (dk <= 256)
    f.template run<32, 8>();
  else if (dk <= kMaxDim)
    f.template run<32, 16>();
  else
    fail("dk must be <= " + std::to_string(kMaxDim) + ", got " + std::to_string(dk));
}

template <typename Fn>
void by_kind(int kind, Fn&& f) {
  switch (kind) {
    case kLinear:
      f.template kind<kLinear>();
      break;
    case kScalarGate:
      f.template kind<kScalarGate>();
      break;
    case kVectorGate:
      f.template kind<kVectorGate>();
      break;
    case kDelta:
      f.template kind<kDelta>();
      break;
    case kGatedDelta:
      f.template kind<kGatedDelta>();
      break;
    default:
      fail("unknown kind code " + std::to_string(kind));
  }
}

struct FwdLaunch {
  int B;
  FwdArgs a;
  cudaStream_t st;
  template <int KIND>
  struct K {
    FwdLaunch* self;
    template <int L, int NPT>
    void run() {
      constexpr int CB = Cfg<L, NPT>::kCB;
      FwdArgs x = self->a;
      x.ntiles = (x.dv + CB - 1) / CB;
      dim3 grid(x.ntiles, x.H, self->B);
      fwd_kernel<KIND, L, NPT><<<grid, kThreads, 0, self->st>>>(x);
      ck(cudaGetLastError(), "forward kernel launch");
    }
  };
  template <int KIND>
  void kind() {
    by_dk(a.dk, K<KIND>{this});
  }
};

void launch_fwd(int kind, int B, const FwdArgs& a, cudaStream_t st) {
  if (a.T < 1) return;
  FwdLaunch l{B, a, st};
  by_kind(kind, l);
}

int tiles_for(int dk, int dv) {
  const int CB = dk <= 16 ? Cfg<16, 1>::kCB : Cfg<32, 1>::kCB;
  return (dv + CB - 1) / CB;
}
int npt_for(int dk) {
  if (dk <= 32) return 1;
  if (dk <= 64) return 2;
  if (dk <= 128) return 4;
  if (dk <= 256) return 8;
  return 16;
}

struct BwdLaunch {
  int B;
  BwdArgs a;
  cudaStream_t st;
  template <int KIND>
  struct K {
    BwdLaunch* self;
    template <int L, int NPT>
    void run() {
      BwdArgs x = self->a;
      dim3 grid(x.ntiles, x.H, self->B);
      bwd_kernel<KIND, L, NPT><<<grid, kThreads, 0, self->st>>>(x);
      ck(cudaGetLastError(), "backward kernel launch");
    }
  };
  template <int KIND>
  void kind() {
    by_dk(a.dk, K<KIND>{this});
  }
};

void launch_bwd(int kind, int B, const BwdArgs& a, cudaStream_t st) {
  if (a.T < 1) return;
  BwdLaunch l{B, a, st};
  by_kind(kind, l);
}

// Device scratch freed (stream-ordered) on scope exit.
struct Scratch {
  float* p = nullptr;
  cudaStream_t st;
  Scratch(size_t n, cudaStream_t s) : st(s) {
    ck(cudaMallocAsync(reinterpret_cast<void**>(&p), (n ? n : 4) * sizeof(float), s), "cudaMallocAsync");
  }
  ~Scratch() {
    if (p) cudaFreeAsync(p, st);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

void check(const Problem& p) {
  if (p.B < 1 || p.T < 1 || p.H < 1 || p.dk < 1 || p.dv < 1) fail("B, T, H, dk and dv must be >= 1");
  if (p.kind < kLinear || p.kind > kGatedDelta) fail("unknown kind code " + std::to_string(p.kind));
  if (!p.causal && p.kind != kLinear) fail("causal=false is only defined for kind 'linear'");
  if (p.dk > kMaxDim) fail("dk must be <= " + std::to_string(kMaxDim) + ", got " + std::to_string(p.dk));
  if (!p.q || !p.k || !p.v) fail("q, k and v are required");
  const bool gate = p.kind == kScalarGate || p.kind == kVectorGate || p.kind == kGatedDelta;
  const bool delta = p.kind == kDelta || p.kind == kGatedDelta;
  if (gate && !p.g) fail("g (log gates) is required for this kind");
  if (delta && !p.beta) fail("beta is required for this kind");
}

FwdArgs fwd_args(const Problem& p) {
  FwdArgs a{};
  a.T = p.T;
  a.H = p.H;
  a.dk = p.dk;
  a.dv = p.dv;
  a.nck = ncheckpoints(p.T);
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.g = p.g;
  a.beta = p.beta;
  return a;
}

// out[b,t,h,:m] = M[b,h]^T x[b,t,h,:n] (M [n, m] per head), through the linear forward kernel with
// v = 0 and S0 = M.
void apply_state(int B, int T, int H, int n, int m, const float* M, const float* x, float* out, cudaStream_t st) {
  if (n > kMaxDim) fail("non-causal attention needs dk, dv <= " + std::to_string(kMaxDim));
  FwdArgs a{};
  a.T = T;
  a.H = H;
  a.dk = n;
  a.dv = m;
  a.nck = ncheckpoints(T);
  a.q = x;
  a.k = x;  // read but multiplied by v = 0
  a.s0 = M;
  a.o = out;
  launch_fwd(kLinear, B, a, st);
}

void transpose(int nmat, int rows, int cols, const float* in, float* out, cudaStream_t st) {
  const size_t n = static_cast<size_t>(nmat) * rows * cols;
  const int blocks = static_cast<int>(std::min<size_t>((n + 255) / 256, 4096));
  transpose_kernel<<<blocks, 256, 0, st>>>(nmat, rows, cols, in, out);
  ck(cudaGetLastError(), "transpose kernel launch");
}

// ---- segment-parallel forward and backward (one sequence, B = 1) --------------------------
// The recurrent kernels give one thread block per (sequence, head, dv tile): a single long sequence
// leaves most multiprocessors idle. Cut it into P equal segments, laid out as a batch of P
// sequences (the [1, P·L, H, d] arrays ARE [P, L, H, d]): every segment's summary (A_r, U_r), the
// affine fold S_{r+1} = A_r S_r + U_r (DESIGN.md §3, here on the device), then every segment's
// forward from its true starting state at once; the backward adds the state gradients D_r and the
// suffix fold dS_end(r-1) = A_r^T dS_end(r) + D_r. Exact up to float32 rounding.

// Columns of the state each fold block keeps in shared memory (dk · cols floats <= 48 KiB).
int fold_cols(int dk) { return std::max(1, std::min(32, 12288 / dk)); }

// A fold block's tile of the state: rows 0..dk, columns j0 .. j0+nc of head h, as X[i*cols + jj].
struct FoldTile {
  int h, j0, nc, n, cols, dk, dv;
  __device__ FoldTile(int dk_, int dv_, int cols_)
      : h(blockIdx.y), j0(blockIdx.x * cols_), nc(min(cols_, dv_ - j0)), n(dk_ * nc), cols(cols_), dk(dk_), dv(dv_) {}
  __device__ size_t at(size_t mat, int e) const { return mat + static_cast<size_t>(e / nc) * dv + j0 + e % nc; }
  __device__ int sh(int e) const { return (e / nc) * cols + e % nc; }
  // X ← src[h] (zero when src is null; the identity with `identity`, for dv = dk).
  __device__ void load(float* X, const float* src, bool identity = false) const {
    const size_t ns = static_cast<size_t>(dk) * dv;
    for (int e = threadIdx.x; e < n; e += blockDim.x)
      X[sh(e)] = identity ? (e / nc == j0 + e % nc ? 1.f : 0.f) : src ? src[at(h * ns, e)] : 0.f;
    __syncthreads();
  }
  // (A_r X)_ij, or (A_rᵀ X)_ij with T, for the compact A of `kind` (kernels.ts BlockSummary).
  template <bool T>
  __device__ float apply(int kind, const float* A, int r, int H, const float* X, int e) const {
    const int i = e / nc, jj = e % nc;
    const float x = X[i * cols + jj];
    if (kind == kLinear) return x;
    if (kind == kScalarGate) return A[static_cast<size_t>(r) * H + h] * x;
    if (kind == kVectorGate) return A[(static_cast<size_t>(r) * H + h) * dk + i] * x;
    const float* Ar = A + (static_cast<size_t>(r) * H + h) * dk * dk;
    float y = 0.f;
    for (int l = 0; l < dk; l++) y = fmaf(T ? Ar[static_cast<size_t>(l) * dk + i] : Ar[static_cast<size_t>(i) * dk + l], X[l * cols + jj], y);
    return y;
  }
};

// Outputs per thread of a fold block: dk·cols / 256 <= 12288 / 256 = 48.
constexpr int kFoldPerThread = 48;

// S[r] (the state entering segment r, [P,H,dk,dv]; may be null) for r < P, and fin = the state
// after segment P−1 ([H,dk,dv], may be null), from s0 (null: zero; the identity with `identity`)
// and U (null: zero). grid (ceil(dv / cols), H), 256 threads, dk·cols floats of smem.
__global__ void seg_fold_kernel(int kind, int P, int H, int dk, int dv, int cols, const float* A, const float* U,
                                const float* s0, int identity, float* S, float* fin) {
  extern __shared__ float X[];  // [dk][cols]
  const FoldTile t(dk, dv, cols);
  const size_t ns = static_cast<size_t>(dk) * dv;
  t.load(X, s0, identity != 0);
  float nx[kFoldPerThread];
  for (int r = 0; r < P; r++) {
    const size_t base = (static_cast<size_t>(r) * H + t.h) * ns;
    int c = 0;
    for (int e = threadIdx.x; e < t.n; e += blockDim.x, c++) {
      if (S) S[t.at(base, e)] = X[t.sh(e)];
      nx[c] = t.apply<false>(kind, A, r, H, X, e) + (U ? U[t.at(base, e)] : 0.f);
    }
    __syncthreads();
    c = 0;
    for (int e = threadIdx.x; e < t.n; e += blockDim.x, c++) X[t.sh(e)] = nx[c];
    __syncthreads();
  }
  if (fin)
    for (int e = threadIdx.x; e < t.n; e += blockDim.x) fin[t.at(t.h * ns, e)] = X[t.sh(e)];
}

// dSend[r] (the gradient at the end of segment r, [P,H,dk,dv]; may be null) from dSf (may be
// null: zero) and the segments' own state gradients D: dSend[P−1] = dSf, dSend[r−1] = A_rᵀ dSend[r]
// + D_r; and dS0 = A_0ᵀ dSend[0] + D_0, the gradient at the start ([H,dk,dv], may be null).
__global__ void seg_suffix_fold_kernel(int kind, int P, int H, int dk, int dv, int cols, const float* A, const float* D,
                                       const float* dSf, float* dSend, float* dS0) {
  extern __shared__ float X[];
  const FoldTile t(dk, dv, cols);
  const size_t ns = static_cast<size_t>(dk) * dv;
  t.load(X, dSf);
  float nx[kFoldPerThread];
  for (int r = P - 1; r >= 0; r--) {
    const size_t base = (static_cast<size_t>(r) * H + t.h) * ns;
    int c = 0;
    for (int e = threadIdx.x; e < t.n; e += blockDim.x, c++) {
      if (dSend) dSend[t.at(base, e)] = X[t.sh(e)];
      const float y = t.apply<true>(kind, A, r, H, X, e) + D[t.at(base, e)];
      if (r > 0) nx[c] = y;
      else if (dS0) dS0[t.at(t.h * ns, e)] = y;
    }
    if (r == 0) break;
    __syncthreads();
    c = 0;
    for (int e = threadIdx.x; e < t.n; e += blockDim.x, c++) X[t.sh(e)] = nx[c];
    __syncthreads();
  }
}

size_t summary_a_floats(const Problem& p) {
  switch (p.kind) {
    case kLinear:
      return 0;
    case kScalarGate:
      return static_cast<size_t>(p.B) * p.H;
    case kVectorGate:
      return static_cast<size_t>(p.B) * p.H * p.dk;
    default:
      return static_cast<size_t>(p.B) * p.H * p.dk * p.dk;
  }
}

// Segments for a one-sequence causal problem: the largest P <= min(64, T / 256) dividing T, so that
// every segment has >= 256 tokens (1: run it whole). LASP_CUDA_SEGMENTS=N caps P (1: off).
int segments_for(const Problem& p) {
  if (p.B != 1 || !p.causal) return 1;
  static const int cap = [] {
    const char* e = std::getenv("LASP_CUDA_SEGMENTS");
    const int v = e ? std::atoi(e) : 0;
    return v >= 1 ? v : 64;
  }();
  for (int P = std::min(cap, p.T / 256); P > 1; P--)
    if (p.T % P == 0) return P;
  return 1;
}

void seg_fold(const Problem& pb, const float* A, const float* U, const float* s0, float* S, float* fin, cudaStream_t st,
              bool identity = false) {
  const int cols = fold_cols(pb.dk);
  const dim3 grid((pb.dv + cols - 1) / cols, pb.H);
  seg_fold_kernel<<<grid, 256, static_cast<size_t>(pb.dk) * cols * sizeof(float), st>>>(
      pb.kind, pb.B, pb.H, pb.dk, pb.dv, cols, A, U, s0, identity ? 1 : 0, S, fin);
  ck(cudaGetLastError(), "segment fold kernel launch");
}

void seg_suffix_fold(const Problem& pb, const float* A, const float* D, const float* dSf, float* dSend, float* dS0,
                     cudaStream_t st) {
  const int cols = fold_cols(pb.dk);
  seg_suffix_fold_kernel<<<dim3((pb.dv + cols - 1) / cols, pb.H), 256, static_cast<size_t>(pb.dk) * cols * sizeof(float), st>>>(
      pb.kind, pb.B, pb.H, pb.dk, pb.dv, cols, A, D, dSf, dSend, dS0);
  ck(cudaGetLastError(), "segment suffix fold kernel launch");
}

// a[h, i] = Π_r As[r, h, i] (scalar_gate n = 1, vector_gate n = dk): the gate factor of the whole sequence.
__global__ void seg_gate_product_kernel(int P, int Hn, const float* As, float* a) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= Hn) return;
  float x = 1.f;
  for (int r = 0; r < P; r++) x *= As[static_cast<size_t>(r) * Hn + idx];
  a[idx] = x;
}

// The one-sequence problem p as P segments (a batch of P sequences of T / P tokens).
Problem as_segments(const Problem& p, int P) {
  Problem pb = p;
  pb.B = P;
  pb.T = p.T / P;
  return pb;
}

}  // namespace

size_t checkpointFloats(const Problem& p) {
  return static_cast<size_t>(p.B) * p.H * ncheckpoints(p.T) * p.dk * p.dv;
}

void forward(const Problem& p, const float* s0, float* o, float* sFinal, float* ckpt, cudaStream_t st) {
  check(p);
  if (!p.causal) {
    // S_T = S0 + K^T V; o_t = S_T^T q_t.
    if (ckpt) fail("checkpoints are for causal attention");
    const size_t ns = static_cast<size_t>(p.B) * p.H * p.dk * p.dv;
    Scratch tmp(sFinal ? 0 : ns, st);
    float* S = sFinal ? sFinal : tmp.p;
    FwdArgs a = fwd_args(p);
    a.s0 = s0;
    a.sfinal = S;
    launch_fwd(kLinear, p.B, a, st);
    if (o) apply_state(p.B, p.T, p.H, p.dk, p.dv, S, p.q, o, st);
    return;
  }
  if (const int P = ckpt ? 1 : segments_for(p); P > 1) {
    const Problem pb = as_segments(p, P);
    const size_t ns = static_cast<size_t>(P) * p.H * p.dk * p.dv;
    Scratch A(summary_a_floats(pb), st), U(ns, st), S(ns, st);
    summary(pb, A.p, U.p, st);
    seg_fold(pb, A.p, U.p, s0, S.p, sFinal, st);
    forward(pb, S.p, o, nullptr, nullptr, st);
    return;
  }
  FwdArgs a = fwd_args(p);
  a.s0 = s0;
  a.o = o;
  a.sfinal = sFinal;
  a.ckpt = ckpt;
  launch_fwd(p.kind, p.B, a, st);
}

void backward(const Problem& p, const float* s0, const float* dO, const float* dSFinal, const float* ckpt, float* dq,
              float* dk, float* dv, float* dg, float* dbeta, float* dS0, cudaStream_t st) {
  check(p);
  if (!dO || !dq || !dk || !dv) fail("dO, dq, dk and dv are required");
  const size_t ns = static_cast<size_t>(p.B) * p.H * p.dk * p.dv;
  if (!p.causal) {
    // S = S0 + K^T V; dS = dSFinal + Q^T dO; dq_t = S dO_t; dk_t = dS v_t; dv_t = dS^T k_t.
    if (p.dv > kMaxDim) fail("non-causal attention needs dv <= " + std::to_string(kMaxDim));
    Scratch S(ns, st), dS(ns, st), Mt(ns, st);
    FwdArgs a = fwd_args(p);
    a.s0 = s0;
    a.sfinal = S.p;
    launch_fwd(kLinear, p.B, a, st);
    BwdArgs b{};
    b.T = p.T;
    b.H = p.H;
    b.dk = p.dk;
    b.dv = p.dv;
    b.nck = ncheckpoints(p.T);
    b.ntiles = tiles_for(p.dk, p.dv);
    b.q = p.q;
    b.k = p.k;
    b.dO = dO;
    b.dSf = dSFinal;
    b.dS0 = dS.p;
    b.grads = false;
    launch_bwd(kLinear, p.B, b, st);
    const int nm = p.B * p.H;
    transpose(nm, p.dk, p.dv, S.p, Mt.p, st);
    apply_state(p.B, p.T, p.H, p.dv, p.dk, Mt.p, dO, dq, st);
    transpose(nm, p.dk, p.dv, dS.p, Mt.p, st);
    apply_state(p.B, p.T, p.H, p.dv, p.dk, Mt.p, p.v, dk, st);
    apply_state(p.B, p.T, p.H, p.dk, p.dv, dS.p, p.k, dv, st);
    if (dS0) ck(cudaMemcpyAsync(dS0, dS.p, ns * sizeof(float), cudaMemcpyDeviceToDevice, st), "copy dS0");
    return;
  }
  if (const int P = ckpt ? 1 : segments_for(p); P > 1) {
    const Problem pb = as_segments(p, P);
    const size_t nsP = static_cast<size_t>(P) * ns;
    Scratch A(summary_a_floats(pb), st), U(nsP, st), S(nsP, st), D(nsP, st), dSend(nsP, st), dS0all(nsP, st);
    summary(pb, A.p, U.p, st);
    seg_fold(pb, A.p, U.p, s0, S.p, nullptr, st);
    stateGrad(pb, dO, D.p, st);
    seg_suffix_fold(pb, A.p, D.p, dSFinal, dSend.p, nullptr, st);
    backward(pb, S.p, dO, dSend.p, nullptr, dq, dk, dv, dg, dbeta, dS0all.p, st);
    if (dS0) ck(cudaMemcpyAsync(dS0, dS0all.p, ns * sizeof(float), cudaMemcpyDeviceToDevice, st), "copy dS0");
    return;
  }
  const int nck = ncheckpoints(p.T);
  Scratch own(ckpt ? 0 : checkpointFloats(p), st);
  if (!ckpt) {
    FwdArgs a = fwd_args(p);
    a.s0 = s0;
    a.ckpt = own.p;
    launch_fwd(p.kind, p.B, a, st);
    ckpt = own.p;
  }
  const int ntiles = tiles_for(p.dk, p.dv);
  const bool atomic = ntiles > 1;
  const size_t ntok = static_cast<size_t>(p.B) * p.T * p.H;
  if (atomic) {
    ck(cudaMemsetAsync(dq, 0, ntok * p.dk * sizeof(float), st), "memset dq");
    ck(cudaMemsetAsync(dk, 0, ntok * p.dk * sizeof(float), st), "memset dk");
    if (dg) ck(cudaMemsetAsync(dg, 0, ntok * (p.kind == kVectorGate ? p.dk : 1) * sizeof(float), st), "memset dg");
    if (dbeta) ck(cudaMemsetAsync(dbeta, 0, ntok * sizeof(float), st), "memset dbeta");
  }
  Scratch hist(static_cast<size_t>(p.B) * p.H * ntiles * kCheckpoint * npt_for(p.dk) * kThreads, st);
  BwdArgs b{};
  b.T = p.T;
  b.H = p.H;
  b.dk = p.dk;
  b.dv = p.dv;
  b.ntiles = ntiles;
  b.nck = nck;
  b.q = p.q;
  b.k = p.k;
  b.v = p.v;
  b.g = p.g;
  b.beta = p.beta;
  b.dO = dO;
  b.dSf = dSFinal;
  b.ckpt = ckpt;
  b.dq = dq;
  b.dk_ = dk;
  b.dv_ = dv;
  const bool gate = p.kind == kScalarGate || p.kind == kVectorGate || p.kind == kGatedDelta;
  const bool delta = p.kind == kDelta || p.kind == kGatedDelta;
  b.dg = gate ? dg : nullptr;
  b.dbeta = delta ? dbeta : nullptr;
  b.dS0 = dS0;
  b.hist = hist.p;
  b.grads = true;
  b.atomic = atomic;
  launch_bwd(p.kind, p.B, b, st);
}

void summary(const Problem& p_in, float* a, float* u, cudaStream_t st) {
  Problem p = p_in;
  check(p);
  if (!u) fail("u is required");
  if (const int P = segments_for(p); P > 1) {
    // U = the fold of the segments' summaries from zero; A = A_{P−1} ⋯ A_0 (a fold from the identity
    // without U for the delta kinds, a product of gate factors for the gated ones).
    const Problem pb = as_segments(p, P);
    if (p.kind != kLinear && !a) fail("a is required for this kind");
    Scratch As(summary_a_floats(pb), st), Us(static_cast<size_t>(P) * p.H * p.dk * p.dv, st);
    summary(pb, As.p, Us.p, st);
    seg_fold(pb, As.p, Us.p, nullptr, nullptr, u, st);
    if (p.kind == kScalarGate || p.kind == kVectorGate) {
      const int Hn = p.H * (p.kind == kVectorGate ? p.dk : 1);
      seg_gate_product_kernel<<<(Hn + 255) / 256, 256, 0, st>>>(P, Hn, As.p, a);
      ck(cudaGetLastError(), "segment gate product kernel launch");
    } else if (p.kind != kLinear) {
      Problem pa = pb;
      pa.dv = p.dk;
      seg_fold(pa, As.p, nullptr, nullptr, nullptr, a, st, true);
    }
    return;
  }
  // U: the end state from zero (non-causal linear: K^T V, the same recurrence).
  FwdArgs fa = fwd_args(p);
  fa.sfinal = u;
  launch_fwd(p.causal ? p.kind : kLinear, p.B, fa, st);
  if (p.kind == kLinear) return;
  if (!a) fail("a is required for this kind");
  if (p.kind == kScalarGate || p.kind == kVectorGate) {
    const int n = p.kind == kVectorGate ? p.dk : 1;
    const long long warps = static_cast<long long>(p.B) * p.H * n;
    const int blocks = static_cast<int>((warps * 32 + 255) / 256);
    gate_total_kernel<<<blocks, 256, 0, st>>>(p.B, p.T, p.H, n, p.g, a);
    ck(cudaGetLastError(), "gate total kernel launch");
    return;
  }
  // Delta kinds: A = the end state from S0 = I with v = 0 (dk x dk "state").
  FwdArgs aa = fwd_args(p);
  aa.dv = p.dk;
  aa.v = nullptr;
  aa.s0Identity = true;
  aa.sfinal = a;
  launch_fwd(p.kind, p.B, aa, st);
}

void stateGrad(const Problem& p, const float* dO, float* d, cudaStream_t st) {
  check(p);
  if (!dO || !d) fail("dO and d are required");
  if (const int P = segments_for(p); P > 1) {
    // D = the suffix fold of the segments' own state gradients with no gradient at the end.
    const Problem pb = as_segments(p, P);
    const size_t nsP = static_cast<size_t>(P) * p.H * p.dk * p.dv;
    Scratch As(summary_a_floats(pb), st), Us(nsP, st), Ds(nsP, st);
    summary(pb, As.p, Us.p, st);
    stateGrad(pb, dO, Ds.p, st);
    seg_suffix_fold(pb, As.p, Ds.p, nullptr, nullptr, d, st);
    return;
  }
  BwdArgs b{};
  b.T = p.T;
  b.H = p.H;
  b.dk = p.dk;
  b.dv = p.dv;
  b.ntiles = tiles_for(p.dk, p.dv);
  b.nck = ncheckpoints(p.T);
  b.q = p.q;
  b.k = p.k;
  b.v = p.v;
  b.g = p.g;
  b.beta = p.beta;
  b.dO = dO;
  b.dS0 = d;
  b.grads = false;
  // Non-causal linear: D = Q^T dO, which is what the causal linear recurrence gives too.
  launch_bwd(p.causal ? p.kind : kLinear, p.B, b, st);
}

void addStateTerm(const Problem& p, const float* state, float* o, cudaStream_t st) {
  check(p);
  if (!p.causal || p.kind == kDelta || p.kind == kGatedDelta)
    fail("addStateTerm needs causal linear, scalar_gate or vector_gate");
  if (!state || !o) fail("state and o are required");
  FwdArgs a = fwd_args(p);
  a.v = nullptr;
  a.beta = nullptr;
  a.s0 = state;
  a.o = o;
  a.accumulate = true;
  launch_fwd(p.kind, p.B, a, st);
}

}  // namespace lasp_cuda_general
