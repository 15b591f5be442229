// KV element types: names, exact sizes, codec error bounds, and the q4 K staging lifecycle.
#include "kv/kv_type.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kv/kv_planner.h"
#include "kv/kv_quant.h"
#include "kv/kv_storage.h"

namespace kvserve {
namespace {

constexpr KvType kAllTypes[] = {KvType::kF32, KvType::kF16, KvType::kBF16,
                                KvType::kQ8,  KvType::kFP8, KvType::kQ4};

TEST(KvType, NamesRoundTripAndAliases) {
  for (KvType t : kAllTypes) EXPECT_EQ(kv_type_from_name(kv_type_name(t)), t);
  EXPECT_EQ(kv_type_from_name("fp8-e4m3"), KvType::kFP8);
  EXPECT_EQ(kv_type_from_name("e4m3"), KvType::kFP8);
  EXPECT_FALSE(kv_type_from_name("q8_0").has_value());
  EXPECT_FALSE(kv_type_from_name("int4").has_value());
  EXPECT_FALSE(kv_type_from_name("").has_value());
  EXPECT_NE(std::string(kv_type_list()).find("fp8"), std::string::npos);
}

// Exact bytes per token for known shapes (K + V, all layers; scales and q4 headers included).
TEST(KvType, BytesPerTokenExact) {
  KvLayout l;  // smollm-135m: 30 layers, 3 kv heads, head_dim 64
  l.n_layer = 30;
  l.n_head_kv = 3;
  l.head_dim = 64;
  l.block_size = 16;
  auto bpt = [&](KvType k, KvType v, int bs) {
    l.k_type = k;
    l.v_type = v;
    l.block_size = bs;
    return l.bytes_per_token();
  };
  EXPECT_EQ(bpt(KvType::kF32, KvType::kF32, 16), 30 * 3 * 2 * 256.0);
  EXPECT_EQ(bpt(KvType::kF16, KvType::kF16, 16), 30 * 3 * 2 * 128.0);
  EXPECT_EQ(bpt(KvType::kBF16, KvType::kBF16, 16), 30 * 3 * 2 * 128.0);
  EXPECT_EQ(bpt(KvType::kQ8, KvType::kQ8, 16), 30 * 3 * 2 * 66.0);  // 64 int8 + fp16 scale
  EXPECT_EQ(bpt(KvType::kFP8, KvType::kFP8, 16), 30 * 3 * 2 * 66.0);
  // q4 K: 32 nibble bytes + (64 scales + 64 mins) * 2 bytes / block_size; q4 V: 32 + 4.
  EXPECT_EQ(bpt(KvType::kQ4, KvType::kQ4, 16), 30 * 3 * (48.0 + 36.0));
  EXPECT_EQ(bpt(KvType::kQ4, KvType::kQ4, 32), 30 * 3 * (40.0 + 36.0));
  EXPECT_EQ(bpt(KvType::kQ8, KvType::kQ4, 16), 30 * 3 * (66.0 + 36.0));
  // The targets of issue 5: q8 <= 0.53x f16; q4 <= 0.3x f16 with blocks of 32.
  EXPECT_LE(bpt(KvType::kQ8, KvType::kQ8, 16) / bpt(KvType::kF16, KvType::kF16, 16), 0.53);
  EXPECT_LE(bpt(KvType::kQ4, KvType::kQ4, 32) / bpt(KvType::kF16, KvType::kF16, 32), 0.30);
  EXPECT_GT(bpt(KvType::kQ4, KvType::kQ4, 16) / bpt(KvType::kF16, KvType::kF16, 16), 0.30);
  // A block size that does not divide the header: fractional and exact.
  EXPECT_DOUBLE_EQ(bpt(KvType::kQ4, KvType::kF16, 3), 30 * 3 * ((256.0 + 3 * 32) / 3 + 128.0));
  EXPECT_EQ(l.bytes_per_block(), static_cast<size_t>(30 * 3 * ((256 + 3 * 32) + 3 * 128)));

  // stories260K: 5 layers, 4 kv heads, head_dim 8 (q4 groups of 8 channels, pair packing).
  KvLayout s;
  s.n_layer = 5;
  s.n_head_kv = 4;
  s.head_dim = 8;
  s.block_size = 16;
  s.k_type = s.v_type = KvType::kQ4;
  EXPECT_EQ(s.bytes_per_token(), 5 * 4 * ((32 + 16 * 4) / 16.0 + 8.0));
  s.k_type = s.v_type = KvType::kQ8;
  EXPECT_EQ(s.bytes_per_token(), 5 * 4 * 2 * 10.0);

  // The planner reports the same numbers, K and V separately.
  KvPlanInput in;
  in.n_layer = 30;
  in.n_head_kv = 3;
  in.head_dim = 64;
  in.block_size = 32;
  in.kv_type_k = KvType::kQ4;
  in.kv_type_v = KvType::kQ8;
  const KvPlan p = plan_kv(in);
  EXPECT_DOUBLE_EQ(p.bytes_per_token_k, 30 * 3 * 40.0);
  EXPECT_DOUBLE_EQ(p.bytes_per_token_v, 30 * 3 * 66.0);
  EXPECT_DOUBLE_EQ(p.bytes_per_token, 30 * 3 * 106.0);
}

TEST(KvType, UnsupportedCombinationsAreRefusedWithAMessage) {
  Status odd = kv_type_check(KvType::kQ4, KvRole::kK, 7, 16);
  EXPECT_EQ(odd.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(odd.message().find("even head_dim"), std::string::npos) << odd.message();
  Status group = kv_type_check(KvType::kQ4, KvRole::kV, 80, 16);
  EXPECT_EQ(group.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(group.message().find("groups of 64"), std::string::npos) << group.message();
  EXPECT_TRUE(kv_type_check(KvType::kQ4, KvRole::kK, 80, 16).is_ok());  // per channel: any even
  EXPECT_TRUE(kv_type_check(KvType::kQ4, KvRole::kV, 128, 16).is_ok());
  EXPECT_TRUE(kv_type_check(KvType::kQ4, KvRole::kV, 8, 16).is_ok());
  EXPECT_TRUE(kv_type_check(KvType::kQ8, KvRole::kK, 7, 1).is_ok());
  EXPECT_FALSE(kv_type_check(KvType::kF16, KvRole::kK, 64, 0).is_ok());
  KvLayout l;
  l.n_layer = 1;
  l.n_head_kv = 1;
  l.head_dim = 6;
  l.v_type = KvType::kQ4;  // 6 channels: one group of 6, fine
  EXPECT_TRUE(KvStorage::create(l, 2).is_ok());
  l.head_dim = 5;
  auto r = KvStorage::create(l, 2);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("V cache type q4"), std::string::npos)
      << r.status().message();
}

// fp8 e4m3 against its definition: every code decodes to (1 + m/8) 2^(e-7) or m/8 2^-6, and
// encoding a decoded value gives the code back; never a NaN code; ties to even; saturation.
TEST(KvType, Fp8E4m3CodecMatchesTheFormat) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f) continue;  // NaN codes
    const int e = (b >> 3) & 0xf, m = b & 7;
    const double mag =
        e == 0 ? m / 8.0 * std::ldexp(1.0, -6) : (1 + m / 8.0) * std::ldexp(1.0, e - 7);
    const float want = static_cast<float>(b & 0x80 ? -mag : mag);
    ASSERT_EQ(fp8_e4m3_decode(static_cast<uint8_t>(b)), want) << b;
    ASSERT_EQ(fp8_e4m3_encode(want), b) << b;
  }
  EXPECT_EQ(fp8_e4m3_encode(448.0f), 0x7e);
  EXPECT_EQ(fp8_e4m3_encode(1e30f), 0x7e);
  EXPECT_EQ(fp8_e4m3_encode(-INFINITY), 0xfe);
  EXPECT_EQ(fp8_e4m3_encode(NAN), 0);
  EXPECT_EQ(fp8_e4m3_encode(1.0625f), 0x38);             // between 1 (m 0) and 1.125: even
  EXPECT_EQ(fp8_e4m3_encode(1.1875f), 0x3a);             // between 1.125 and 1.25 (m 2)
  EXPECT_EQ(fp8_e4m3_encode(std::ldexp(1.0f, -10)), 0);  // half the smallest subnormal
  EXPECT_EQ(fp8_e4m3_encode(std::ldexp(3.0f, -10)), 2);  // 1.5 steps: even
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1000.0f, 1000.0f);
  for (int i = 0; i < 100000; ++i) {
    const uint8_t b = fp8_e4m3_encode(u(rng) * std::ldexp(1.0f, static_cast<int>(rng() % 40) - 30));
    ASSERT_NE(b & 0x7f, 0x7f);
  }
}

