// argmax over AVX2 lanes (kernels/reduce.h); compiled with the avx2 flags.
#include <immintrin.h>

#include <cmath>

#include "kernels/reduce_impl.h"

namespace kvserve::kernels::reduce_detail {

// Requires n >= 32 and x[0] not NaN.
int32_t argmax_avx2(const float* x, int n) {
  constexpr int kAcc = 4, kW = 8 * kAcc;
  __m256 best[kAcc];
  __m256 round[kAcc];  // int32 rounds, blended as floats
  for (int k = 0; k < kAcc; ++k) {
    best[k] = _mm256_set1_ps(-INFINITY);
    round[k] = _mm256_setzero_ps();
  }
  __m256i r = _mm256_setzero_si256();
  const __m256i one = _mm256_set1_epi32(1);
  int i = 0;
  for (; i + kW <= n; i += kW) {
    const __m256 rf = _mm256_castsi256_ps(r);
    for (int k = 0; k < kAcc; ++k) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * k);
      const __m256 gt = _mm256_cmp_ps(v, best[k], _CMP_GT_OQ);
      best[k] = _mm256_blendv_ps(best[k], v, gt);
      round[k] = _mm256_blendv_ps(round[k], rf, gt);
    }
    r = _mm256_add_epi32(r, one);
  }
  alignas(32) float val[kW];
  alignas(32) int32_t rnd[kW];
  for (int k = 0; k < kAcc; ++k) {
    _mm256_store_ps(val + 8 * k, best[k]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(rnd + 8 * k), _mm256_castps_si256(round[k]));
  }
  return argmax_scalar(x, n, i, reduce_lanes(val, rnd, kW));
}

}  // namespace kvserve::kernels::reduce_detail
