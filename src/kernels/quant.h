// Row conversion between f32 and every storage type (weights and KV).
// n must be a multiple of the type's block size (callers check shapes at load time).
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace kvserve::kernels {

void dequantize_row(DType t, const void* src, float* dst, int64_t n);
// Quantizes as llama.cpp's reference quantizers do (q8_0: d = amax/127, round to nearest;
// q4_0: d = max/-8 with the signed max, q = clamp(round(x/d) + 8, 0, 15)). Supported for
// f32, f16, bf16, q8_0, q4_0; q4_k/q6_k are dequantize-only.
void quantize_row(DType t, const float* src, void* dst, int64_t n);
bool can_quantize(DType t);

}  // namespace kvserve::kernels
