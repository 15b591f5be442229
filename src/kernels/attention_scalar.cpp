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

void scores(const float* q, const uint8_t* k, DType type, int n, int hd, float scale, float* s) {
  const size_t eb = type == DType::kF32 ? 4 : 2;
  for (int t = 0; t < n; ++t) {
    const uint8_t* row = k + static_cast<size_t>(t) * hd * eb;
    float acc = 0;
    for (int e = 0; e < hd; ++e) acc += q[e] * load(row, type, e);
    s[t] = acc * scale;
  }
}

void accum(const float* p, const uint8_t* v, DType type, int n, int hd, float* out) {
  const size_t eb = type == DType::kF32 ? 4 : 2;
  for (int t = 0; t < n; ++t) {
    const uint8_t* row = v + static_cast<size_t>(t) * hd * eb;
    for (int e = 0; e < hd; ++e) out[e] += p[t] * load(row, type, e);
  }
}

}  // namespace

const AttnTileFns& attn_tile_fns_scalar() {
  static const AttnTileFns fns{scores, accum};
  return fns;
}

const AttnTileFns& attn_tile_fns(CpuLevel level, int hd) {
  if (level >= CpuLevel::kAvx512 && hd % 16 == 0) {
    if (const AttnTileFns* f = attn_tile_fns_avx512()) return *f;
  }
  if (level >= CpuLevel::kAvx2 && hd % 8 == 0) {
    if (const AttnTileFns* f = attn_tile_fns_avx2()) return *f;
  }
  return attn_tile_fns_scalar();
}

}  // namespace kvserve::kernels
