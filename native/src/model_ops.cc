#include "model_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "threadpool.h"
#include "vecmath.h"

namespace lasp {
namespace {

// Loops compiled for AVX2 and for the baseline; the loader picks the one the CPU supports.
#define LASP_SIMD __attribute__((target_clones("avx2", "default")))

// Elements per pool task for elementwise ops (and per partial sum of sum_squares).
constexpr int64_t kGrain = 1 << 14;

// Runs fn(lo, hi) over [0, n) cut into consecutive blocks of `grain` items, on the pool.
// The blocks depend only on n and grain, never on the thread count.
void for_blocks(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t blocks = (n + grain - 1) / grain;
  parallel_for(static_cast<int>(blocks), [&](int b) {
    const int64_t lo = b * grain;
    fn(lo, std::min(n, lo + grain));
  });
}

// Rows per task for row-wise ops on rows of d floats: about kGrain floats per task.
int64_t row_grain(int d) { return std::max<int64_t>(1, kGrain / d); }

// Σ a[i]·b[i], in 8 independent lanes (vectorisable without reassociating), lanes added in order.
LASP_SIMD float dot(const float* a, const float* b, int n) {
  float acc[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  for (int j = 0; i < n; ++i, ++j) acc[j] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Σ a[i]·b[i]·c[i], as dot().
LASP_SIMD float dot3(const float* a, const float* b, const float* c, int n) {
  float acc[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j] * c[i + j];
  for (int j = 0; i < n; ++i, ++j) acc[j] += a[i] * b[i] * c[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// ---- RMSNorm ---------------------------------------------------------------------------------

LASP_SIMD void rms_row_forward(const float* x, const float* w, float r, int d, float* y) {
  for (int j = 0; j < d; ++j) y[j] = x[j] * r * w[j];
}

// With y_j = w_j x_j r and r = (Σx²/D + eps)^(-1/2), ∂r/∂x_j = −r³ x_j / D, so
//   dx_j = r w_j dy_j − (r³/D) x_j Σ_i dy_i w_i x_i,   dw_j += dy_j x_j r.
LASP_SIMD void rms_row_backward(const float* x, const float* w, float r, const float* dy, float c, int d, float* dx,
                                float* dw_part) {
  const float k = r * r * c / static_cast<float>(d);
  for (int j = 0; j < d; ++j) {
    dx[j] = r * (w[j] * dy[j] - k * x[j]);
    dw_part[j] += dy[j] * x[j] * r;
  }
}

// dst[j] += src[j].
LASP_SIMD void add_row(float* dst, const float* src, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
}

// ---- SwiGLU ----------------------------------------------------------------------------------

inline float sigmoid(float z) { return 1.f / (1.f + exp_clamped(-z)); }

LASP_SIMD void swiglu_span_forward(const float* a, const float* b, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] * sigmoid(a[i]) * b[i];
}

// silu'(z) = s + z s (1 − s) = s (1 + z (1 − s)) with s = sigmoid(z).
LASP_SIMD void swiglu_span_backward(const float* a, const float* b, const float* dy, int64_t n, float* da, float* db) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = sigmoid(a[i]);
    da[i] = dy[i] * b[i] * s * (1.f + a[i] * (1.f - s));
    db[i] = dy[i] * a[i] * s;
  }
}

// ---- Cross-entropy ---------------------------------------------------------------------------

// max over x[0..n), in 8 lanes (vectorisable).
LASP_SIMD float max_of(const float* x, int n) {
  float acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = x[0];
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] = select(x[i + j] > acc[j], x[i + j], acc[j]);
  for (int j = 0; i < n; ++i, ++j) acc[j] = select(x[i] > acc[j], x[i], acc[j]);
  float m = acc[0];
  for (int j = 1; j < 8; ++j) m = acc[j] > m ? acc[j] : m;
  return m;
}

// e[i] = exp(x[i] − m); returns Σ e[i] (8 lanes, added in order).
LASP_SIMD float exp_shifted(const float* x, float m, int n, float* e) {
  float acc[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      e[i + j] = exp_clamped(x[i + j] - m);
      acc[j] += e[i + j];
    }
  for (int j = 0; i < n; ++i, ++j) {
    e[i] = exp_clamped(x[i] - m);
    acc[j] += e[i];
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

LASP_SIMD void scale_span(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

// One row: dlogits = (softmax − onehot)·scale, returns logsumexp − logits[t] (in double).
double cross_entropy_row(const float* x, int32_t t, int V, float scale, float* d) {
  const float m = max_of(x, V);
  const float s = exp_shifted(x, m, V, d);  // s ≥ 1: the max term is e^0
  scale_span(d, V, scale / s);
  d[t] -= scale;
  return static_cast<double>(m) + std::log(static_cast<double>(s)) - static_cast<double>(x[t]);
}

// ---- AdamW -----------------------------------------------------------------------------------

// p ← p·(1 − lr·wd) − (lr/bc1) · m / (sqrt(v)/sqrt(bc2) + eps), after the moment updates
// (the PyTorch AdamW formulation; decay uses the parameter before this step).
LASP_SIMD void adamw_span(float* p, const float* g, float* m, float* v, int64_t n, float b1, float b2, float eps,
                          float decay, float step_size, float inv_sqrt_bc2) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = b1 * m[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
  }
}

// ---- Sum of squares --------------------------------------------------------------------------

LASP_SIMD double sum_squares_span(const float* x, int64_t n) {
  double acc[4] = {};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; ++j) acc[j] += static_cast<double>(x[i + j]) * x[i + j];
  for (int j = 0; i < n; ++i, ++j) acc[j] += static_cast<double>(x[i]) * x[i];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// Throws naming the first element of ids[0..n) outside [lo, hi).
void check_range(const char* name, const int32_t* ids, int64_t n, int32_t lo, int64_t hi) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < lo || ids[i] >= hi)
      throw std::invalid_argument(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
                                  " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + ")");
}

}  // namespace

void rmsnorm_forward(const float* x, const float* w, int64_t N, int D, float eps, float* y, float* rstd) {
  for_blocks(N, row_grain(D), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const float* xr = x + n * D;
      const double ms = static_cast<double>(dot(xr, xr, D)) / D;
      rstd[n] = static_cast<float>(1.0 / std::sqrt(ms + eps));
      rms_row_forward(xr, w, rstd[n], D, y + n * D);
    }
  });
}

