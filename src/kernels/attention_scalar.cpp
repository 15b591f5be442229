#include <algorithm>
#include <cmath>

#include "kernels/attention_impl.h"
#include "kv/kv_quant.h"

namespace kvserve::kernels {

namespace {

// Reference loops for any head_dim and type: each element is decoded with the scalar codecs.
// q4 K scores use the same algebra as the SIMD loops: q'[c] = q[c] * scale[c], c0 = q . min,
// score = (q' . nibbles + c0) * scale.
void scores(const float* q, int n_gqa, const uint8_t* k, const uint8_t* k_header, KvType type,
            int n, int hd, float scale, float* s, int s_stride, AttnPrefetch pf) {
  prefetch_now(pf);  // slow enough loops: one burst is in time
  const size_t stride = kv_row_stride(type, KvRole::kK, hd);
  for (int t = 0; t < n; ++t) {
    const uint8_t* row = k + static_cast<size_t>(t) * stride;
    for (int h = 0; h < n_gqa; ++h) {
      const float* qh = q + h * hd;
      float acc = 0;
      if (type == KvType::kQ4) {
        float c0 = 0;
        for (int e = 0; e < hd; ++e) {
          int byte, shift;
          q4_nibble(e, hd, &byte, &shift);
          acc +=
              qh[e] * load_f16(k_header + 2 * e) * static_cast<float>((row[byte] >> shift) & 0xf);
          c0 += qh[e] * load_f16(k_header + 2 * (hd + e));
        }
        acc += c0;
      } else if (type == KvType::kQ8 || type == KvType::kFP8) {
        for (int e = 0; e < hd; ++e) {
          acc += qh[e] * (type == KvType::kQ8 ? static_cast<float>(static_cast<int8_t>(row[e]))
                                              : fp8_e4m3_decode(row[e]));
        }
        acc *= load_f16(row + hd);
      } else {
        for (int e = 0; e < hd; ++e) acc += qh[e] * kv_decode(type, row, hd, e);
      }
      s[h * s_stride + t] = acc * scale;
    }
  }
}

void accum(const float* p, int p_stride, int n_gqa, const uint8_t* v, KvType type, int n, int hd,
           float* out, AttnPrefetch pf) {
  prefetch_now(pf);  // slow enough loops: one burst is in time
  const size_t stride = kv_row_stride(type, KvRole::kV, hd);
  for (int t = 0; t < n; ++t) {
    const uint8_t* row = v + static_cast<size_t>(t) * stride;
    for (int h = 0; h < n_gqa; ++h) {
      for (int e = 0; e < hd; ++e)
        out[h * hd + e] += p[h * p_stride + t] * kv_decode(type, row, hd, e);
    }
  }
}

float exp_sum(float* x, int n, float m) {
  float sum = 0;
  for (int i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - m));
  return sum;
}

float max_of(const float* x, int n) {
  return *std::max_element(x, x + n);
}

}  // namespace

const AttnTileFns& attn_tile_fns_scalar() {
  static const AttnTileFns fns{scores, accum, exp_sum, max_of};
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
