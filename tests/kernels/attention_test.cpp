#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/cpu_features.h"
#include "kernels/quant.h"
#include "kv/kv_quant.h"

#include "attention_test_util.h"
#include "kernels/attention_impl.h"
#include "kv/kv_cache_manager.h"

namespace kvserve {
namespace {

// Naive causal attention over contiguous K/V: the reference the paged kernel must match.
void reference_attention(const std::vector<float>& q, const std::vector<float>& k,
                         const std::vector<float>& v, int n_q, int pos0, int n_head, int n_kv,
                         int hd, std::vector<float>& out) {
  out.assign(static_cast<size_t>(n_q) * n_head * hd, 0.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int i = 0; i < n_q; ++i) {
    const int n_ctx = pos0 + i + 1;
    for (int h = 0; h < n_head; ++h) {
      const int g = h / (n_head / n_kv);
      std::vector<double> s(n_ctx);
      double mx = -1e30;
      for (int t = 0; t < n_ctx; ++t) {
        double d = 0;
        for (int e = 0; e < hd; ++e)
          d += static_cast<double>(q[(static_cast<size_t>(i) * n_head + h) * hd + e]) *
               k[(static_cast<size_t>(t) * n_kv + g) * hd + e];
        s[t] = d * scale;
        mx = std::max(mx, s[t]);
      }
      double sum = 0;
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (int e = 0; e < hd; ++e) {
        double acc = 0;
        for (int t = 0; t < n_ctx; ++t)
          acc += s[t] / sum * v[(static_cast<size_t>(t) * n_kv + g) * hd + e];
        out[(static_cast<size_t>(i) * n_head + h) * hd + e] = static_cast<float>(acc);
      }
    }
  }
}

struct Case {
  int block_size, n_head, n_kv, hd, n_ctx, n_q;
};

class AttentionPaged : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionPaged, MatchesContiguousReference) {
  const Case c = GetParam();
  KvLayout layout{1, c.n_kv, c.hd, c.block_size, KvType::kF32, KvType::kF32};
  auto kvr = KvCacheManager::create(layout, (c.n_ctx + c.block_size - 1) / c.block_size + 3);
  ASSERT_TRUE(kvr.is_ok());
  KvCacheManager& kv = **kvr;
  // A decoy sequence first, so the real one's blocks are not 0, 1, 2...
  ASSERT_TRUE(kv.add_sequence(0).is_ok());
  ASSERT_TRUE(kv.reserve(0, 1).is_ok());
  ASSERT_TRUE(kv.add_sequence(1).is_ok());
  ASSERT_TRUE(kv.reserve(1, c.n_ctx).is_ok());
  const BlockTable& table = kv.table(1);

  std::mt19937 rng(c.n_ctx * 31 + c.block_size);
  std::uniform_real_distribution<float> u(-1, 1);
  const test::RandomKv kvs =
      test::write_random_kv(kv.storage(), table, c.n_ctx, c.n_kv * c.hd, c.block_size, rng);
  const int pos0 = c.n_ctx - c.n_q;
  std::vector<float> q(static_cast<size_t>(c.n_q) * c.n_head * c.hd);
  for (auto& x : q) x = u(rng);
  std::vector<float> out(q.size()), ref;
  ThreadPool pool(2);
  kernels::attention_paged(q.data(), nullptr, {{&table, pos0, c.n_q, 0}}, kv.storage(), 0, c.n_head,
                           1.0f / std::sqrt(static_cast<float>(c.hd)), {}, out.data(), pool);
  reference_attention(q, kvs.k, kvs.v, c.n_q, pos0, c.n_head, c.n_kv, c.hd, ref);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5) << i;

