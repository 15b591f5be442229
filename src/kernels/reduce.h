// Reductions over a row of floats that the sampler needs: argmax, and the exponentials of a
// shifted row with their sum (softmax). SIMD paths chosen at run time, as the other kernels.
#pragma once

#include <cstdint>

#include "core/cpu_features.h"

namespace kvserve::kernels {

// Index of the largest value (lowest index on ties), exactly as the loop
// `best = 0; for i in [1, n): if (x[i] > x[best]) best = i`: NaN never wins, a NaN at x[0] gives
// 0, and so does n <= 0 (x is not read then). Uses the best SIMD path of cpu_level(); the
// overload with a level forces a path, capped at cpu_level(), for tests and benchmarks.
int32_t argmax(const float* x, int n);
int32_t argmax(const float* x, int n, CpuLevel level);

// x[i] = exp(x[i] - m) for i in [0, n) (m >= every x[i]: the arguments are <= 0); returns their
// sum. The attention kernels' exponential, so softmax here and in attention round alike.
float exp_shift_sum(float* x, int n, float m);

}  // namespace kvserve::kernels
