#include <cmath>

#include "kernels/attention_impl.h"

namespace kvserve::kernels {

namespace {

inline float load(const uint8_t* base, DType type, int i) {
  switch (type) {
    case DType::kF16: return fp16_to_fp32(reinterpret_cast<const uint16_t*>(base)[i]);
    case DType::kBF16: return bf16_to_fp32(reinterpret_cast<const uint16_t*>(base)[i]);
    default: return reinterpret_cast<const float*>(base)[i];
  }
}

size_t elem_bytes(DType type) { return type == DType::kF32 ? 4 : 2; }

void scores(const float* q, int n_gqa, const uint8_t* k, DType type, int n, int hd, float scale,
            float* s, int s_stride) {
  for (int t = 0; t < n; ++t) {
    const uint8_t* row = k + static_cast<size_t>(t) * hd * elem_bytes(type);
    for (int h = 0; h < n_gqa; ++h) {
      float acc = 0;
      for (int e = 0; e < hd; ++e) acc += q[h * hd + e] * load(row, type, e);
      s[h * s_stride + t] = acc * scale;
    }
  }
}

void accum(const float* p, int p_stride, int n_gqa, const uint8_t* v, DType type, int n, int hd,
           float* out) {
  for (int t = 0; t < n; ++t) {
    const uint8_t* row = v + static_cast<size_t>(t) * hd * elem_bytes(type);
    for (int h = 0; h < n_gqa; ++h) {
      for (int e = 0; e < hd; ++e) out[h * hd + e] += p[h * p_stride + t] * load(row, type, e);
    }
  }
}

float exp_sum(float* x, int n, float m) {
  float sum = 0;
  for (int i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - m));
  return sum;
}

}  // namespace

const AttnTileFns& attn_tile_fns_scalar() {
  static const AttnTileFns fns{scores, accum, exp_sum};
  return fns;
}

const AttnTileFns& attn_tile_fns(CpuLevel level, int hd) {
  if (level >= CpuLevel::kAvx512 && hd % 16 == 0 && hd <= 512) {
    if (const AttnTileFns* f = attn_tile_fns_avx512()) return *f;
  }
  if (level >= CpuLevel::kAvx2 && hd % 8 == 0 && hd <= 256) {
    if (const AttnTileFns* f = attn_tile_fns_avx2()) return *f;
  }
  return attn_tile_fns_scalar();
}

}  // namespace kvserve::kernels
