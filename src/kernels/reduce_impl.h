// Per-ISA pieces of kernels/reduce.h, compiled with their own flags (reduce_avx2.cpp,
// reduce_avx512.cpp) and chosen at run time by reduce.cpp. No intrinsics here.
#pragma once

#include <cstdint>

namespace kvserve::kernels::reduce_detail {

// The loop argmax over x[from, n), starting from best.
int32_t argmax_scalar(const float* x, int n, int from, int32_t best);
// The first index of the maximum among w lanes, lane j having last improved in round round[j]
// (element round[j] * w + j); see reduce.cpp.
int32_t reduce_lanes(const float* val, const int32_t* round, int w);
int32_t argmax_avx2(const float* x, int n);    // n >= 32, x[0] not NaN
int32_t argmax_avx512(const float* x, int n);  // n >= 64, x[0] not NaN

}  // namespace kvserve::kernels::reduce_detail