void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, int64_t N, int D, float* dx,
                      float* dw) {
  // Each block of rows sums its share of dw into its own partial; the partials are then added
  // in block order. The blocks depend only on N and D, so dw is the same bits on every run.
  const int64_t rows = std::max<int64_t>(32, row_grain(D));
  const int64_t blocks = (N + rows - 1) / rows;
  std::vector<float> part(static_cast<size_t>(blocks * D), 0.f);
  for_blocks(N, rows, [&](int64_t lo, int64_t hi) {
    float* p = part.data() + (lo / rows) * D;
    for (int64_t n = lo; n < hi; ++n) {
      const float* xr = x + n * D;
      const float* dyr = dy + n * D;
      rms_row_backward(xr, w, rstd[n], dyr, dot3(dyr, w, xr, D), D, dx + n * D, p);
    }
  });
  for_blocks(D, kGrain, [&](int64_t lo, int64_t hi) {
    std::memcpy(dw + lo, part.data() + lo, static_cast<size_t>(hi - lo) * sizeof(float));
    for (int64_t b = 1; b < blocks; ++b) add_row(dw + lo, part.data() + b * D + lo, hi - lo);
  });
}

// Stable logsigmoid: min(z, 0) - log1p(e^{-|z|}) (log1p in double: one call per element).
LASP_SIMD void log_sigmoid_span(const float* z, int64_t n, float inv_tau, float* g) {
  for (int64_t i = 0; i < n; ++i) {
    const float e = exp_clamped(-std::fabs(z[i]));
    g[i] = (select(z[i] < 0.f, z[i], 0.f) - std::log1p(e)) * inv_tau;
  }
}

LASP_SIMD void log_sigmoid_backward_span(const float* z, const float* dg, int64_t n, float inv_tau, float* dz) {
  for (int64_t i = 0; i < n; ++i) dz[i] = dg[i] * inv_tau * sigmoid(-z[i]);
}

LASP_SIMD void sigmoid_span(const float* z, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = sigmoid(z[i]);
}

LASP_SIMD void sigmoid_backward_span(const float* y, const float* dy, int64_t n, float* dz) {
  for (int64_t i = 0; i < n; ++i) dz[i] = dy[i] * y[i] * (1.f - y[i]);
}

void log_sigmoid_scaled(const float* z, int64_t n, float inv_tau, float* g) {
  for_blocks(n, kGrain, [&](int64_t lo, int64_t hi) { log_sigmoid_span(z + lo, hi - lo, inv_tau, g + lo); });
}

void log_sigmoid_scaled_backward(const float* z, const float* dg, int64_t n, float inv_tau, float* dz) {
  for_blocks(n, kGrain,
             [&](int64_t lo, int64_t hi) { log_sigmoid_backward_span(z + lo, dg + lo, hi - lo, inv_tau, dz + lo); });
}

void sigmoid_forward(const float* z, int64_t n, float* y) {
  for_blocks(n, kGrain, [&](int64_t lo, int64_t hi) { sigmoid_span(z + lo, hi - lo, y + lo); });
}

void sigmoid_backward(const float* y, const float* dy, int64_t n, float* dz) {
  for_blocks(n, kGrain, [&](int64_t lo, int64_t hi) { sigmoid_backward_span(y + lo, dy + lo, hi - lo, dz + lo); });
}

