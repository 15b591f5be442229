#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/cpu_features.h"
#include "kernels/quant.h"

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
  KvLayout layout{1, c.n_kv, c.hd, c.block_size, DType::kF32};
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
  const int kv_dim = c.n_kv * c.hd;
  std::vector<float> k(static_cast<size_t>(c.n_ctx) * kv_dim), v(k.size());
  for (auto& x : k) x = u(rng);
  for (auto& x : v) x = u(rng);
  for (int t = 0; t < c.n_ctx; ++t) {
    kv.storage().write_token(0, table.block_for(t, c.block_size), t % c.block_size,
                             k.data() + static_cast<size_t>(t) * kv_dim,
                             v.data() + static_cast<size_t>(t) * kv_dim);
  }
  const int pos0 = c.n_ctx - c.n_q;
  std::vector<float> q(static_cast<size_t>(c.n_q) * c.n_head * c.hd);
  for (auto& x : q) x = u(rng);
  std::vector<float> out(q.size()), ref;
  ThreadPool pool(2);
  kernels::attention_paged(q.data(), {{&table, pos0, c.n_q, 0}}, kv.storage(), 0, c.n_head,
                           1.0f / std::sqrt(static_cast<float>(c.hd)), out.data(), pool);
  reference_attention(q, k, v, c.n_q, pos0, c.n_head, c.n_kv, c.hd, ref);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5) << i;

  // Decode of the last query alone equals the last row of the chunk, bitwise.
  std::vector<float> last(static_cast<size_t>(c.n_head) * c.hd);
  kernels::attention_paged(q.data() + (q.size() - last.size()), {{&table, c.n_ctx - 1, 1, 0}},
                           kv.storage(), 0, c.n_head, 1.0f / std::sqrt(static_cast<float>(c.hd)),
                           last.data(), pool);
  for (size_t i = 0; i < last.size(); ++i) ASSERT_EQ(last[i], out[out.size() - last.size() + i]);
  kv.free_sequence(0);
  kv.free_sequence(1);
  EXPECT_EQ(kv.pool().n_blocks_free(), kv.pool().n_blocks_total());
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionPaged,
                         ::testing::Values(Case{1, 4, 4, 8, 9, 3},       // MHA, block size 1
                                           Case{16, 8, 2, 16, 37, 5},    // GQA 4:1
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
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    std::vector<uint8_t> k(row_bytes(t, hd) * n);
    kernels::quantize_row(t, kf.data(), k.data(), n * hd);
    std::vector<const kernels::AttnTileFns*> levels = {kernels::attn_tile_fns_avx2(),
                                                       kernels::attn_tile_fns_avx512()};
    const auto& ref = kernels::attn_tile_fns_scalar();
    std::vector<float> s_ref(n_gqa * n), o_ref(n_gqa * hd, 0.5f);
    ref.scores(q.data(), n_gqa, k.data(), t, n, hd, 0.125f, s_ref.data(), n);
    ref.accum(p.data(), n, n_gqa, k.data(), t, n, hd, o_ref.data());
    std::vector<float> e_ref = s_ref;
    const float sum_ref = ref.exp_sum(e_ref.data(), n, 0.7f);
    const auto& feats = cpu_features();
    for (size_t li = 0; li < levels.size(); ++li) {
      if (li == 0 && !(feats.avx2 && feats.fma && feats.f16c)) continue;
      if (li == 1 && cpu_level() < CpuLevel::kAvx512) continue;
      const auto* f = levels[li];
      std::vector<float> s(n_gqa * n), o(n_gqa * hd, 0.5f);
      f->scores(q.data(), n_gqa, k.data(), t, n, hd, 0.125f, s.data(), n);
      f->accum(p.data(), n, n_gqa, k.data(), t, n, hd, o.data());
      std::vector<float> e = s_ref;
      const float sum = f->exp_sum(e.data(), n, 0.7f);
      for (size_t i = 0; i < s.size(); ++i) ASSERT_NEAR(s[i], s_ref[i], 1e-5) << li;
      for (size_t i = 0; i < o.size(); ++i) ASSERT_NEAR(o[i], o_ref[i], 1e-4) << li;
      for (int i = 0; i < n; ++i) ASSERT_NEAR(e[i], e_ref[i], 1e-6 * e_ref[i]) << li;  // e > 0
      ASSERT_NEAR(sum, sum_ref, 1e-5 * sum_ref);
    }
  }
}

}  // namespace
}  // namespace kvserve
