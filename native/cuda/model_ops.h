// CUDA float32 versions of the model's non-attention ops: the GEMM of native/src/gemm.h and the
// ops of native/src/model_ops.h and native/src/short_conv.h, with the same semantics (formulas,
// clamps, ignore rules, bias correction), so that a GPU backend gives the CPU ops' results up to
// float32 rounding. Row-major layouts, as the CPU functions'.
//
// Every pointer is a DEVICE pointer (ids/targets int32, everything else float32, results of the
// reductions double / int64 in device memory). Work is queued on `stream`; nothing synchronises
// with the host. Functions that need scratch take it from the stream-ordered allocator
// (cudaMallocAsync / cudaFreeAsync on `stream`). Every function returns cudaSuccess, the first
// CUDA error it met (launch or allocation), or cudaErrorInvalidValue for bad sizes. Sizes of 0
// (where the CPU op allows them) launch nothing.
//
// Differences from the CPU ops, all in the last bits of float32 sums: reductions run in another
// order (warp/block trees instead of the CPU's 8 lanes); embeddingBackward adds with atomicAdd, so
// a vocabulary row that several tokens share may differ in its last bits from run to run (every
// other op is deterministic for a given shape). Ids and targets are not range-checked on the
// device: out-of-range ids are skipped (embedding: the output row is zero; cross-entropy: a
// target outside [-1, V) counts as ignored). The Node addon checks them on the host first.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace lasp_cuda_ops {

// C[M×N] = alpha · op(A)[M×K] · op(B)[K×N] + beta · C, dense row-major (op(X) = X or Xᵀ: A is
// stored M×K, or K×M when transA; B K×N, or N×K when transB). beta == 0 never reads C.
// K == 0 or alpha == 0: C = beta · C (zeros when beta == 0), as lasp::sgemm. Shared-memory tiled
// (64×64 block tile, 4×4 per thread); with few output tiles and a long K, split-K into scratch
// and a fixed-order reduction (deterministic).
cudaError_t gemm(int M, int N, int K, const float* A, const float* B, float* C, bool transA, bool transB, float alpha,
                 float beta, cudaStream_t stream);

// dst[i] += src[i].
cudaError_t addInto(float* dst, const float* src, int64_t n, cudaStream_t stream);

// x[i] *= s.
cudaError_t scaleInPlace(float* x, int64_t n, float s, cudaStream_t stream);

// y = x · rstd ⊙ w per row of x [N,D]; rstd [N] = 1/sqrt(mean(x²) + eps).
cudaError_t rmsNormForward(const float* x, const float* w, int64_t N, int D, float eps, float* y, float* rstd,
                           cudaStream_t stream);
// dx [N,D]; dw [D] summed over rows (fixed order).
cudaError_t rmsNormBackward(const float* x, const float* w, const float* rstd, const float* dy, int64_t N, int D,
                            float* dx, float* dw, cudaStream_t stream);

// y = silu(a) ⊙ b; the backward gives da, db.
cudaError_t swigluForward(const float* a, const float* b, int64_t n, float* y, cudaStream_t stream);
cudaError_t swigluBackward(const float* a, const float* b, const float* dy, int64_t n, float* da, float* db,
                           cudaStream_t stream);

// y [N,D] = table[ids[n]] ([V,D]); dtable [V,D] = Σ_n onehot(ids[n]) dy[n] (every element written).
cudaError_t embeddingForward(const float* table, const int32_t* ids, int64_t N, int V, int D, float* y,
                             cudaStream_t stream);
cudaError_t embeddingBackward(const int32_t* ids, const float* dy, int64_t N, int V, int D, float* dtable,
                              cudaStream_t stream);

// Softmax cross-entropy of logits [N,V] against targets [N] (-1 = ignored row): dlogits =
// (softmax − onehot) · scale on counted rows, 0 on ignored ones; *loss (device double) = Σ over
// counted rows of logsumexp − logit[target] (each row's term in double, as the CPU op); *count
// (device int64) = counted rows. loss and count are written, not accumulated.
cudaError_t crossEntropy(const float* logits, const int32_t* targets, int64_t N, int V, float scale, float* dlogits,
                         double* loss, int64_t* count, cudaStream_t stream);

// g = logsigmoid(z) · invTau; dz = dg · invTau · sigmoid(−z).
cudaError_t logSigmoidScaled(const float* z, int64_t n, float invTau, float* g, cudaStream_t stream);
cudaError_t logSigmoidScaledBackward(const float* z, const float* dg, int64_t n, float invTau, float* dz,
                                     cudaStream_t stream);

// y = sigmoid(z); dz = dy · y (1 − y).
cudaError_t sigmoidForward(const float* z, int64_t n, float* y, cudaStream_t stream);
cudaError_t sigmoidBackward(const float* y, const float* dy, int64_t n, float* dz, cudaStream_t stream);

// y = x / sqrt(Σx² + eps) per row of x [rows,d] (sums in double); inv [rows]; the backward
// dx = inv · (dy − y (y·dy)).
cudaError_t l2NormalizeRows(const float* x, int64_t rows, int d, float eps, float* y, float* inv, cudaStream_t stream);
cudaError_t l2NormalizeRowsBackward(const float* y, const float* inv, const float* dy, int64_t rows, int d, float* dx,
                                    cudaStream_t stream);

// Short causal depthwise convolution over B sequences of T rows of C channels, kernel K (1..64):
// y[b,t,c] = act(Σ_j w[j,c] x[b,t−j,c]); rows before t = 0 from halo [B,K−1,C] (oldest first) or
// zero when halo is null; act = SiLU when silu. The backward writes dx [B,T,C], dw [K,C] (summed
// over sequences and rows in double, fixed order) and, when dhalo is not null (needs halo), dhalo
// [B,K−1,C].
cudaError_t shortConvForward(const float* x, const float* halo, const float* w, int B, int64_t T, int C, int K,
                             bool silu, float* y, cudaStream_t stream);
cudaError_t shortConvBackward(const float* x, const float* halo, const float* w, const float* dy, int B, int64_t T,
                              int C, int K, bool silu, float* dx, float* dw, float* dhalo, cudaStream_t stream);

// One AdamW step in place (lasp::adamw_step: decoupled weight decay on the parameter before the
// step, bias corrections 1 − β^step computed in double on the host).
cudaError_t adamW(float* params, const float* grads, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weightDecay, int64_t step, cudaStream_t stream);

// *out (device double) = Σ over the `count` arrays xs[i] (device pointers, lengths ns[i], both
// host arrays) of Σ x², in double, two-stage (fixed order: the same bits every run).
cudaError_t sumSquares(int count, const float* const* xs, const int64_t* ns, double* out, cudaStream_t stream);
// *out = sqrt(sumSquares(...)).
cudaError_t gradNorm(int count, const float* const* xs, const int64_t* ns, double* out, cudaStream_t stream);

}  // namespace lasp_cuda_ops
