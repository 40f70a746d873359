// CUDA chunked linear attention (DESIGN.md §2.1) for kinds linear, scalar_gate and delta:
// forward and backward, bf16 inputs with float32 accumulation and float32 state chains, or a
// float32 checking mode.
//
// Layout, row-major (the CPU kernels' [T,H,d] with a leading batch): q,k [B,T,H,dk];
// v,o [B,T,H,dv]; log gates g [B,T,H] (per token, ≤ 0) or gconst [H] (one log decay per head);
// beta [B,T,H]; states [B,H,dk,dv]. q,k,v,o and dq,dk,dv have the element type of the mode
// (bf16 or float32); gates, beta, states and their gradients are float32.
//
// Supported shapes: dk, dv ∈ {64, 128} (bf16), dk, dv = 64 (float32 mode); delta needs dk = dv.
// Any T ≥ 1 (a partial last chunk is zero-padded).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace lasp_cuda {

enum class Kind : int { Linear = 0, ScalarGate = 1, Delta = 3 };
enum class Prec : int { BF16 = 0, F32 = 1 };

struct Problem {
  Kind kind = Kind::Linear;
  Prec prec = Prec::BF16;
  int B = 1, T = 0, H = 0, dk = 0, dv = 0;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const float* g = nullptr;       // scalar_gate: per-token log gates [B,T,H], or
  const float* gconst = nullptr;  // scalar_gate: per-head constant log decay [H]
  const float* beta = nullptr;    // delta [B,T,H]
  const float* s0 = nullptr;      // initial state [B,H,dk,dv] or null (zero)
};

// Device scratch owned by the caller, reused between calls (grows on demand).
struct Workspace {
  static constexpr int kSlots = 24;
  void* ptr[kSlots] = {};
  size_t size[kSlots] = {};
  void* get(int slot, size_t bytes);
  ~Workspace();
};

// Forward: o [B,T,H,dv] (mode's type), sFinal [B,H,dk,dv] float32 (may be null).
// save=true keeps, in ws, what the backward of the same inputs reuses (delta: W, U, the
// intra-chunk products, the chunk states and the corrected values; linear kinds: nothing).
void forward(const Problem& p, void* o, float* sFinal, Workspace& ws, bool save,
             cudaStream_t st = 0);

// Backward (after a forward with save=true on the same inputs and ws). dO [B,T,H,dv];
// dSFinal [B,H,dk,dv] or null; sFinal: the forward's final state (scalar_gate's dg needs it).
// Outputs dq, dk, dv (mode's type); dg [B,T,H] (per-token gates) or dgconst [H]
// (constant gates, the gradient of the per-head log decay); dbeta [B,T,H] (delta);
// dS0 [B,H,dk,dv] (may be null).
void backward(const Problem& p, const void* dO, const float* dSFinal, const float* sFinal,
              void* dq, void* dk, void* dv, float* dg, float* dgconst, float* dbeta, float* dS0,
              Workspace& ws, cudaStream_t st = 0);

// Matmul FLOPs these kernels execute for one forward / one backward (for rates).
double forward_flops(const Problem& p);
double backward_flops(const Problem& p);

// Tuning knobs for benchmarks (0 = automatic).
struct Tuning {
  int chainBV = 0;     // dv tile of the linear/scalar_gate chain kernel (32 or 64)
  int chainSegs = 0;   // sequence segments of the chain kernel
  int deltaBV = 0;     // dv tile of the delta sequential kernels (16 or 32)
  int chainSplit = 1;  // sub-segments per segment in the chain kernels' state-only pass
  int deltaFwdBV = 0;  // dv tile of the delta forward sequential kernel (8 or 16; 0: 16; 8 measured slower)
  int deltaPipe = 1;   // delta bf16 forward in this many pipelined pieces (1: off)
  int deltaPrep = 0;   // delta bf16 prep and bwd_a kernels: 0 register-resident (*2), 1 the shared-tile ones
  int chainPar = 0;    // linear/scalar_gate bf16: chunk-parallel output pass (bit 0 forward, bit 1 backward;
                       // 0: the output pass along each segment)
  int chainClosed = 0;  // scalar_gate, constant decay: in-chunk decay from a table e^{(i−j)γ} (measured slower; breaks dgconst)
};
extern Tuning tuning;

std::string lastError();

// float32 <-> bf16 (round to nearest even) on the device, on stream st.
void toBf16(const float* x, void* y, size_t n, cudaStream_t st = 0);
void fromBf16(const void* x, float* y, size_t n, cudaStream_t st = 0);

}  // namespace lasp_cuda
