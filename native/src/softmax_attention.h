// Softmax attention (flash-style tiling, online softmax), forward and backward, one call for all
// heads. The quadratic baseline, and the softmax layers of hybrid models under sequence
// parallelism, where a rank's queries attend to keys gathered from every rank.
//
// Layout: q [Tq,H,dk], k [Tk,H,dk], v [Tk,H,dv], o [Tq,H,dv], lse [H,Tq] (log-sum-exp of the
// scaled scores of each query row, kept from the forward for the backward). Row-major float32.
// Query i sits at key position qOffset + i: with causal, query i sees keys j <= qOffset + i
// (and nothing else); without causal it sees all Tk keys. A query row that sees no key
// outputs zeros and lse = -inf. scale multiplies q·k (usually 1/sqrt(dk)).
// window > 0 (causal only): sliding-window attention, query i (position qOffset + i) sees only
// keys j with qOffset + i - window < j <= qOffset + i (the last `window` positions, itself
// included). window = 0: no limit.
#pragma once

namespace lasp {

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

// Writes o and lse.
void softmax_attention_forward(const SoftmaxProblem& p, float* o, float* lse);

// Given o and lse from the forward and dO [Tq,H,dv], writes dq [Tq,H,dk], dk [Tk,H,dk],
// dv [Tk,H,dv] (overwritten, not accumulated).
void softmax_attention_backward(const SoftmaxProblem& p, const float* o, const float* lse,
                                const float* dO, float* dq, float* dk, float* dv);

}  // namespace lasp
