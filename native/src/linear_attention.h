// Chunked linear attention for the five kinds of DESIGN.md §2 (forward, backward), and the
// pieces sequence parallelism needs (§2.2, §3): a block's affine summary (A, U), the gradient
// D of a block's outputs w.r.t. its incoming state, and the folds that chain blocks.
//
// Layout, all row-major float32: q,k [T,H,dk]; v,o [T,H,dv]; g [T,H] (scalar_gate, gated_delta)
// or [T,H,dk] (vector_gate), log gates <= 0; beta [T,H]; states [H,dk,dv].
// Compact A of a summary: none (linear), [H] (scalar_gate), [H,dk] (vector_gate), [H,dk,dk]
// (delta kinds).
#pragma once
#include <cstdint>
#include <vector>

namespace lasp {

enum class Kind : int { Linear = 0, ScalarGate = 1, VectorGate = 2, Delta = 3, GatedDelta = 4 };

inline bool is_delta(Kind k) { return k == Kind::Delta || k == Kind::GatedDelta; }
inline bool has_gate(Kind k) {
  return k == Kind::ScalarGate || k == Kind::VectorGate || k == Kind::GatedDelta;
}
inline bool has_beta(Kind k) { return is_delta(k); }

struct LAProblem {
  Kind kind = Kind::Linear;
  bool causal = true;
  int T = 0, H = 0, dk = 0, dv = 0;
  int chunk = 64;
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const float* g = nullptr;     // null unless has_gate(kind)
  const float* beta = nullptr;  // null unless has_beta(kind)
  const float* s0 = nullptr;    // initial state or null (zero)
};

// Length of the compact A of a summary, in floats.
int64_t summary_a_len(Kind kind, int H, int dk);

// The state at the start of every chunk (and the end state), per head, kept by a forward for
// the backward of the same inputs, which then skips recomputing them.
struct SavedStates {
  Kind kind = Kind::Linear;
  int T = 0, H = 0, dk = 0, dv = 0, chunk = 0;
  std::vector<std::vector<float>> per_head;
};

// o [T,H,dv], s_final [H,dk,dv]. With save (causal only), also records the chunk states.
void la_forward(const LAProblem& p, float* o, float* s_final, SavedStates* save = nullptr);

// dS_final may be null (zero). dg, dbeta, ds0 may be null when not wanted. saved: the states a
// forward of the same inputs recorded (or null: recompute them).
void la_backward(const LAProblem& p, const float* dO, const float* dS_final, float* dq, float* dk,
                 float* dv, float* dg, float* dbeta, float* ds0, const SavedStates* saved = nullptr);

// Summary of the block p (p.s0 ignored): S_end = A S_start + U. a: compact A, u [H,dk,dv].
void la_summary(const LAProblem& p, float* a, float* u);

// o += the contribution of an incoming state P [H,dk,dv]: o_t += (e^{G_t} ⊙ q_t)^T P, with G_t the
// cumulative log gate from the block start through t. For linear and the gated kinds without
// delta rule the output is (forward from a zero state) + this term, which lets the intra-block
// work run while the summaries are being gathered.
void la_add_state_term(const LAProblem& p, const float* P, float* o);

// Non-causal linear: summary is U = K^T V (a empty) and the state gradient D = Q^T dO.

// D = dL/dS_start for L = <dO, o> with no gradient at the block's end. d [H,dk,dv].
void la_state_grad(const LAProblem& p, const float* dO, float* d);

// states [(W+1),H,dk,dv]: P_0 = s0 (or 0), P_{r+1} = A_r P_r + U_r. a: W compact A's, u [W,H,dk,dv].
void la_fold_states(Kind kind, int W, int H, int dk, int dv, const float* a, const float* u,
                    const float* s0, float* states);

// e [(W+1),H,dk,dv]: e[r+1] = E_r (gradient at the end of block r), E_{W-1} = dFinal (or 0),
// E_r = D_{r+1} + A_{r+1}^T E_{r+1}; e[0] = D_0 + A_0^T E_0 (gradient of the initial state).
void la_suffix_fold(Kind kind, int W, int H, int dk, int dv, const float* a, const float* d,
                    const float* dFinal, float* e);

}  // namespace lasp