// Round-trip error bounds per type on random rows of mixed magnitudes (x = dequantized):
//   f32 exact; f16 |x - x'| <= 2^-11 |x|; bf16 <= 2^-8 |x|;
//   q8   <= absmax / 254 (1 + 2^-10)                       (absmax of the row)
//   fp8  <= 2^-4 |x| + 2^-10 absmax / 448                   (relative, plus subnormal steps)
//   q4 V <= range / 30 (1 + 2^-9) + 2^-10 max|x| per group  (range = max - min of the group)
//   q4 K the same bound per channel over the block's tokens.
// The 2^-10 / 2^-9 terms are the fp16 rounding of the stored scales and mins.
TEST(KvType, RoundTripErrorBounds) {
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (int hd : {8, 16, 64, 128}) {
    for (KvType t : kAllTypes) {
      SCOPED_TRACE(std::string(kv_type_name(t)) + " hd " + std::to_string(hd));
      const size_t stride = kv_row_stride(t, KvRole::kV, hd);
      for (int trial = 0; trial < 200; ++trial) {
        const float mag = std::ldexp(1.0f, static_cast<int>(rng() % 16) - 8);
        std::vector<float> x(hd);
        for (float& v : x) v = n(rng) * mag + (trial % 3 == 0 ? 2 * mag : 0.0f);
        std::vector<uint8_t> row(stride);
        kv_encode_row(t, x.data(), row.data(), hd);
        float amax = 0;
        for (float v : x) amax = std::max(amax, std::fabs(v));
        const int g = q4_group(hd);
        for (int c = 0; c < hd; ++c) {
          const float y = kv_decode(t, row.data(), hd, c);
          const float err = std::fabs(y - x[c]);
          float bound = 0;
          switch (t) {
            case KvType::kF32:
              bound = 0;
              break;
            case KvType::kF16:  // plus half a subnormal step
              bound = std::ldexp(std::fabs(x[c]), -11) + std::ldexp(1.0f, -25);
              break;
            case KvType::kBF16:
              bound = std::ldexp(std::fabs(x[c]), -8);
              break;
            case KvType::kQ8:
              bound = amax / 254 * (1 + 1.0f / 1024);
              break;
            case KvType::kFP8:
              bound = std::ldexp(std::fabs(x[c]), -4) + std::ldexp(amax / 448, -10);
              break;
            case KvType::kQ4: {
              const int g0 = c / g * g;
              float lo = x[g0], hi = x[g0], gmax = 0;
              for (int i = g0; i < g0 + g; ++i) {
                lo = std::min(lo, x[i]);
                hi = std::max(hi, x[i]);
                gmax = std::max(gmax, std::fabs(x[i]));
              }
              bound = (hi - lo) / 30 * (1 + 1.0f / 512) + std::ldexp(gmax, -10);
              break;
            }
          }
          ASSERT_LE(err, bound) << "c " << c << " x " << x[c] << " y " << y;
        }
      }
    }
  }
}

