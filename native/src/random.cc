#include "random.h"

#include <cmath>

#include "threadpool.h"

namespace lasp {
namespace {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Two independent uniforms in (0, 1] and [0, 1) from one 64-bit hash.
inline void uniforms(uint64_t seed, uint64_t i, double* u1, double* u2) {
  const uint64_t h = splitmix64(splitmix64(seed) ^ (i * 0xD1B54A32D192ED03ull));
  *u1 = (static_cast<double>(h >> 32) + 1.0) * (1.0 / 4294967296.0);
  *u2 = static_cast<double>(h & 0xFFFFFFFFull) * (1.0 / 4294967296.0);
}

template <typename F>
void parallel_fill(int64_t n, F f) {
  constexpr int64_t kBlock = 1 << 16;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  parallel_for(static_cast<int>(blocks), [&](int b) {
    const int64_t lo = b * kBlock, hi = lo + kBlock < n ? lo + kBlock : n;
    for (int64_t i = lo; i < hi; ++i) f(i);
  });
}

}  // namespace

void fill_normal(uint64_t seed, uint64_t offset, float scale, float* out, int64_t n) {
  parallel_fill(n, [&](int64_t i) {
    double u1, u2;
    uniforms(seed, offset + static_cast<uint64_t>(i), &u1, &u2);
    out[i] = static_cast<float>(scale * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  });
}

void fill_uniform(uint64_t seed, uint64_t offset, float lo, float hi, float* out, int64_t n) {
  parallel_fill(n, [&](int64_t i) {
    double u1, u2;
    uniforms(seed, offset + static_cast<uint64_t>(i), &u1, &u2);
    out[i] = static_cast<float>(lo + (static_cast<double>(hi) - lo) * u2);
  });
}

}  // namespace lasp