  // Decode of the last query alone equals the last row of the chunk, bitwise.
  std::vector<float> last(static_cast<size_t>(c.n_head) * c.hd);
  kernels::attention_paged(q.data() + (q.size() - last.size()), nullptr,
                           {{&table, c.n_ctx - 1, 1, 0}}, kv.storage(), 0, c.n_head,
                           1.0f / std::sqrt(static_cast<float>(c.hd)), {}, last.data(), pool);
  for (size_t i = 0; i < last.size(); ++i) ASSERT_EQ(last[i], out[out.size() - last.size() + i]);
  kv.free_sequence(0);
  kv.free_sequence(1);
  EXPECT_EQ(kv.pool().n_blocks_available(), kv.pool().n_blocks_total());
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionPaged,
                         ::testing::Values(Case{1, 4, 4, 8, 9, 3},     // MHA, block size 1
                                           Case{16, 8, 2, 16, 37, 5},  // GQA 4:1
                                           // GQA, enough queries for tasks of all kv heads
                                           // (decode alone: one task per kv head)
                                           Case{16, 9, 3, 16, 45, 12},
                                           Case{16, 6, 1, 8, 16, 16},    // MQA, exactly one block
                                           Case{256, 4, 2, 64, 300, 7},  // big blocks
                                           Case{3, 2, 2, 4, 10, 1}));    // odd block size, decode

// Every ISA's tile loops agree with the scalar ones, for every KV element type.
TEST(AttentionTiles, SimdLevelsMatchScalar) {
  const int hd = 64, n = 19, n_gqa = 3;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> q(n_gqa * hd), kf(n * hd), p(n_gqa * n);
  for (auto& x : q) x = u(rng);
  for (auto& x : kf) x = u(rng);
  for (auto& x : p) x = u(rng);
  for (KvType t : {KvType::kF32, KvType::kF16, KvType::kBF16}) {
    const size_t stride = kv_row_stride(t, KvRole::kV, hd);
    std::vector<uint8_t> k(stride * n);
    for (int r = 0; r < n; ++r) kv_encode_row(t, kf.data() + r * hd, k.data() + r * stride, hd);
    std::vector<const kernels::AttnTileFns*> levels = {kernels::attn_tile_fns_avx2(),
                                                       kernels::attn_tile_fns_avx512()};
    const auto& ref = kernels::attn_tile_fns_scalar();
    std::vector<float> s_ref(n_gqa * n), o_ref(n_gqa * hd, 0.5f);
    ref.scores(q.data(), n_gqa, k.data(), nullptr, t, n, hd, 0.125f, s_ref.data(), n, {});
    ref.accum(p.data(), n, n_gqa, k.data(), t, n, hd, o_ref.data(), {});
    std::vector<float> e_ref = s_ref;
    const float sum_ref = ref.exp_sum(e_ref.data(), n, 0.7f);
    const auto& feats = cpu_features();
    for (size_t li = 0; li < levels.size(); ++li) {
      if (li == 0 && !(feats.avx2 && feats.fma && feats.f16c)) continue;
      if (li == 1 && cpu_level() < CpuLevel::kAvx512) continue;
      const auto* f = levels[li];
      std::vector<float> s(n_gqa * n), o(n_gqa * hd, 0.5f);
      // With a prefetch range (a hint: the results must not change).
      const kernels::AttnPrefetch pf{k.data() + 1, k.size() - 1};
      f->scores(q.data(), n_gqa, k.data(), nullptr, t, n, hd, 0.125f, s.data(), n, pf);
      f->accum(p.data(), n, n_gqa, k.data(), t, n, hd, o.data(), pf);
      std::vector<float> e = s_ref;
      const float sum = f->exp_sum(e.data(), n, 0.7f);
      for (size_t i = 0; i < s.size(); ++i) ASSERT_NEAR(s[i], s_ref[i], 1e-5) << li;
      for (size_t i = 0; i < o.size(); ++i) ASSERT_NEAR(o[i], o_ref[i], 1e-4) << li;
      for (int i = 0; i < n; ++i) ASSERT_NEAR(e[i], e_ref[i], 1e-6 * e_ref[i]) << li;  // e > 0
      ASSERT_NEAR(sum, sum_ref, 1e-5 * sum_ref);
    }
  }
}

