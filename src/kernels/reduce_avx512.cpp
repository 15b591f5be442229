// argmax over AVX512 lanes (kernels/reduce.h); compiled with the avx512 flags.
#include <immintrin.h>

#include <cmath>

#include "kernels/reduce_impl.h"

namespace kvserve::kernels::reduce_detail {

// Requires n >= 64 and x[0] not NaN.
int32_t argmax_avx512(const float* x, int n) {
  constexpr int kAcc = 4, kW = 16 * kAcc;
  __m512 best[kAcc];
  __m512i round[kAcc];
  for (int k = 0; k < kAcc; ++k) {
    best[k] = _mm512_set1_ps(-INFINITY);
    round[k] = _mm512_setzero_si512();
  }
  __m512i r = _mm512_setzero_si512();
  const __m512i one = _mm512_set1_epi32(1);
  int i = 0;
  for (; i + kW <= n; i += kW) {
    for (int k = 0; k < kAcc; ++k) {
      const __m512 v = _mm512_loadu_ps(x + i + 16 * k);
      const __mmask16 gt = _mm512_cmp_ps_mask(v, best[k], _CMP_GT_OQ);
      best[k] = _mm512_mask_mov_ps(best[k], gt, v);
      round[k] = _mm512_mask_mov_epi32(round[k], gt, r);
    }
    r = _mm512_add_epi32(r, one);
  }
  alignas(64) float val[kW];
  alignas(64) int32_t rnd[kW];
  for (int k = 0; k < kAcc; ++k) {
    _mm512_store_ps(val + 16 * k, best[k]);
    _mm512_store_si512(rnd + 16 * k, round[k]);
  }
  return argmax_scalar(x, n, i, reduce_lanes(val, rnd, kW));
}

}  // namespace kvserve::kernels::reduce_detail
