// Elementwise math shared by the kernels: a fast float exp that the compiler can vectorise,
// and exp of a double argument rounded to float without losing the argument's precision.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace lasp {

// e^x for float x, relative error about 2 ulp; 0 below -87.3 (no subnormals), +inf above 88.7.
inline float exp_fast(float x) {
  if (x < -87.3f) return 0.f;
  if (x > 88.7f) return __builtin_inff();
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693145751953125f;      // few significant bits: n*kLn2Hi is exact
  const float kLn2Lo = 1.428606765330187045e-06f;
  float n = __builtin_rintf(x * kLog2e);
  float r = (x - n * kLn2Hi) - n * kLn2Lo;  // |r| <= ln2/2
  // Taylor series of e^r to degree 7: truncation error < 6e-9 on |r| <= 0.35.
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  int32_t e = static_cast<int32_t>(n) + 127;
  if (e <= 0) {  // 2^n is subnormal: scale in two steps
    int32_t bits = (e + 64) << 23;
    float s;
    std::memcpy(&s, &bits, 4);
    return p * s * 5.42101086242752217e-20f;  // 2^-64
  }
  int32_t bits = e << 23;
  float s;
  std::memcpy(&s, &bits, 4);
  return p * s;
}

// e^x for a double argument, to float precision: splits x into a float and a small remainder,
// so a large |x| does not lose the argument's low bits (e^(x_hi + x_lo) = e^x_hi (1 + x_lo)).
inline float exp_of_double(double x) {
  float hi = static_cast<float>(x);
  float lo = static_cast<float>(x - static_cast<double>(hi));
  return exp_fast(hi) * (1.f + lo);
}

// out[i] = exp_of_double(x[i]); 8 lanes at a time with AVX2+FMA where the CPU has them.
void exp_double_array(const double* x, float* out, size_t n);

// dst[i] += src[i], vectorised and split over the thread pool for large n.
void add_into(float* dst, const float* src, int64_t n);

}  // namespace lasp
