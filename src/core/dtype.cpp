#include "core/dtype.h"

#include <cmath>

#include "core/assert.h"

namespace kvserve {

namespace {
constexpr DTypeInfo kF32{"f32", 1, 4};
constexpr DTypeInfo kF16{"f16", 1, 2};
constexpr DTypeInfo kBF16{"bf16", 1, 2};
constexpr DTypeInfo kQ8_0{"q8_0", kQK8_0, sizeof(BlockQ8_0)};
constexpr DTypeInfo kQ4_0{"q4_0", kQK4_0, sizeof(BlockQ4_0)};
constexpr DTypeInfo kQ4_K{"q4_k", kQK_K, sizeof(BlockQ4_K)};
constexpr DTypeInfo kQ6_K{"q6_k", kQK_K, sizeof(BlockQ6_K)};
constexpr DType kAllDTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                                DType::kQ4_0, DType::kQ4_K, DType::kQ6_K};
}  // namespace

std::optional<DTypeInfo> dtype_info(uint32_t id) {
  for (DType t : kAllDTypes) {
    if (static_cast<uint32_t>(t) == id) return dtype_info(t);
  }
  return std::nullopt;
}

const DTypeInfo& dtype_info(DType t) {
  switch (t) {
    case DType::kF32: return kF32;
    case DType::kF16: return kF16;
    case DType::kBF16: return kBF16;
    case DType::kQ8_0: return kQ8_0;
    case DType::kQ4_0: return kQ4_0;
    case DType::kQ4_K: return kQ4_K;
    case DType::kQ6_K: return kQ6_K;
  }
  KV_ASSERT(false && "unknown dtype");
  return kF32;
}

std::optional<DType> dtype_from_name(std::string_view n) {
  for (DType t : kAllDTypes) {
    if (n == dtype_info(t).name) return t;
  }
  return std::nullopt;
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: value = mant * 2^-24
      float f = std::ldexp(static_cast<float>(mant), -24);
      std::memcpy(&u, &f, 4);
      u |= sign;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t fp32_to_fp16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0);  // inf / nan
  if (ax >= 0x477ff000u) return sign | 0x7c00;                                     // overflow
  if (ax < 0x38800000u) {  // subnormal or zero in half
    float a;
    std::memcpy(&a, &ax, 4);
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));  // a / 2^-24
  }
  uint32_t r = ax - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);  // round to nearest even
  return sign | static_cast<uint16_t>(r >> 13);
}

uint16_t fp32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 64);  // quiet nan
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace kvserve
