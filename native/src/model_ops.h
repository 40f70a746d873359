// The non-attention ops of a training step (DESIGN.md §4): RMSNorm, SwiGLU, embedding,
// cross-entropy, AdamW, and the gradient-norm helpers. float32, row-major, each with its
// hand-derived backward. Rows (or fixed-size element blocks) are spread over the shared pool;
// every reduction is combined in a fixed order, so results do not depend on the thread count
// or on scheduling: two runs give identical bits.
//
// Callers (addon.cc) check sizes; the ops check what depends on data (ids, targets) and throw
// std::invalid_argument naming the first bad element.
#pragma once
#include <cstdint>

namespace lasp {

// y[n,:] = x[n,:] · rstd[n] · w, rstd[n] = 1/sqrt(mean(x[n,:]²) + eps). x, y [N,D]; w [D].
void rmsnorm_forward(const float* x, const float* w, int64_t N, int D, float eps, float* y, float* rstd);

// dx [N,D] and dw [D] (summed over rows) from dy, using the forward's rstd.
void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, int64_t N, int D, float* dx,
                      float* dw);

// y = silu(a) ⊙ b elementwise over n values.
// Gates of the attention layer: g = logsigmoid(z) * inv_tau and its backward dz = dg * inv_tau *
// sigmoid(-z); beta = sigmoid(z) and dz = dy * y (1 - y).
void log_sigmoid_scaled(const float* z, int64_t n, float inv_tau, float* g);
void log_sigmoid_scaled_backward(const float* z, const float* dg, int64_t n, float inv_tau, float* dz);
void sigmoid_forward(const float* z, int64_t n, float* y);
void sigmoid_backward(const float* y, const float* dy, int64_t n, float* dz);

// Row-wise L2 normalisation of x [rows, d]: y = x * inv, inv = 1/sqrt(sum x^2 + eps) per row;
// backward dx = inv * (dy - y (y . dy)).
void l2_normalize_rows(const float* x, int64_t rows, int d, float eps, float* y, float* inv);
void l2_normalize_rows_backward(const float* y, const float* inv, const float* dy, int64_t rows, int d, float* dx);

void swiglu_forward(const float* a, const float* b, int64_t n, float* y);
void swiglu_backward(const float* a, const float* b, const float* dy, int64_t n, float* da, float* db);

// y[n,:] = table[ids[n],:]. table [V,D], ids [N] in [0,V).
void embedding_forward(const float* table, const int32_t* ids, int64_t N, int V, int D, float* y);

// dtable = Σ_n onehot(ids[n]) dy[n,:]; every element of dtable [V,D] is written.
void embedding_backward(const int32_t* ids, const float* dy, int64_t N, int V, int D, float* dtable);

struct CrossEntropyResult {
  double loss;    // Σ over counted rows of (logsumexp(logits[n,:]) − logits[n,target[n]])
  int64_t count;  // rows whose target is not -1
};

// Softmax cross-entropy of logits [N,V] against targets [N] (-1 = ignored row).
// dlogits [N,V] = (softmax − onehot) · scale on counted rows, 0 on ignored rows.
CrossEntropyResult cross_entropy(const float* logits, const int32_t* targets, int64_t N, int V, float scale,
                                 float* dlogits);

struct AdamWParams {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // 1 for the first step (bias correction)
};

// One AdamW step in place over n parameters.
void adamw_step(float* params, const float* grads, float* m, float* v, int64_t n, const AdamWParams& h);

// Σ x[i]² accumulated in double.
double sum_squares(const float* x, int64_t n);

// x[i] *= s.
void scale_in_place(float* x, int64_t n, float s);

}  // namespace lasp
