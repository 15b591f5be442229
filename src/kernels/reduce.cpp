#include "kernels/reduce.h"

#include <algorithm>
#include <cmath>

#include "kernels/attention_impl.h"
#include "kernels/reduce_impl.h"

namespace kvserve::kernels {

namespace reduce_detail {

int32_t argmax_scalar(const float* x, int n, int from, int32_t best) {
  for (int i = from; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

// The SIMD scans keep w lanes (several registers side by side): lane j sees x[j], x[j + w],
// x[j + 2w], ... and keeps the largest (ordered > : NaN never replaces) with the round r in
// which it first saw it, i.e. element r * w + j. The first index of the maximum of the scanned
// part is then the smallest such index among the lanes holding the maximum, as in the loop.
// A lane still at -inf saw only -inf and NaN and is never picked (not > m, nor at an index
// < 0); if all are, every scanned element is -inf or NaN and, x[0] not being NaN, the answer
// is 0. The caller finishes the tail with the loop.
int32_t reduce_lanes(const float* val, const int32_t* round, int w) {
  float m = -INFINITY;
  int32_t best = 0;
  for (int j = 0; j < w; ++j) {
    const int32_t i = round[j] * w + j;
    if (val[j] > m || (val[j] == m && i < best)) {
      m = val[j];
      best = i;
    }
  }
  return best;
}

}  // namespace reduce_detail

int32_t argmax(const float* x, int n, CpuLevel level) {
  if (n <= 1 || std::isnan(x[0])) return 0;
  level = std::min(level, cpu_level());
  if (level == CpuLevel::kAvx512 && n >= 64) return reduce_detail::argmax_avx512(x, n);
  if (level >= CpuLevel::kAvx2 && n >= 32) return reduce_detail::argmax_avx2(x, n);
  return reduce_detail::argmax_scalar(x, n, 1, 0);
}

int32_t argmax(const float* x, int n) {
  return argmax(x, n, cpu_level());
}

float exp_shift_sum(float* x, int n, float m) {
  if (n <= 0) return 0.0f;
  // 16 divides every vector width, so this is the CPU's widest exp.
  return attn_tile_fns(cpu_level(), 16).exp_sum(x, n, m);
}

}  // namespace kvserve::kernels