void l2_normalize_rows(const float* x, int64_t rows, int d, float eps, float* y, float* inv) {
  for_blocks(rows, row_grain(d), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const float* xr = x + r * d;
      double s = 0;
      for (int j = 0; j < d; ++j) s += static_cast<double>(xr[j]) * xr[j];
      const float iv = static_cast<float>(1.0 / std::sqrt(s + eps));
      inv[r] = iv;
      float* yr = y + r * d;
      for (int j = 0; j < d; ++j) yr[j] = xr[j] * iv;
    }
  });
}

void l2_normalize_rows_backward(const float* y, const float* inv, const float* dy, int64_t rows, int d, float* dx) {
  for_blocks(rows, row_grain(d), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const float* yr = y + r * d;
      const float* gr = dy + r * d;
      double dot = 0;
      for (int j = 0; j < d; ++j) dot += static_cast<double>(yr[j]) * gr[j];
      const float iv = inv[r], dt = static_cast<float>(dot);
      float* out = dx + r * d;
      for (int j = 0; j < d; ++j) out[j] = iv * (gr[j] - yr[j] * dt);
    }
  });
}

void swiglu_forward(const float* a, const float* b, int64_t n, float* y) {
  for_blocks(n, kGrain, [&](int64_t lo, int64_t hi) { swiglu_span_forward(a + lo, b + lo, hi - lo, y + lo); });
}

void swiglu_backward(const float* a, const float* b, const float* dy, int64_t n, float* da, float* db) {
  for_blocks(n, kGrain,
             [&](int64_t lo, int64_t hi) { swiglu_span_backward(a + lo, b + lo, dy + lo, hi - lo, da + lo, db + lo); });
}

void embedding_forward(const float* table, const int32_t* ids, int64_t N, int V, int D, float* y) {
  check_range("ids", ids, N, 0, V);
  for_blocks(N, row_grain(D), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n)
      std::memcpy(y + n * D, table + static_cast<int64_t>(ids[n]) * D, static_cast<size_t>(D) * sizeof(float));
  });
}

void embedding_backward(const int32_t* ids, const float* dy, int64_t N, int V, int D, float* dtable) {
  check_range("ids", ids, N, 0, V);
  // Each task owns a range of vocabulary rows: it zeroes them, then adds the dy rows of its ids
  // in token order. No two tasks write the same row, and every row's sum runs in token order,
  // so the result is the same bits whatever the split.
  const int tasks = std::min(V, 4 * num_threads());
  parallel_for(tasks, [&](int t) {
    const int64_t v0 = static_cast<int64_t>(V) * t / tasks, v1 = static_cast<int64_t>(V) * (t + 1) / tasks;
    std::memset(dtable + v0 * D, 0, static_cast<size_t>((v1 - v0) * D) * sizeof(float));
    for (int64_t n = 0; n < N; ++n)
      if (ids[n] >= v0 && ids[n] < v1) add_row(dtable + static_cast<int64_t>(ids[n]) * D, dy + n * D, D);
  });
}

CrossEntropyResult cross_entropy(const float* logits, const int32_t* targets, int64_t N, int V, float scale,
                                 float* dlogits) {
  check_range("targets", targets, N, -1, V);
  std::vector<double> loss(static_cast<size_t>(N));
  for_blocks(N, row_grain(V), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      float* d = dlogits + n * V;
      if (targets[n] < 0) {
        std::memset(d, 0, static_cast<size_t>(V) * sizeof(float));
        loss[n] = 0;
      } else {
        loss[n] = cross_entropy_row(logits + n * V, targets[n], V, scale, d);
      }
    }
  });
  CrossEntropyResult r{0.0, 0};
  for (int64_t n = 0; n < N; ++n) {  // in row order: the same sum every run
    r.loss += loss[n];
    r.count += targets[n] >= 0;
  }
  return r;
}

void adamw_step(float* params, const float* grads, float* m, float* v, int64_t n, const AdamWParams& h) {
  const double t = static_cast<double>(h.step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(h.beta1), t);
  const double bc2 = 1.0 - std::pow(static_cast<double>(h.beta2), t);
  const float decay = static_cast<float>(1.0 - static_cast<double>(h.lr) * h.weight_decay);
  const float step_size = static_cast<float>(h.lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  for_blocks(n, kGrain, [&](int64_t lo, int64_t hi) {
    adamw_span(params + lo, grads + lo, m + lo, v + lo, hi - lo, h.beta1, h.beta2, h.eps, decay, step_size,
               inv_sqrt_bc2);
  });
}

double sum_squares(const float* x, int64_t n) {
  // Per-block partials added in block order: the same bits whatever the thread count.
  const int64_t blocks = (n + kGrain - 1) / kGrain;
  std::vector<double> part(static_cast<size_t>(blocks));
  for_blocks(n, kGrain, [&](int64_t lo, int64_t hi) { part[lo / kGrain] = sum_squares_span(x + lo, hi - lo); });
  double s = 0;
  for (double p : part) s += p;
  return s;
}

void scale_in_place(float* x, int64_t n, float s) {
  for_blocks(n, kGrain, [&](int64_t lo, int64_t hi) { scale_span(x + lo, hi - lo, s); });
}

}  // namespace lasp