// The row maximum (softmax's shift) is the exact maximum on every level, wherever it lies in
// the row and however long the row (full vectors, a tail, or shorter than one vector).
TEST(AttentionTiles, MaxIsExactOnEveryLevel) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-50, -1);
  const auto& feats = cpu_features();
  std::vector<const kernels::AttnTileFns*> levels = {&kernels::attn_tile_fns_scalar()};
  if (feats.avx2 && feats.fma && feats.f16c) levels.push_back(kernels::attn_tile_fns_avx2());
  if (cpu_level() >= CpuLevel::kAvx512) levels.push_back(kernels::attn_tile_fns_avx512());
  for (int n = 1; n <= 70; ++n) {
    for (int at = 0; at < n; at += 3) {
      std::vector<float> x(n);
      for (auto& v : x) v = u(rng);
      x[at] = -0.5f;  // the largest
      for (const auto* f : levels) ASSERT_EQ(f->max(x.data(), n), -0.5f) << n << " " << at;
    }
  }
}

// ---- Quantized KV types (issue 5) ----

constexpr KvType kKvTypes[] = {KvType::kF32, KvType::kF16, KvType::kBF16,
                               KvType::kQ8,  KvType::kFP8, KvType::kQ4};

// A run of n K rows and n V rows of the given types, from random f32 values: K in its K layout
// (q4: one tile of block size n, header first), V per token.
struct EncodedRun {
  std::vector<uint8_t> k, v;
  const uint8_t* k_rows() const { return k.data() + k_hdr; }
  const uint8_t* k_header() const { return k_hdr ? k.data() : nullptr; }
  size_t k_hdr = 0, k_stride = 0, v_stride = 0;
};

EncodedRun encode_run(KvType kt, KvType vt, int n, int hd, std::mt19937& rng) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  EncodedRun r;
  r.k_hdr = kv_tile_header(kt, KvRole::kK, hd);
  r.k_stride = kv_row_stride(kt, KvRole::kK, hd);
  r.v_stride = kv_row_stride(vt, KvRole::kV, hd);
  r.k.assign(kv_tile_bytes(kt, KvRole::kK, hd, n), 0);
  r.v.assign(r.v_stride * n, 0);
  std::vector<float> x(hd);
  std::vector<uint16_t> f16(static_cast<size_t>(n) * hd);
  for (int t = 0; t < n; ++t) {
    for (int c = 0; c < hd; ++c) x[c] = g(rng) * (1 + c % 5);  // uneven channels
    if (kt == KvType::kQ4) {
      for (int c = 0; c < hd; ++c) f16[static_cast<size_t>(t) * hd + c] = fp32_to_fp16(x[c]);
    } else {
      kv_encode_row(kt, x.data(), r.k.data() + t * r.k_stride, hd);
    }
    for (int c = 0; c < hd; ++c) x[c] = g(rng);
    kv_encode_row(vt, x.data(), r.v.data() + t * r.v_stride, hd);
  }
  if (kt == KvType::kQ4) kv_encode_q4k_tile(f16.data(), n, hd, r.k.data());
  return r;
}

std::vector<const kernels::AttnTileFns*> available_tile_fns() {
  std::vector<const kernels::AttnTileFns*> fns = {&kernels::attn_tile_fns_scalar()};
  const auto& feats = cpu_features();
  if (feats.avx2 && feats.fma && feats.f16c) fns.push_back(kernels::attn_tile_fns_avx2());
  if (cpu_level() >= CpuLevel::kAvx512) fns.push_back(kernels::attn_tile_fns_avx512());
  return fns;
}

