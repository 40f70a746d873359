// Elementwise math shared by the kernels: a fast float exp that the compiler can vectorise,
// and exp of a double argument rounded to float without losing the argument's precision.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace lasp {

// c ? a : b through bit masks: float ternaries do not vectorise under the default -ftrapping-math
// (GCC keeps them as branches), masks do.
inline float select(bool c, float a, float b) {
  const int32_t m = -static_cast<int32_t>(c);
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  const int32_t r = (ia & m) | (ib & ~m);
  float out;
  std::memcpy(&out, &r, 4);
  return out;
}

// e^x for x in [-87.3, 88.7]: x = n ln2 + r with |r| <= ln2/2 (n*kLn2Hi is exact), the Taylor
// series of e^r to degree 7 (truncation error < 6e-9), times 2^n built in the exponent bits
// (n >= -126, so 2^n is normal). Relative error about 2 ulp.
inline float exp_in_range(float x) {
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693145751953125f;
  const float kLn2Lo = 1.428606765330187045e-06f;
  const float n = __builtin_rintf(x * kLog2e);
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

// e^x for float x: 0 below -87.3 (no subnormals), +inf above 88.7.
inline float exp_fast(float x) {
  if (x < -87.3f) return 0.f;
  if (x > 88.7f) return __builtin_inff();
  return exp_in_range(x);
}

// e^x with x clamped to [-87.3, 88.7], without branches, so loops that call it vectorise. Below
// the range it gives 1.2e-38 instead of 0, above it 3.3e38 instead of inf (harmless for sigmoid
// and softmax).
inline float exp_clamped(float x) {
  x = select(x < -87.3f, -87.3f, x);
  x = select(x > 88.7f, 88.7f, x);
  return exp_in_range(x);
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
