#include "short_conv.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "threadpool.h"

namespace lasp {
namespace {

#define LASP_SIMD __attribute__((target_clones("avx2", "default")))

// Channels per pool task.
constexpr int kChannelBlock = 16;

// Row t (t may be negative, down to −(K−1)) of sequence b, channel block start c0.
inline const float* row(const float* x, const float* halo, int64_t T, int C, int K, int b, int64_t t) {
  if (t >= 0) return x + (static_cast<int64_t>(b) * T + t) * C;
  if (!halo) return nullptr;
  return halo + (static_cast<int64_t>(b) * (K - 1) + (t + K - 1)) * C;
}

// z[c0..c1) of row t of sequence b.
LASP_SIMD void conv_row(const float* x, const float* halo, const float* w, int64_t T, int C, int K, int b, int64_t t, int c0,
                        int c1, float* z) {
  for (int c = c0; c < c1; c++) z[c - c0] = 0.f;
  for (int j = 0; j < K; j++) {
    const float* xr = row(x, halo, T, C, K, b, t - j);
    if (!xr) continue;
    const float* wj = w + static_cast<int64_t>(j) * C;
    for (int c = c0; c < c1; c++) z[c - c0] += wj[c] * xr[c];
  }
}

inline float sigmoidf(float z) { return 1.f / (1.f + std::exp(-z)); }

}  // namespace

void short_conv_forward(const float* x, const float* halo, const float* w, int B, int64_t T, int C, int K, bool silu, float* y) {
  const int blocks = (C + kChannelBlock - 1) / kChannelBlock;
  parallel_for(blocks, [&](int blk) {
    const int c0 = blk * kChannelBlock, c1 = std::min(C, c0 + kChannelBlock);
    float z[kChannelBlock];
    for (int b = 0; b < B; b++)
      for (int64_t t = 0; t < T; t++) {
        conv_row(x, halo, w, T, C, K, b, t, c0, c1, z);
        float* yr = y + (static_cast<int64_t>(b) * T + t) * C;
        for (int c = c0; c < c1; c++) {
          const float v = z[c - c0];
          yr[c] = silu ? v * sigmoidf(v) : v;
        }
      }
  });
}

void short_conv_backward(const float* x, const float* halo, const float* w, const float* dy, int B, int64_t T, int C, int K,
                         bool silu, float* dx, float* dw, float* dhalo) {
  const int blocks = (C + kChannelBlock - 1) / kChannelBlock;
  parallel_for(blocks, [&](int blk) {
    const int c0 = blk * kChannelBlock, c1 = std::min(C, c0 + kChannelBlock), n = c1 - c0;
    // dz of one sequence for this channel block, [T, n].
    std::vector<float> dz(static_cast<size_t>(T) * n);
    std::vector<double> dwAcc(static_cast<size_t>(K) * n, 0.0);
    float z[kChannelBlock];
    for (int b = 0; b < B; b++) {
      for (int64_t t = 0; t < T; t++) {
        const float* dyr = dy + (static_cast<int64_t>(b) * T + t) * C;
        float* d = dz.data() + t * n;
        if (silu) {
          conv_row(x, halo, w, T, C, K, b, t, c0, c1, z);
          for (int c = c0; c < c1; c++) {
            const float v = z[c - c0], s = sigmoidf(v);
            d[c - c0] = dyr[c] * s * (1.f + v * (1.f - s));
          }
        } else {
          for (int c = c0; c < c1; c++) d[c - c0] = dyr[c];
        }
      }
      // dx[t] = Σ_j w[j] dz[t+j]; dhalo[i] (time i−(K−1)) likewise; dw[j] += dz[t] x[t−j].
      for (int64_t t = -(K - 1); t < T; t++) {
        float* out = t >= 0 ? dx + (static_cast<int64_t>(b) * T + t) * C
                            : (dhalo ? dhalo + (static_cast<int64_t>(b) * (K - 1) + (t + K - 1)) * C : nullptr);
        if (!out) continue;
        for (int c = c0; c < c1; c++) out[c] = 0.f;
        for (int j = 0; j < K; j++) {
          if (t + j < 0 || t + j >= T) continue;
          const float* wj = w + static_cast<int64_t>(j) * C;
          const float* d = dz.data() + (t + j) * n;
          for (int c = c0; c < c1; c++) out[c] += wj[c] * d[c - c0];
        }
      }
      for (int j = 0; j < K; j++)
        for (int64_t t = 0; t < T; t++) {
          const float* xr = row(x, halo, T, C, K, b, t - j);
          if (!xr) continue;
          const float* d = dz.data() + t * n;
          double* acc = dwAcc.data() + static_cast<size_t>(j) * n;
          for (int c = c0; c < c1; c++) acc[c - c0] += static_cast<double>(d[c - c0]) * xr[c];
        }
    }
    for (int j = 0; j < K; j++)
      for (int c = c0; c < c1; c++) dw[static_cast<int64_t>(j) * C + c] = static_cast<float>(dwAcc[static_cast<size_t>(j) * n + (c - c0)]);
  });
}

}  // namespace lasp