// Every ISA's loops agree with the scalar ones for every K and V type, on odd run lengths; and
// for each ISA the result does not depend on how the run is cut (scores bitwise; V accumulated
// in ascending t, bitwise).
TEST(AttentionTiles, QuantizedTypesSimdMatchScalarAndCutsDoNotMatter) {
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> u(-1, 1);
  const auto levels = available_tile_fns();
  for (int hd : {16, 32, 48, 64, 128}) {
    for (int n : {1, 3, 4, 5, 7, 16, 19}) {
      for (int n_gqa : {1, 3, 7}) {
        std::vector<float> q(static_cast<size_t>(n_gqa) * hd), p(static_cast<size_t>(n_gqa) * n);
        for (auto& x : q) x = u(rng);
        for (auto& x : p) x = (u(rng) + 1) / 2;
        for (KvType kt : kKvTypes) {
          for (KvType vt : kKvTypes) {
            if (!kv_type_check(vt, KvRole::kV, hd, n).is_ok()) continue;  // q4 V hd 48 ok, ...
            SCOPED_TRACE(std::string("K ") + kv_type_name(kt) + " V " + kv_type_name(vt) + " hd " +
                         std::to_string(hd) + " n " + std::to_string(n) + " gqa " +
                         std::to_string(n_gqa));
            const EncodedRun r = encode_run(kt, vt, n, hd, rng);
            std::vector<float> s_ref(q.size() / hd * n), o_ref(q.size(), 0.25f);
            const auto& ref = kernels::attn_tile_fns_scalar();
            ref.scores(q.data(), n_gqa, r.k_rows(), r.k_header(), kt, n, hd, 0.125f, s_ref.data(),
                       n, {});
            ref.accum(p.data(), n, n_gqa, r.v.data(), vt, n, hd, o_ref.data(), {});
            for (const kernels::AttnTileFns* f : levels) {
              std::vector<float> s(s_ref.size()), o(o_ref.size(), 0.25f);
              f->scores(q.data(), n_gqa, r.k_rows(), r.k_header(), kt, n, hd, 0.125f, s.data(), n,
                        {});
              f->accum(p.data(), n, n_gqa, r.v.data(), vt, n, hd, o.data(), {});
              for (size_t i = 0; i < s.size(); ++i) ASSERT_NEAR(s[i], s_ref[i], 2e-6 * hd) << i;
              for (size_t i = 0; i < o.size(); ++i) ASSERT_NEAR(o[i], o_ref[i], 2e-6 * n * 4) << i;
              // The same run cut in pieces [0, 1), [1, 4), [4, 6), [6, n).
              std::vector<float> s2(s.size()), o2(o.size(), 0.25f);
              for (int a = 0; a < n;) {
                const int b = std::min(n, a == 0 ? 1 : a == 1 ? 4 : a == 4 ? 6 : n);
                // Each piece prefetching the next (a hint: the results must not change).
                const kernels::AttnPrefetch pk{r.k_rows() + b * r.k_stride, (n - b) * r.k_stride};
                const kernels::AttnPrefetch pv{r.v.data() + b * r.v_stride, (n - b) * r.v_stride};
                f->scores(q.data(), n_gqa, r.k_rows() + a * r.k_stride, r.k_header(), kt, b - a, hd,
                          0.125f, s2.data() + a, n, pk);
                f->accum(p.data() + a, n, n_gqa, r.v.data() + a * r.v_stride, vt, b - a, hd,
                         o2.data(), pv);
                a = b;
              }
              ASSERT_EQ(s2, s);
              ASSERT_EQ(o2, o);
            }
          }
        }
      }
    }
  }
}

// Dequantized K and V of the first n_ctx tokens of a sequence, read back through the storage
// views ([n_ctx][n_kv][hd], the layout reference_attention takes).
void dequantized_kv(const KvStorage& kv, const BlockTable& table, int n_ctx, std::vector<float>& k,
                    std::vector<float>& v) {
  const KvLayout& L = kv.layout();
  const int hd = L.head_dim, n_kv = L.n_head_kv;
  k.assign(static_cast<size_t>(n_ctx) * n_kv * hd, 0.0f);
  v.assign(k.size(), 0.0f);
  for (int t = 0; t < n_ctx; ++t) {
    const BlockId b = table.block_for(t, L.block_size);
    const int slot = t % L.block_size;
    for (int g = 0; g < n_kv; ++g) {
      const KvTileView kv_k = kv.k_view(0, b, g), kv_v = kv.v_view(0, b, g);
      for (int c = 0; c < hd; ++c) {
        const size_t i = (static_cast<size_t>(t) * n_kv + g) * hd + c;
        k[i] = kv_k.type == KvType::kQ4 && kv_k.header
                   ? kv_decode_q4k(kv_k.header, hd, slot, c)
                   : kv_decode(kv_k.type, kv_k.rows + slot * kv_k.stride, hd, c);
        v[i] = kv_decode(kv_v.type, kv_v.rows + slot * kv_v.stride, hd, c);
      }
    }
  }
}

