#include "kv/kv_quant.h"

#include <algorithm>
#include <cmath>

#include "kernels/ops_impl.h"

namespace kvserve {

namespace {

// fp16 of a scale, clamped to the largest finite half (a larger range saturates instead of
// turning into inf).
uint16_t scale_f16(float d) {
  return fp32_to_fp16(std::min(d, 65504.0f));
}

// Asymmetric 4-bit quantization of n values x[i * step]: writes scale and min as fp16 and
// calls put(i, nibble). Quantizes with the stored (rounded) scale and min, so decoding gives
// the nearest grid point of the grid actually stored.
template <typename Get, typename Put>
void quant4(int n, Get get, uint8_t* scale_out, uint8_t* min_out, Put put) {
  float lo = get(0), hi = lo;
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, get(i));
    hi = std::max(hi, get(i));
  }
  if (!std::isfinite(lo)) lo = std::isnan(lo) ? 0.0f : std::copysign(65504.0f, lo);
  if (!std::isfinite(hi)) hi = std::isnan(hi) ? 0.0f : std::copysign(65504.0f, hi);
  const uint16_t mh = fp32_to_fp16(std::clamp(lo, -65504.0f, 65504.0f));
  const float m = fp16_to_fp32(mh);
  const uint16_t dh = scale_f16(std::max(hi - m, 0.0f) / 15.0f);
  const float d = fp16_to_fp32(dh);
  std::memcpy(scale_out, &dh, 2);
  std::memcpy(min_out, &mh, 2);
  for (int i = 0; i < n; ++i) {
    const float v = d > 0 ? std::nearbyint((get(i) - m) / d) : 0.0f;
    put(i, static_cast<uint8_t>(v >= 0.0f ? std::min(v, 15.0f) : 0.0f));  // NaN -> 0
  }
}

inline void put_nibble(uint8_t* nib, int c, int hd, uint8_t v) {
  int byte, shift;
  q4_nibble(c, hd, &byte, &shift);
  nib[byte] = static_cast<uint8_t>((nib[byte] & ~(0xf << shift)) | (v << shift));
}
inline int get_nibble(const uint8_t* nib, int c, int hd) {
  int byte, shift;
  q4_nibble(c, hd, &byte, &shift);
  return (nib[byte] >> shift) & 0xf;
}

void fp16_row_scalar(const float* x, uint8_t* out, int n) {
  for (int i = 0; i < n; ++i) store_f16(out + 2 * i, x[i]);
}

void bf16_row_scalar(const float* x, uint8_t* out, int n) {
  for (int i = 0; i < n; ++i) {
    const uint16_t h = fp32_to_bf16(x[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

// The vector prefix of a row conversion by the kernel table k (KernelTable::fp16_row or
// bf16_row): how many leading elements it converted (0 without a vector path).
using RowFn = int64_t (*)(const float*, uint8_t*, int64_t);
int vector_prefix(const kernels::KernelTable* k, RowFn kernels::KernelTable::*fn, const float* x,
                  uint8_t* out, int n) {
  const RowFn f = k ? k->*fn : nullptr;
  return f ? static_cast<int>(f(x, out, n)) : 0;
}

// The table for a forced level, capped at what this CPU has.
const kernels::KernelTable* table_for(CpuLevel level) {
  return kernels::kernel_table(std::min(level, cpu_level()));
}

}  // namespace

// The SIMD inner loops live with the other kernels (kernels/ops_avx2.cpp, ops_avx512.cpp),
// dispatched by their tables; the scalar code here converts what they leave.
void fp32_to_fp16_row(const float* x, void* out, int n, CpuLevel level) {
  uint8_t* o = static_cast<uint8_t*>(out);
  const int done = vector_prefix(table_for(level), &kernels::KernelTable::fp16_row, x, o, n);
  fp16_row_scalar(x + done, o + 2 * done, n - done);
}

void fp32_to_fp16_row(const float* x, void* out, int n) {
  uint8_t* o = static_cast<uint8_t*>(out);
  const int done =
      vector_prefix(&kernels::active_kernels(), &kernels::KernelTable::fp16_row, x, o, n);
  fp16_row_scalar(x + done, o + 2 * done, n - done);
}

void fp32_to_bf16_row(const float* x, void* out, int n, CpuLevel level) {
  uint8_t* o = static_cast<uint8_t*>(out);
  const int done = vector_prefix(table_for(level), &kernels::KernelTable::bf16_row, x, o, n);
  bf16_row_scalar(x + done, o + 2 * done, n - done);
}

void fp32_to_bf16_row(const float* x, void* out, int n) {
  uint8_t* o = static_cast<uint8_t*>(out);
  const int done =
      vector_prefix(&kernels::active_kernels(), &kernels::KernelTable::bf16_row, x, o, n);
  bf16_row_scalar(x + done, o + 2 * done, n - done);
}

uint8_t fp8_e4m3_encode(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80);
  float a = std::fabs(x);
  if (std::isnan(a)) return 0;
  if (a >= 448.0f) return sign | 0x7e;  // saturate: 1.75 * 2^8
  if (a < 0.015625f) {                  // below 2^-6: subnormal steps of 2^-9 (8 -> 2^-6 = 0x08)
    return sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f));
  }
  std::memcpy(&u, &a, 4);
  u += 0x7ffffu + ((u >> 20) & 1u);  // round the mantissa to 3 bits, nearest even
  // Rebias the exponent 127 -> 7; a < 448 rounds to at most 448 (code 0x7e).
  return sign | static_cast<uint8_t>((u >> 20) - (120u << 3));
}