// A NaN or infinite activation never makes a quantized row decode to NaN or inf (codes are
// saturated, NaN elements become 0), and the other elements keep a valid scale.
TEST(KvType, NonFiniteInputsGiveFiniteCodes) {
  for (KvType t : {KvType::kQ8, KvType::kFP8, KvType::kQ4}) {
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      for (int pos : {0, 5}) {
        std::vector<float> x = {0.5f, -1.0f, 0.25f, 2.0f, -0.125f, 1.5f, 0.75f, -2.0f};
        x[pos] = bad;
        std::vector<uint8_t> row(kv_row_stride(t, KvRole::kV, 8));
        kv_encode_row(t, x.data(), row.data(), 8);
        for (int c = 0; c < 8; ++c) {
          ASSERT_TRUE(std::isfinite(kv_decode(t, row.data(), 8, c)))
              << kv_type_name(t) << " bad " << bad << " at " << pos << " c " << c;
        }
      }
    }
  }
}

TEST(KvType, Q4KTileErrorBoundPerChannel) {
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (int hd : {8, 64}) {
    for (int bs : {1, 3, 16, 32}) {
      std::vector<uint16_t> rows(static_cast<size_t>(bs) * hd);
      std::vector<float> x(rows.size());
      for (size_t i = 0; i < rows.size(); ++i) {
        rows[i] = fp32_to_fp16(n(rng) * (1 + static_cast<float>(i % hd)));  // per-channel scale
        x[i] = fp16_to_fp32(rows[i]);
      }
      std::vector<uint8_t> tile(kv_tile_bytes(KvType::kQ4, KvRole::kK, hd, bs));
      kv_encode_q4k_tile(rows.data(), bs, hd, tile.data());
      for (int c = 0; c < hd; ++c) {
        float lo = x[c], hi = x[c], m = 0;
        for (int t = 0; t < bs; ++t) {
          lo = std::min(lo, x[t * hd + c]);
          hi = std::max(hi, x[t * hd + c]);
          m = std::max(m, std::fabs(x[t * hd + c]));
        }
        for (int t = 0; t < bs; ++t) {
          const float err = std::fabs(kv_decode_q4k(tile.data(), hd, t, c) - x[t * hd + c]);
          ASSERT_LE(err, (hi - lo) / 30 * (1 + 1.0f / 512) + std::ldexp(m, -10))
              << "hd " << hd << " bs " << bs << " t " << t << " c " << c;
        }
      }
    }
  }
}

