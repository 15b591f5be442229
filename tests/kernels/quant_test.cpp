// Row conversions: fp16/bf16 round trips, quantize -> dequantize error bounds, and hand-made
// q4_k / q6_k blocks.
#include "kernels/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace kvserve::kernels {
namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

TEST(Fp16, RoundTripAllHalves) {
  int checked = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const bool nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff) != 0;
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    if (nan) {
      EXPECT_TRUE(std::isnan(f)) << h;
      continue;
    }
    ASSERT_EQ(fp32_to_fp16(f), h) << "half 0x" << std::hex << h;
    ++checked;
  }
  EXPECT_EQ(checked, 65536 - 2 * 1023);
}

TEST(Fp16, KnownValues) {
  EXPECT_EQ(fp16_to_fp32(0x3C00), 1.0f);
  EXPECT_EQ(fp16_to_fp32(0xC000), -2.0f);
  EXPECT_EQ(fp16_to_fp32(0x7BFF), 65504.0f);
  EXPECT_EQ(fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie -> even
  EXPECT_EQ(fp32_to_fp16(1e6f), 0x7C00);
}

TEST(Bf16, RoundTripAllValues) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const bool nan = ((h >> 7) & 0xff) == 0xff && (h & 0x7f) != 0;
    if (nan) continue;
    ASSERT_EQ(fp32_to_bf16(bf16_to_fp32(static_cast<uint16_t>(h))), h) << h;
  }
}

TEST(Quant, CanQuantize) {
  EXPECT_TRUE(can_quantize(DType::kF32));
  EXPECT_TRUE(can_quantize(DType::kF16));
  EXPECT_TRUE(can_quantize(DType::kBF16));
  EXPECT_TRUE(can_quantize(DType::kQ8_0));
  EXPECT_TRUE(can_quantize(DType::kQ4_0));
  EXPECT_FALSE(can_quantize(DType::kQ4_K));
  EXPECT_FALSE(can_quantize(DType::kQ6_K));
}

std::vector<float> round_trip(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> buf(row_bytes(t, static_cast<int64_t>(x.size())));
  quantize_row(t, x.data(), buf.data(), static_cast<int64_t>(x.size()));
  std::vector<float> y(x.size());
  dequantize_row(t, buf.data(), y.data(), static_cast<int64_t>(x.size()));
  return y;
}

TEST(Quant, F32Exact) {
  const auto x = random_floats(77, 1);
  EXPECT_EQ(round_trip(DType::kF32, x), x);
}

TEST(Quant, F16AndBf16Error) {
  const auto x = random_floats(1000, 2, 100.0f);
  const auto h = round_trip(DType::kF16, x);
  const auto b = round_trip(DType::kBF16, x);
  for (size_t i = 0; i < x.size(); ++i) {
    // Normal halves: relative error <= 2^-11; tiny values: absolute error <= 2^-25.
    EXPECT_LE(std::fabs(h[i] - x[i]), std::fabs(x[i]) * 0x1p-11f + 0x1p-25f) << i;
    EXPECT_LE(std::fabs(b[i] - x[i]), std::fabs(x[i]) * 0x1p-8f) << i;
  }
}

TEST(Quant, Q8_0ErrorBound) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    auto x = random_floats(32 * 9, 100 + seed, seed % 2 ? 0.01f : 30.0f);
    if (seed == 3) std::fill(x.begin(), x.begin() + 32, 0.0f);  // all-zero block
    const auto y = round_trip(DType::kQ8_0, x);
    for (size_t b = 0; b < x.size() / 32; ++b) {
      float amax = 0.0f;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
      // Rounding to the grid costs amax/254; storing d as fp16 adds at most 127 * d * 2^-11.
      const float bound = amax / 254.0f + amax / 2048.0f;
      for (int j = 0; j < 32; ++j)
        ASSERT_LE(std::fabs(y[b * 32 + j] - x[b * 32 + j]), bound) << seed << " " << b << " " << j;
    }
  }
}

