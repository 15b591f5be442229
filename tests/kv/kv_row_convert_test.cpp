// The f16 and bf16 row conversions behind kv_encode_row: every SIMD path gives the scalar
// fp32_to_fp16 / fp32_to_bf16 bits for every input class (rounding ties, overflow, subnormal
// and zero results, infinities, NaNs with payloads) and every row length (vector tails).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "kv/kv_quant.h"

namespace kvserve {
namespace {

constexpr CpuLevel kLevels[] = {CpuLevel::kScalar, CpuLevel::kAvx2, CpuLevel::kAvx512};

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Adds u and its f32 neighbours u - 1 and u + 1 (bit patterns, wrapping at the ends).
void add_with_neighbours(std::vector<uint32_t>& out, uint32_t u) {
  out.push_back(u);
  out.push_back(u - 1);
  out.push_back(u + 1);
}

// Inputs for a 16-bit format whose value h widens to f32 as widen(h): every value, the
// midpoint of every pair of neighbouring values of one sign (the rounding ties, the overflow
// threshold 65520 for f16), each with its +-1 ulp f32 neighbours; every f32 exponent of both
// signs with random mantissas; NaNs with random payloads, quiet and signalling; specials.
template <typename Widen>
std::vector<float> inputs(Widen widen) {
  std::vector<uint32_t> bits;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    add_with_neighbours(bits, to_bits(widen(static_cast<uint16_t>(h))));
    if ((h & 0x7fff) == 0x7fff) continue;  // no next magnitude of the same sign
    const double a = widen(static_cast<uint16_t>(h));
    const double b = widen(static_cast<uint16_t>(h + 1));
    // Exact in f32 for finite neighbours (one more significand bit); the top f16 pair gives
    // (65504 + inf) / 2 = inf, so add the f16 overflow threshold explicitly below.
    add_with_neighbours(bits, to_bits(static_cast<float>((a + b) / 2)));
  }
  add_with_neighbours(bits, to_bits(65520.0f));
  add_with_neighbours(bits, to_bits(-65520.0f));
  std::mt19937 rng(5);
  for (uint32_t sign = 0; sign < 2; ++sign) {
    for (uint32_t e = 0; e < 256; ++e) {
      for (int k = 0; k < 256; ++k) bits.push_back(sign << 31 | e << 23 | (rng() & 0x7fffff));
    }
  }
  for (int k = 0; k < 4096; ++k) {  // NaNs: random payloads, quiet (bit 22) or not
    const uint32_t payload = rng() & 0x7fffff;
    bits.push_back((rng() & 0x80000000u) | 0x7f800000u | (payload ? payload : 1));
  }
  for (uint32_t u : {0x7f800001u, 0x7fbfffffu, 0x7fc00000u, 0x7fc00001u, 0x7fffffffu, 0x7fe00000u,
                     0x7f802000u, 0x7f801fffu, 0x00000001u, 0x007fffffu, 0x00800000u, 0x7f7fffffu,
                     0x33000000u, 0x33000001u, 0x337fffffu, 0x33c00000u, 0x38800000u, 0x387fffffu,
                     0x477fe000u, 0x477fefffu, 0x477ff000u}) {
    bits.push_back(u);
    bits.push_back(u | 0x80000000u);
  }
  std::vector<float> x(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) x[i] = from_bits(bits[i]);
  return x;
}

// Converts x with `convert` at every level in chunks of 1, 2, ..., 40 elements (vector bodies
// and every tail length) and in one call, and compares with the scalar routine element-wise.
template <typename Row, typename Scalar>
void expect_matches_scalar(const std::vector<float>& x, Row convert, Scalar scalar) {
  std::vector<uint16_t> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = scalar(x[i]);
  for (CpuLevel level : kLevels) {
    if (level > cpu_level()) continue;  // the capped call would only repeat a lower level
    SCOPED_TRACE(cpu_level_name(level));
    std::vector<uint16_t> got(x.size(), 0xdead);
    convert(x.data(), got.data(), static_cast<int>(x.size()), level);
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(got[i], want[i]) << "input bits 0x" << std::hex << to_bits(x[i]);
    }
    std::fill(got.begin(), got.end(), 0xdead);
    size_t i = 0;
    for (int len = 1; i < x.size(); len = len % 40 + 1) {
      const int n = static_cast<int>(std::min<size_t>(len, x.size() - i));
      convert(x.data() + i, got.data() + i, n, level);
      i += n;
    }
    for (size_t j = 0; j < x.size(); ++j) {
      ASSERT_EQ(got[j], want[j]) << "input bits 0x" << std::hex << to_bits(x[j]);
    }
  }
}

