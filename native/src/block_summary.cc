// Chaining blocks through their affine summaries (DESIGN.md §2.2, §3): the forward prefix fold
// of incoming states and the backward suffix fold of end-state gradients. Small dense algebra,
// O(W dk^3) at most, run per head on the pool.
#include <cstring>
#include <vector>

#include "gemm.h"
#include "linear_attention.h"
#include "threadpool.h"

namespace lasp {
namespace {

// out = A x (transpose: A^T x) for one head's compact A; x, out are [dk,dv]; out may not alias x.
void apply_a(Kind kind, const float* a, int dk, int dv, bool transpose, const float* x, float* out) {
  const size_t n = static_cast<size_t>(dk) * dv;
  switch (kind) {
    case Kind::Linear:
      std::memcpy(out, x, n * sizeof(float));
      return;
    case Kind::ScalarGate:
      for (size_t i = 0; i < n; ++i) out[i] = a[0] * x[i];
      return;
    case Kind::VectorGate:
      for (int d = 0; d < dk; ++d)
        for (int j = 0; j < dv; ++j) out[static_cast<size_t>(d) * dv + j] = a[d] * x[static_cast<size_t>(d) * dv + j];
      return;
    default:
      sgemm(transpose, false, dk, dv, dk, 1.f, a, dk, x, dv, 0.f, out, dv);
  }
}

}  // namespace

void la_fold_states(Kind kind, int W, int H, int dk, int dv, const float* a, const float* u,
                    const float* s0, float* states) {
  const size_t n = static_cast<size_t>(dk) * dv;
  const size_t per_a = static_cast<size_t>(summary_a_len(kind, 1, dk));
  const size_t all_a = per_a * H, all_s = n * H;
  parallel_for(H, [&](int h) {
    float* P0 = states + h * n;
    if (s0)
      std::memcpy(P0, s0 + h * n, n * sizeof(float));
    else
      std::memset(P0, 0, n * sizeof(float));
    for (int r = 0; r < W; ++r) {
      const float* P = states + r * all_s + h * n;
      float* next = states + (r + 1) * all_s + h * n;
      apply_a(kind, a + r * all_a + h * per_a, dk, dv, false, P, next);
      const float* U = u + r * all_s + h * n;
      for (size_t i = 0; i < n; ++i) next[i] += U[i];
    }
  });
}

void la_suffix_fold(Kind kind, int W, int H, int dk, int dv, const float* a, const float* d,
                    const float* dFinal, float* e) {
  const size_t n = static_cast<size_t>(dk) * dv;
  const size_t per_a = static_cast<size_t>(summary_a_len(kind, 1, dk));
  const size_t all_a = per_a * H, all_s = n * H;
  parallel_for(H, [&](int h) {
    // e[r+1] = E_r; E_{W-1} = dFinal; E_{r-1} = D_r + A_r^T E_r; e[0] = D_0 + A_0^T E_0.
    float* last = e + W * all_s + h * n;
    if (dFinal)
      std::memcpy(last, dFinal + h * n, n * sizeof(float));
    else
      std::memset(last, 0, n * sizeof(float));
    for (int r = W - 1; r >= 0; --r) {
      const float* E = e + (r + 1) * all_s + h * n;
      float* prev = e + r * all_s + h * n;
      apply_a(kind, a + r * all_a + h * per_a, dk, dv, true, E, prev);
      const float* D = d + r * all_s + h * n;
      for (size_t i = 0; i < n; ++i) prev[i] += D[i];
    }
  });
}

}  // namespace lasp