TEST(Quant, Q8_0KnownBlock) {
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;
  x[1] = -63.5f;  // rounds half away from zero, as llama.cpp's roundf
  x[2] = 2.4f;
  BlockQ8_0 blk;
  quantize_row(DType::kQ8_0, x.data(), &blk, 32);
  EXPECT_EQ(fp16_to_fp32(blk.d), 1.0f);
  EXPECT_EQ(blk.qs[0], 127);
  EXPECT_EQ(blk.qs[1], -64);
  EXPECT_EQ(blk.qs[2], 2);
  EXPECT_EQ(blk.qs[3], 0);
}

TEST(Quant, Q4_0ErrorBound) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    auto x = random_floats(32 * 7, 200 + seed, seed % 2 ? 0.05f : 10.0f);
    if (seed == 4) std::fill(x.begin() + 32, x.begin() + 64, 0.0f);
    const auto y = round_trip(DType::kQ4_0, x);
    for (size_t b = 0; b < x.size() / 32; ++b) {
      float amax = 0.0f, max = 0.0f;
      for (int j = 0; j < 32; ++j) {
        if (std::fabs(x[b * 32 + j]) > amax) {
          amax = std::fabs(x[b * 32 + j]);
          max = x[b * 32 + j];
        }
      }
      const float d = max / -8.0f;
      for (int j = 0; j < 32; ++j) {
        const float v = x[b * 32 + j];
        // Grid step |max|/8, so rounding costs |max|/16, except that q = 16 (values near
        // -max) is clamped to 15, costing up to one step. fp16 storage of d adds <= 8|d|2^-11.
        const bool clamped = d != 0.0f && v / d + 8.5f >= 16.0f;
        const float bound = (clamped ? amax / 8.0f : amax / 16.0f) + amax / 2048.0f + 1e-7f;
        ASSERT_LE(std::fabs(y[b * 32 + j] - v), bound) << seed << " " << b << " " << j;
      }
    }
  }
}

TEST(Quant, Q4_0KnownBlock) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j % 16) - 7.0f;  // -7..8
  // max |x| is 8 (positive, first at j = 15): d = -1, q = 8 - x.
  BlockQ4_0 blk;
  quantize_row(DType::kQ4_0, x.data(), &blk, 32);
  EXPECT_EQ(fp16_to_fp32(blk.d), -1.0f);
  EXPECT_EQ(blk.qs[0] & 0x0F, 15);  // x = -7 -> 7 * -1 = -7
  EXPECT_EQ(blk.qs[15] & 0x0F, 0);  // x = 8
  EXPECT_EQ(blk.qs[1] >> 4, 14);    // x[17] = -6
  std::vector<float> y(32);
  dequantize_row(DType::kQ4_0, &blk, y.data(), 32);
  EXPECT_EQ(y, x);
}

// --- q4_k: packing written from the format description, then checked against dequantize_row.
struct Q4KSpec {
  float d, dmin;
  int sc[8], m[8];  // 6-bit
  uint8_t q[256];   // 4-bit
};

BlockQ4_K pack_q4k(const Q4KSpec& s) {
  BlockQ4_K b{};
  b.d = fp32_to_fp16(s.d);
  b.dmin = fp32_to_fp16(s.dmin);
  for (int j = 0; j < 4; ++j) {
    b.scales[j] = static_cast<uint8_t>((s.sc[j] & 63) | ((s.sc[j + 4] >> 4) << 6));
    b.scales[j + 4] = static_cast<uint8_t>((s.m[j] & 63) | ((s.m[j + 4] >> 4) << 6));
    b.scales[j + 8] = static_cast<uint8_t>((s.sc[j + 4] & 15) | ((s.m[j + 4] & 15) << 4));
  }
  // Each 32 bytes hold 64 elements: low nibbles first 32, high nibbles next 32.
  for (int i = 0; i < 256; ++i) {
    const int g = i / 64, l = i % 32;
    uint8_t& byte = b.qs[g * 32 + l];
    if ((i % 64) < 32)
      byte = static_cast<uint8_t>((byte & 0xF0) | s.q[i]);
    else
      byte = static_cast<uint8_t>((byte & 0x0F) | (s.q[i] << 4));
  }
  return b;
}