float fp8_e4m3_decode(uint8_t b) {
  // The 7 magnitude bits as the top of an f32 exponent/mantissa: 2^-120 times the value for
  // normal and subnormal codes alike.
  const uint32_t u =
      (static_cast<uint32_t>(b & 0x7f) << 20) | (static_cast<uint32_t>(b & 0x80) << 24);
  float f;
  std::memcpy(&f, &u, 4);
  return f * 0x1p120f;
}

void kv_encode_row(KvType t, const float* x, uint8_t* row, int hd) {
  switch (t) {
    case KvType::kF32:
      std::memcpy(row, x, static_cast<size_t>(hd) * 4);
      return;
    case KvType::kF16:
      fp32_to_fp16_row(x, row, hd);
      return;
    case KvType::kBF16:
      fp32_to_bf16_row(x, row, hd);
      return;
    case KvType::kQ8:
    case KvType::kFP8: {
      float amax = 0;
      for (int c = 0; c < hd; ++c) {
        if (std::fabs(x[c]) > amax) amax = std::fabs(x[c]);  // NaN is skipped
      }
      const float qmax = t == KvType::kQ8 ? 127.0f : 448.0f;
      const uint16_t dh = scale_f16(amax / qmax);
      std::memcpy(row + hd, &dh, 2);
      const float d = fp16_to_fp32(dh);
      for (int c = 0; c < hd; ++c) {
        const float v = d > 0 ? x[c] / d : 0.0f;
        if (t == KvType::kQ8) {
          const float q = std::nearbyint(std::clamp(v, -127.0f, 127.0f));
          row[c] = static_cast<uint8_t>(static_cast<int8_t>(std::isnan(q) ? 0.0f : q));
        } else {
          row[c] = fp8_e4m3_encode(v);
        }
      }
      return;
    }
    case KvType::kQ4: {
      const int g = q4_group(hd), ng = hd / g;
      uint8_t* nib = row + 4 * ng;
      for (int j = 0; j < ng; ++j) {
        quant4(
            g, [&](int i) { return x[j * g + i]; }, row + 4 * j, row + 4 * j + 2,
            [&](int i, uint8_t v) { put_nibble(nib, j * g + i, hd, v); });
      }
      return;
    }
  }
}

float kv_decode(KvType t, const uint8_t* row, int hd, int c) {
  switch (t) {
    case KvType::kF32: {
      float f;
      std::memcpy(&f, row + 4 * c, 4);
      return f;
    }
    case KvType::kF16:
      return load_f16(row + 2 * c);
    case KvType::kBF16: {
      uint16_t h;
      std::memcpy(&h, row + 2 * c, 2);
      return bf16_to_fp32(h);
    }
    case KvType::kQ8:
      return load_f16(row + hd) * static_cast<float>(static_cast<int8_t>(row[c]));
    case KvType::kFP8:
      return load_f16(row + hd) * fp8_e4m3_decode(row[c]);
    case KvType::kQ4: {
      const int g = q4_group(hd), j = c / g;
      const uint8_t* nib = row + 4 * (hd / g);
      return load_f16(row + 4 * j + 2) + load_f16(row + 4 * j) * get_nibble(nib, c, hd);
    }
  }
  return 0;
}

void kv_encode_q4k_tile(const uint16_t* rows, int n, int hd, uint8_t* tile) {
  uint8_t* nib = tile + 4 * static_cast<size_t>(hd);
  const size_t stride = static_cast<size_t>(hd) / 2;
  for (int c = 0; c < hd; ++c) {
    quant4(
        n, [&](int t) { return fp16_to_fp32(rows[static_cast<size_t>(t) * hd + c]); }, tile + 2 * c,
        tile + 2 * (hd + c), [&](int t, uint8_t v) { put_nibble(nib + t * stride, c, hd, v); });
  }
}

float kv_decode_q4k(const uint8_t* tile, int hd, int t, int c) {
  const uint8_t* nib = tile + 4 * static_cast<size_t>(hd) + static_cast<size_t>(t) * (hd / 2);
  return load_f16(tile + 2 * (hd + c)) + load_f16(tile + 2 * c) * get_nibble(nib, c, hd);
}

}  // namespace kvserve
