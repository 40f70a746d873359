// Counter-based random numbers: element i of a stream depends only on (seed, i), so any rank
// can generate exactly its slice of a tensor that another process generates whole.
#pragma once
#include <cstdint>

namespace lasp {

// out[i] = scale * N(0,1) draw number (offset + i) of stream `seed`.
void fill_normal(uint64_t seed, uint64_t offset, float scale, float* out, int64_t n);

// out[i] = uniform draw in [lo, hi) number (offset + i) of stream `seed`.
void fill_uniform(uint64_t seed, uint64_t offset, float lo, float hi, float* out, int64_t n);

}  // namespace lasp