TEST(Quant, Q4_KHandMadeBlock) {
  Q4KSpec s{};
  s.d = 0.5f;
  s.dmin = 0.25f;
  const int sc[8] = {1, 2, 3, 4, 63, 17, 32, 48};
  const int m[8] = {0, 5, 10, 15, 20, 33, 63, 47};
  for (int j = 0; j < 8; ++j) {
    s.sc[j] = sc[j];
    s.m[j] = m[j];
  }
  for (int i = 0; i < 256; ++i) s.q[i] = static_cast<uint8_t>((i * 7 + 3) % 16);
  BlockQ4_K blks[2] = {pack_q4k(s), pack_q4k(s)};
  std::vector<float> y(512);
  dequantize_row(DType::kQ4_K, blks, y.data(), 512);
  for (int i = 0; i < 512; ++i) {
    const int e = i % 256, j = e / 32;
    const float want = s.d * sc[j] * s.q[e] - s.dmin * m[j];
    ASSERT_EQ(y[i], want) << i;
  }
  // A few values by hand: element 0 is q = 3 in sub-block 0: 0.5 * 1 * 3 - 0 = 1.5.
  EXPECT_EQ(y[0], 1.5f);
  // Element 130: sub-block 4 (scale 63, min 20), q = (130 * 7 + 3) % 16 = 1:
  // 0.5 * 63 * 1 - 0.25 * 20 = 26.5.
  EXPECT_EQ(y[130], 26.5f);
  // Element 255: sub-block 7 (scale 48, min 47), q = (255 * 7 + 3) % 16 = 12:
  // 0.5 * 48 * 12 - 0.25 * 47 = 276.25.
  EXPECT_EQ(y[255], 276.25f);
}

// --- q6_k: element i has scale scales[i / 16]; the 6-bit value is split into ql / qh as the
// format lays out 128-element halves.
BlockQ6_K pack_q6k(float d, const int8_t* scales, const uint8_t* q /*256 six-bit*/) {
  BlockQ6_K b{};
  b.d = fp32_to_fp16(d);
  std::memcpy(b.scales, scales, 16);
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, k = (i % 128) / 32, l = i % 32;
    const uint8_t lo = q[i] & 15, hi = q[i] >> 4;
    uint8_t& ql = b.ql[64 * h + l + (k & 1) * 32];
    if (k < 2)
      ql = static_cast<uint8_t>(ql | lo);
    else
      ql = static_cast<uint8_t>(ql | (lo << 4));
    b.qh[32 * h + l] = static_cast<uint8_t>(b.qh[32 * h + l] | (hi << (2 * k)));
  }
  return b;
}

TEST(Quant, Q6_KHandMadeBlock) {
  int8_t sc[16];
  for (int i = 0; i < 16; ++i) sc[i] = static_cast<int8_t>(i * 9 - 70);  // -70..65
  uint8_t q[256];
  for (int i = 0; i < 256; ++i) q[i] = static_cast<uint8_t>((i * 13 + 5) % 64);
  const float d = 0.125f;
  const BlockQ6_K blk = pack_q6k(d, sc, q);
  std::vector<float> y(256);
  dequantize_row(DType::kQ6_K, &blk, y.data(), 256);
  for (int i = 0; i < 256; ++i) ASSERT_EQ(y[i], d * sc[i / 16] * (q[i] - 32)) << i;
  // By hand: element 0: q = 5, scale -70: 0.125 * -70 * (5 - 32) = 236.25.
  EXPECT_EQ(y[0], 236.25f);
  // Element 200: q = (2600 + 5) % 64 = 45, scale sc[12] = 38: 0.125 * 38 * 13 = 61.75.
  EXPECT_EQ(y[200], 61.75f);
}

}  // namespace
}  // namespace kvserve::kernels