// q4 K: rows live in f16 staging until the block is full, then in the quantized tile; staging
// is released when every layer is quantized, when the block is freed, and copied with the block.
TEST(KvStorageQ4, StagingLifecycle) {
  KvLayout l;
  l.n_layer = 2;
  l.n_head_kv = 2;
  l.head_dim = 16;
  l.block_size = 4;
  l.k_type = KvType::kQ4;
  l.v_type = KvType::kQ8;
  auto r = KvStorage::create(l, 6);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  KvStorage& kv = **r;
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> u(-1, 1);
  auto write = [&](BlockId b, int slot) {
    std::vector<float> k(32), v(32);
    for (auto& x : k) x = u(rng);
    for (auto& x : v) x = u(rng);
    for (int layer = 0; layer < 2; ++layer) kv.write_token(layer, b, slot, k.data(), v.data());
    return k;
  };
  EXPECT_EQ(kv.n_staged_blocks(), 0);
  std::vector<std::vector<float>> ks;
  for (int s = 0; s < 3; ++s) ks.push_back(write(1, s));
  EXPECT_EQ(kv.n_staged_blocks(), 1);
  KvTileView view = kv.k_view(0, 1, 1);
  EXPECT_EQ(view.type, KvType::kF16);
  EXPECT_EQ(view.stride, 32u);
  EXPECT_EQ(load_f16(view.rows + 32 + 2 * 3), fp16_to_fp32(fp32_to_fp16(ks[1][16 + 3])));
  // A copy-on-write copy of the partial block takes its staging with it.
  kv.copy_block(1, 4);
  EXPECT_EQ(kv.n_staged_blocks(), 2);
  EXPECT_EQ(0, std::memcmp(kv.k_view(1, 4, 0).rows, kv.k_view(1, 1, 0).rows, 3 * 32));
  // The last slot quantizes every layer; the staging goes.
  ks.push_back(write(1, 3));
  EXPECT_EQ(kv.n_staged_blocks(), 1);
  view = kv.k_view(1, 1, 0);
  EXPECT_EQ(view.type, KvType::kQ4);
  EXPECT_EQ(view.header, kv.k_tile(1, 1, 0));
  EXPECT_EQ(view.stride, 8u);
  for (int t = 0; t < 4; ++t) {
    for (int c = 0; c < 16; ++c) {
      EXPECT_NEAR(kv_decode_q4k(kv.k_tile(1, 1, 0), 16, t, c), ks[t][c], 2.0 / 30 + 1e-3);
    }
  }
  // Freeing the copy releases its staging; the slot is reused (last in, first out).
  kv.on_block_freed(4);
  EXPECT_EQ(kv.n_staged_blocks(), 0);
  write(2, 0);
  write(3, 0);
  EXPECT_EQ(kv.n_staged_blocks(), 2);
  EXPECT_EQ(kv.staging_slots_touched(), 2);
  kv.on_block_freed(2);
  kv.on_block_freed(3);
  EXPECT_EQ(kv.n_staged_blocks(), 0);
  // Rewriting a slot of a full block goes back to staging, seeded from the tile.
  const float before = kv_decode_q4k(kv.k_tile(0, 1, 0), 16, 2, 5);
  write(1, 0);
  EXPECT_EQ(kv.k_view(0, 1, 0).type, KvType::kF16);
  EXPECT_EQ(load_f16(kv.k_view(0, 1, 0).rows + 2 * (2 * 16 + 5)),
            fp16_to_fp32(fp32_to_fp16(before)));
  EXPECT_EQ(kv.n_staged_blocks(), 1);
  kv.on_block_freed(1);
  EXPECT_EQ(kv.n_staged_blocks(), 0);
  kv.on_block_freed(1);  // freeing a block without staging is harmless
  EXPECT_EQ(kv.n_staged_blocks(), 0);
  // A full block released to the prefix cache keeps its tile; a copy of it written into (CoW)
  // re-stages every row from the tile, so the rows not rewritten stay the cached ones.
  for (int s = 0; s < 4; ++s) write(5, s);
  kv.on_block_freed(5);
  EXPECT_EQ(kv.k_view(1, 5, 1).type, KvType::kQ4);
  kv.copy_block(5, 0);
  write(0, 1);
  const KvTileView staged = kv.k_view(1, 0, 1);
  ASSERT_EQ(staged.type, KvType::kF16);
  EXPECT_EQ(load_f16(staged.rows + 2 * (2 * 16 + 7)),
            fp16_to_fp32(fp32_to_fp16(kv_decode_q4k(kv.k_tile(1, 5, 1), 16, 2, 7))));
  kv.on_block_freed(0);
  EXPECT_EQ(kv.n_staged_blocks(), 0);
}

}  // namespace
}  // namespace kvserve
