// Short causal depthwise convolution (DESIGN.md §3.1), the local mixing before q/k/v in Mamba2,
// Gated DeltaNet and Kimi Delta Attention: per channel c,
//   z[b,t,c] = Σ_{j<K} w[j,c] · x[b,t−j,c],   y = z or silu(z),
// over B sequences of T rows of C channels. Rows before t = 0 come from `halo` [B, K−1, C] (the
// previous rank's last K−1 rows under sequence parallelism; oldest first) or are zero.
// Work is split by channel blocks only, so every sum runs in a fixed order: identical bits for
// any thread count.
#pragma once
#include <cstdint>

namespace lasp {

void short_conv_forward(const float* x, const float* halo, const float* w, int B, int64_t T, int C, int K, bool silu, float* y);

// From dy: dx [B,T,C], dw [K,C] (summed over sequences and rows) and, when dhalo is not null,
// dhalo [B,K−1,C] (what the halo rows contributed; the previous rank adds it to its last rows).
void short_conv_backward(const float* x, const float* halo, const float* w, const float* dy, int B, int64_t T, int C, int K,
                         bool silu, float* dx, float* dw, float* dhalo);

}  // namespace lasp
