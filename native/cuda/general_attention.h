// General float32 CUDA kernels for every linear-attention kind of DESIGN.md §2 (linear,
// scalar_gate, vector_gate, delta, gated_delta; causal, and non-causal linear) and for causal /
// sliding-window softmax attention, for any head dims up to 512. The exact path: results equal
// the CPU kernels (native/src/linear_attention.cc, block_summary.cc, softmax_attention.cc) up to
// float32 rounding. native/cuda/linear_attention.cu stays the fast bf16 path for its 3 kinds.
//
// All pointers are DEVICE float32 pointers; every launcher is asynchronous on `stream` (it may
// allocate its own scratch with cudaMallocAsync on that stream) and throws std::runtime_error on a
// bad argument or a launch error. Layouts are the CPU kernels' with a leading batch B:
//   q, k [B,T,H,dk]; v, o [B,T,H,dv]; g [B,T,H] (scalar_gate, gated_delta) or [B,T,H,dk]
//   (vector_gate); beta [B,T,H]; states [B,H,dk,dv] (S[b][h][i][j] at ((b*H+h)*dk+i)*dv+j).
// Gates are log gates (finite, <= 0): the kernels do not check them (the addon does).
//
// Design (general_attention.cu): recurrent per-token kernels. One thread block owns one
// (sequence, head, tile of dv columns) of the state S[dk x dv]; a group of L lanes (16 or 32)
// owns one column, each lane ceil(dk/L) rows of it in registers. Every dv column of S evolves
// independently for every kind. The forward can save the state every kCheckpoint tokens; the
// backward reloads each checkpoint, recomputes the states of its chunk (kept in a per-thread
// global scratch), then walks the chunk in reverse. Sums across dv columns (dq, dk, dg, dbeta)
// go through shared-memory atomics per block and global atomics across dv tiles.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace lasp_cuda_general {

// Kind codes as native/binding.ts KIND_CODES.
enum Kind : int { kLinear = 0, kScalarGate = 1, kVectorGate = 2, kDelta = 3, kGatedDelta = 4 };

// Tokens between saved states (forward checkpoints for the backward).
constexpr int kCheckpoint = 64;
// Largest dk (and dv, for non-causal linear and softmax) the kernels take.
constexpr int kMaxDim = 512;

struct Problem {
  int kind = kLinear;
  bool causal = true;
  int B = 1, T = 0, H = 0, dk = 0, dv = 0;
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const float* g = nullptr;     // required for scalar_gate, vector_gate, gated_delta
  const float* beta = nullptr;  // required for delta, gated_delta
};

// Checkpoint buffer floats for forward(save) / backward: B*H*ceil(T/kCheckpoint)*dk*dv.
size_t checkpointFloats(const Problem& p);

// o [B,T,H,dv] (may be null: state only), sFinal [B,H,dk,dv] (may be null), s0 [B,H,dk,dv]
// (null: zero). ckpt (causal only, may be null): receives the state before every
// kCheckpoint-th token, checkpointFloats(p) floats.
// A causal problem with B = 1 and no ckpt runs segment-parallel when T allows (forward and
// backward): P equal segments of >= 256 tokens (P <= 64 dividing T; LASP_CUDA_SEGMENTS=N caps P,
// 1 turns it off) as a batch of P sequences from the starting states that the segments' summaries
// and a fold on the device give (general_attention.cu, "segment-parallel"); summary and
// stateGrad of such a problem compose the segments' summaries and state gradients the same way.
void forward(const Problem& p, const float* s0, float* o, float* sFinal, float* ckpt, cudaStream_t stream);

// Gradients of L = <dO, o> + <dSFinal, sFinal>. dSFinal may be null (zero). ckpt: the
// checkpoints of a forward of the same problem and s0, or null (then recomputed here).
// dq, dk [B,T,H,dk]; dv [B,T,H,dv]; dg (like g; null allowed), dbeta [B,T,H] (null allowed),
// dS0 [B,H,dk,dv] (null allowed). Every element of the non-null outputs is written.
void backward(const Problem& p, const float* s0, const float* dO, const float* dSFinal, const float* ckpt, float* dq,
              float* dk, float* dv, float* dg, float* dbeta, float* dS0, cudaStream_t stream);

// Block summary S_end = A S_start + U (p.s0 ignored). a: compact as kernels.ts BlockSummary,
// with a leading B: nothing for linear, [B,H] scalar_gate, [B,H,dk] vector_gate, [B,H,dk,dk]
// delta kinds (a may be null for linear). u [B,H,dk,dv]. Non-causal linear: u = K^T V.
void summary(const Problem& p, float* a, float* u, cudaStream_t stream);

// D = dL/dS_start of the block's own outputs with no gradient at its end: [B,H,dk,dv].
// Non-causal linear: D = Q^T dO.
void stateGrad(const Problem& p, const float* dO, float* d, cudaStream_t stream);

// o[t] += (e^{G_t} (.) q_t)^T P[b,h] in place (G_t: cumulative log gate through token t).
// Causal linear, scalar_gate, vector_gate only. state [B,H,dk,dv], o [B,T,H,dv].
void addStateTerm(const Problem& p, const float* state, float* o, cudaStream_t stream);

// ---- softmax attention (float32) ----------------------------------------------------------
// As native/src/softmax_attention.h: q [Tq,H,dk], k [Tk,H,dk], v [Tk,H,dv], o [Tq,H,dv],
// lse [H,Tq]. Query i sits at key position qOffset + i; causal: it sees keys j <= qOffset + i;
// window > 0 (causal only): only keys j > qOffset + i - window. A query that sees no key gets
// o = 0 and lse = -inf. dk, dv <= kMaxDim.
struct SoftmaxProblem {
  int Tq = 0, Tk = 0, H = 0, dk = 0, dv = 0;
  long long qOffset = 0;
  bool causal = true;
  long long window = 0;
  float scale = 1.f;
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
};

void softmaxForward(const SoftmaxProblem& p, float* o, float* lse, cudaStream_t stream);

// Writes dq, dk, dv (overwritten). o and lse from softmaxForward; dO [Tq,H,dv].
void softmaxBackward(const SoftmaxProblem& p, const float* o, const float* lse, const float* dO, float* dq, float* dk,
                     float* dv, cudaStream_t stream);

}  // namespace lasp_cuda_general