// Attention over a quantized cache equals attention over the dequantized values (tight: the
// kernels only reorder exact dequantization), for every K/V type pair; q4 K with a partial last
// block reads its f16 staging rows. Decoding the last query alone equals the chunk's last row.
TEST(AttentionPaged, QuantizedCacheEqualsDequantizedReference) {
  struct Shape {
    int block_size, n_head, n_kv, hd, n_ctx, n_q;
  };
  for (const Shape& c : {Shape{4, 6, 2, 16, 23, 5}, Shape{16, 9, 3, 64, 300, 9},
                         Shape{16, 8, 4, 8, 37, 4}, Shape{32, 4, 1, 128, 70, 1}}) {
    for (KvType kt : kKvTypes) {
      for (KvType vt : kKvTypes) {
        SCOPED_TRACE(std::string("K ") + kv_type_name(kt) + " V " + kv_type_name(vt) + " hd " +
                     std::to_string(c.hd));
        KvLayout layout{1, c.n_kv, c.hd, c.block_size, kt, vt};
        auto kvr = KvCacheManager::create(layout, (c.n_ctx + c.block_size - 1) / c.block_size + 2);
        ASSERT_TRUE(kvr.is_ok()) << kvr.status().to_string();
        KvCacheManager& kv = **kvr;
        ASSERT_TRUE(kv.add_sequence(1).is_ok());
        ASSERT_TRUE(kv.reserve(1, c.n_ctx).is_ok());
        const BlockTable& table = kv.table(1);
        std::mt19937 rng(c.n_ctx + static_cast<int>(kt) * 7 + static_cast<int>(vt));
        std::normal_distribution<float> g(0.0f, 1.0f);
        const int kv_dim = c.n_kv * c.hd;
        std::vector<float> kf(kv_dim), vf(kv_dim);
        for (int t = 0; t < c.n_ctx; ++t) {
          for (auto& x : kf) x = g(rng);
          for (auto& x : vf) x = g(rng);
          kv.storage().write_token(0, table.block_for(t, c.block_size), t % c.block_size, kf.data(),
                                   vf.data());
        }
        std::vector<float> k, v;
        dequantized_kv(kv.storage(), table, c.n_ctx, k, v);
        std::vector<float> q(static_cast<size_t>(c.n_q) * c.n_head * c.hd);
        for (auto& x : q) x = g(rng);
        std::vector<float> out(q.size()), ref;
        ThreadPool pool(2);
        const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
        kernels::attention_paged(q.data(), nullptr, {{&table, c.n_ctx - c.n_q, c.n_q, 0}},
                                 kv.storage(), 0, c.n_head, scale, {}, out.data(), pool);
        reference_attention(q, k, v, c.n_q, c.n_ctx - c.n_q, c.n_head, c.n_kv, c.hd, ref);
        for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 3e-5) << i;
        std::vector<float> last(static_cast<size_t>(c.n_head) * c.hd);
        kernels::attention_paged(q.data() + (q.size() - last.size()), nullptr,
                                 {{&table, c.n_ctx - 1, 1, 0}}, kv.storage(), 0, c.n_head, scale,
                                 {}, last.data(), pool);
        for (size_t i = 0; i < last.size(); ++i) {
          ASSERT_EQ(last[i], out[out.size() - last.size() + i]);
        }
        kv.free_sequence(1);
        EXPECT_EQ(kv.pool().n_blocks_available(), kv.pool().n_blocks_total());
        EXPECT_EQ(kv.storage().n_staged_blocks(), 0);
      }
    }
  }
}

}  // namespace
}  // namespace kvserve
