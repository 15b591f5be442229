// Row conversion between f32 and the storage types. Scalar reference code: these run at load
// time (quantizing KV or weights) and for embedding lookups, not in the matmul hot path.
#include "kernels/quant.h"

#include <cmath>
#include <cstring>

#include "core/assert.h"

namespace kvserve::kernels {

namespace {

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

void dequant_q8_0(const uint8_t* src, float* dst, int64_t n) {
  const int64_t nb = n / kQK8_0;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = src + b * sizeof(BlockQ8_0);
    const float d = fp16_to_fp32(load_u16(blk));
    const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 2);
    for (int j = 0; j < kQK8_0; ++j) dst[b * kQK8_0 + j] = d * static_cast<float>(qs[j]);
  }
}

void dequant_q4_0(const uint8_t* src, float* dst, int64_t n) {
  const int64_t nb = n / kQK4_0;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = src + b * sizeof(BlockQ4_0);
    const float d = fp16_to_fp32(load_u16(blk));
    const uint8_t* qs = blk + 2;
    float* y = dst + b * kQK4_0;
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      y[j] = d * static_cast<float>((qs[j] & 0x0F) - 8);
      y[j + kQK4_0 / 2] = d * static_cast<float>((qs[j] >> 4) - 8);
    }
  }
}

// Scale and min of sub-block j (0..7) from the 12 packed bytes of a Q4_K super-block:
// bytes 0..3 hold the low 6 bits of scales 0..3, bytes 4..7 the low 6 bits of mins 0..3,
// bytes 8..11 the low 4 bits of scale/min 4..7, and the spare top 2 bits of bytes 0..7 hold the
// high 2 bits of scale/min 4..7.
inline void q4k_scale_min(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void dequant_q4_k(const uint8_t* src, float* dst, int64_t n) {
  const int64_t nb = n / kQK_K;
  for (int64_t b = 0; b < nb; ++b) {
    BlockQ4_K blk;
    std::memcpy(&blk, src + b * sizeof(BlockQ4_K), sizeof(blk));
    const float d = fp16_to_fp32(blk.d);
    const float dmin = fp16_to_fp32(blk.dmin);
    const uint8_t* q = blk.qs;
    float* y = dst + b * kQK_K;
    // Each group of 64 elements uses 32 bytes: low nibbles are sub-block 2g, high nibbles 2g+1.
    for (int g = 0; g < 4; ++g) {
      int sc0, m0, sc1, m1;
      q4k_scale_min(2 * g, blk.scales, &sc0, &m0);
      q4k_scale_min(2 * g + 1, blk.scales, &sc1, &m1);
      const float d0 = d * static_cast<float>(sc0), mm0 = dmin * static_cast<float>(m0);
      const float d1 = d * static_cast<float>(sc1), mm1 = dmin * static_cast<float>(m1);
      for (int l = 0; l < 32; ++l) y[l] = d0 * static_cast<float>(q[l] & 0x0F) - mm0;
      for (int l = 0; l < 32; ++l) y[32 + l] = d1 * static_cast<float>(q[l] >> 4) - mm1;
      q += 32;
      y += 64;
    }
  }
}

void dequant_q6_k(const uint8_t* src, float* dst, int64_t n) {
  const int64_t nb = n / kQK_K;
  for (int64_t b = 0; b < nb; ++b) {
    BlockQ6_K blk;
    std::memcpy(&blk, src + b * sizeof(BlockQ6_K), sizeof(blk));
    const float d = fp16_to_fp32(blk.d);
    const uint8_t* ql = blk.ql;
    const uint8_t* qh = blk.qh;
    const int8_t* sc = blk.scales;
    float* y = dst + b * kQK_K;
    // Two halves of 128 elements; in each, 64 bytes of ql (low 4 bits) and 32 bytes of qh
    // (2 high bits for four elements each) make four runs of 32 with two scales per run.
    for (int h = 0; h < 2; ++h) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

void quant_q8_0(const float* x, uint8_t* dst, int64_t n) {
  const int64_t nb = n / kQK8_0;
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * kQK8_0;
    float amax = 0.0f;
    for (int j = 0; j < kQK8_0; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ8_0 blk;
    blk.d = fp32_to_fp16(d);
    for (int j = 0; j < kQK8_0; ++j) blk.qs[j] = static_cast<int8_t>(std::lround(xb[j] * id));
    std::memcpy(dst + b * sizeof(BlockQ8_0), &blk, sizeof(blk));
  }
}

void quant_q4_0(const float* x, uint8_t* dst, int64_t n) {
  const int64_t nb = n / kQK4_0;
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * kQK4_0;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQK4_0; ++j) {
      if (amax < std::fabs(xb[j])) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ4_0 blk;
    blk.d = fp32_to_fp16(d);
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      // x/d lies in [-8, 8]; +8.5 and truncation rounds to nearest, 16 clamps to 15.
      int q0 = static_cast<int8_t>(xb[j] * id + 8.5f);
      int q1 = static_cast<int8_t>(xb[j + kQK4_0 / 2] * id + 8.5f);
      if (q0 > 15) q0 = 15;
      if (q1 > 15) q1 = 15;
      blk.qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
    std::memcpy(dst + b * sizeof(BlockQ4_0), &blk, sizeof(blk));
  }
}

}  // namespace

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  const uint8_t* s = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, s, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(s + 2 * i));
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(s + 2 * i));
      return;
    case DType::kQ8_0:
      dequant_q8_0(s, dst, n);
      return;
    case DType::kQ4_0:
      dequant_q4_0(s, dst, n);
      return;
    case DType::kQ4_K:
      dequant_q4_k(s, dst, n);
      return;
    case DType::kQ6_K:
      dequant_q6_k(s, dst, n);
      return;
  }
  KV_ASSERT(false && "dequantize_row: unknown type");
}

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
  uint8_t* d = static_cast<uint8_t*>(dst);
  switch (t) {
    case DType::kF32:
      std::memcpy(d, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = fp32_to_fp16(src[i]);
        std::memcpy(d + 2 * i, &h, 2);
      }
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = fp32_to_bf16(src[i]);
        std::memcpy(d + 2 * i, &h, 2);
      }
      return;
    case DType::kQ8_0:
      quant_q8_0(src, d, n);
      return;
    case DType::kQ4_0:
      quant_q4_0(src, d, n);
      return;
    case DType::kQ4_K:
    case DType::kQ6_K:
      break;
  }
  KV_ASSERT(false && "quantize_row: unsupported type");
}

bool can_quantize(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ8_0:
    case DType::kQ4_0:
      return true;
    default:
      return false;
  }
}

}  // namespace kvserve::kernels
