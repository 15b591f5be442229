#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

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

}  // namespace
}  // namespace kvserve