// A sparse sweep of all 2^32 bit patterns (every 1021st), on top of the targeted inputs.
std::vector<float> sweep() {
  std::vector<float> x;
  x.reserve((1ull << 32) / 1021 + 1);
  for (uint64_t u = 0; u < (1ull << 32); u += 1021)
    x.push_back(from_bits(static_cast<uint32_t>(u)));
  return x;
}

void f16_row(const float* x, uint16_t* out, int n, CpuLevel level) {
  fp32_to_fp16_row(x, out, n, level);
}
void bf16_row(const float* x, uint16_t* out, int n, CpuLevel level) {
  fp32_to_bf16_row(x, out, n, level);
}

TEST(KvRowConvert, F16MatchesScalarOnEveryInputClass) {
  expect_matches_scalar(inputs(fp16_to_fp32), f16_row, fp32_to_fp16);
}

TEST(KvRowConvert, F16MatchesScalarOnBitPatternSweep) {
  expect_matches_scalar(sweep(), f16_row, fp32_to_fp16);
}

TEST(KvRowConvert, Bf16MatchesScalarOnEveryInputClass) {
  expect_matches_scalar(inputs(bf16_to_fp32), bf16_row, fp32_to_bf16);
}

TEST(KvRowConvert, Bf16MatchesScalarOnBitPatternSweep) {
  expect_matches_scalar(sweep(), bf16_row, fp32_to_bf16);
}

// The documented NaN results: f16 drops the payload (sign | 0x7e00), bf16 keeps its top bits
// and sets the quiet bit.
TEST(KvRowConvert, NanResults) {
  const std::vector<float> x = {from_bits(0x7f800001u), from_bits(0xffbfe000u),
                                from_bits(0x7fc12345u), from_bits(0xff812345u)};
  for (CpuLevel level : kLevels) {
    SCOPED_TRACE(cpu_level_name(level));
    std::vector<uint16_t> h(x.size() * 8), b(x.size() * 8);
    std::vector<float> xs;  // 32 elements, so the vector paths see the NaNs too
    for (int r = 0; r < 8; ++r) xs.insert(xs.end(), x.begin(), x.end());
    fp32_to_fp16_row(xs.data(), h.data(), 32, level);
    fp32_to_bf16_row(xs.data(), b.data(), 32, level);
    for (int r = 0; r < 8; ++r) {
      EXPECT_EQ(h[4 * r + 0], 0x7e00);
      EXPECT_EQ(h[4 * r + 1], 0xfe00);
      EXPECT_EQ(h[4 * r + 2], 0x7e00);
      EXPECT_EQ(h[4 * r + 3], 0xfe00);
      EXPECT_EQ(b[4 * r + 0], 0x7fc0);
      EXPECT_EQ(b[4 * r + 1], 0xffff);
      EXPECT_EQ(b[4 * r + 2], 0x7fc1);
      EXPECT_EQ(b[4 * r + 3], 0xffc1);
    }
  }
}

// kv_encode_row writes f16 and bf16 rows as the element-wise scalar routines, at unaligned
// addresses and for head dims with and without a vector tail.
TEST(KvRowConvert, EncodeRowF16Bf16MatchScalar) {
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int hd : {1, 7, 8, 16, 24, 64, 80, 96, 128, 256}) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> x(hd);
      for (float& v : x) v = nd(rng) * std::ldexp(1.0f, static_cast<int>(rng() % 48) - 30);
      if (trial % 4 == 1) x[rng() % hd] = from_bits(0x7f800000u | (rng() & 0x7fffff) | 1);
      std::vector<uint8_t> row(2 * hd + 1);
      for (KvType t : {KvType::kF16, KvType::kBF16}) {
        SCOPED_TRACE(std::string(kv_type_name(t)) + " hd " + std::to_string(hd));
        kv_encode_row(t, x.data(), row.data() + 1, hd);  // odd address
        for (int c = 0; c < hd; ++c) {
          uint16_t got;
          std::memcpy(&got, row.data() + 1 + 2 * c, 2);
          ASSERT_EQ(got, t == KvType::kF16 ? fp32_to_fp16(x[c]) : fp32_to_bf16(x[c])) << c;
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvserve
