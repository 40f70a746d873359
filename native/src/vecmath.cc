#include "vecmath.h"

#include <immintrin.h>

#include "threadpool.h"

namespace lasp {
namespace {

// 8 lanes of exp_of_double with AVX2+FMA; same reduction and polynomial as exp_fast.
__attribute__((target("avx2,fma"))) void exp_double_array_avx2(const double* x, float* out, size_t n) {
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
  const __m256 ln2hi = _mm256_set1_ps(0.693145751953125f);
  const __m256 ln2lo = _mm256_set1_ps(1.428606765330187045e-06f);
  const __m256 lowest = _mm256_set1_ps(-87.3f), highest = _mm256_set1_ps(88.7f);
  const __m256 one = _mm256_set1_ps(1.f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256d a = _mm256_loadu_pd(x + i), b = _mm256_loadu_pd(x + i + 4);
    const __m128 ha = _mm256_cvtpd_ps(a), hb = _mm256_cvtpd_ps(b);
    const __m128 la = _mm256_cvtpd_ps(_mm256_sub_pd(a, _mm256_cvtps_pd(ha)));
    const __m128 lb = _mm256_cvtpd_ps(_mm256_sub_pd(b, _mm256_cvtps_pd(hb)));
    const __m256 hi = _mm256_set_m128(hb, ha), lo = _mm256_set_m128(lb, la);
    const __m256 xc = _mm256_min_ps(_mm256_max_ps(hi, lowest), highest);
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(xc, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_fnmadd_ps(k, ln2lo, _mm256_fnmadd_ps(k, ln2hi, xc));
    __m256 p = _mm256_set1_ps(1.f / 5040.f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 720.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, one);
    p = _mm256_fmadd_ps(p, r, one);
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    __m256 e = _mm256_mul_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(bits)), _mm256_add_ps(one, lo));
    e = _mm256_and_ps(e, _mm256_cmp_ps(hi, lowest, _CMP_GE_OQ));
    _mm256_storeu_ps(out + i, e);
  }
  for (; i < n; ++i) out[i] = exp_of_double(x[i]);
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

__attribute__((target_clones("avx2", "default"))) void add_span(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace

void add_into(float* dst, const float* src, int64_t n) {
  constexpr int64_t kBlock = 1 << 16;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  parallel_for(static_cast<int>(blocks), [&](int b) {
    const int64_t lo = b * kBlock;
    add_span(dst + lo, src + lo, (n - lo < kBlock ? n - lo : kBlock));
  });
}

void exp_double_array(const double* x, float* out, size_t n) {
  if (cpu_has_avx2()) return exp_double_array_avx2(x, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = exp_of_double(x[i]);
}

}  // namespace lasp
