// Windowed attention (sliding window, attention sinks) and H2O score accumulation against a
// naive reference over the visible slots; decode of the last query equals the chunk's last row.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "attention_test_util.h"
#include "kernels/attention.h"
#include "kv/kv_cache_manager.h"

namespace kvserve {
namespace {

struct WinCase {
  int block_size, n_head, n_kv, hd, n_ctx, n_q, window, sink;
};

// Reference: the query at slot p sees [p - window + 1, p] and the sinks [0, sink); sinks outside
// the window are scored with q_sink. probs[t] accumulates every head's probability of slot t.
void reference(const std::vector<float>& q, const std::vector<float>& q_sink,
               const std::vector<float>& k, const std::vector<float>& v, const WinCase& c,
               std::vector<float>& out, std::vector<double>& probs) {
  const int pos0 = c.n_ctx - c.n_q, hd = c.hd;
  out.assign(static_cast<size_t>(c.n_q) * c.n_head * hd, 0.0f);
  probs.assign(c.n_ctx, 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  for (int i = 0; i < c.n_q; ++i) {
    const int p = pos0 + i;
    const int lo = c.window > 0 ? std::max(0, p - c.window + 1) : 0;
    for (int h = 0; h < c.n_head; ++h) {
      const int g = h / (c.n_head / c.n_kv);
      std::vector<double> s(p + 1, -INFINITY);
      double mx = -INFINITY;
      for (int t = 0; t <= p; ++t) {
        if (t < lo && t >= c.sink) continue;      // neither in the window nor a sink
        const bool sink = t < lo && lo > c.sink;  // sinks across a gap: the cache is full
        const std::vector<float>& qq = sink ? q_sink : q;
        double d = 0;
        for (int e = 0; e < hd; ++e) {
          d += static_cast<double>(qq[(static_cast<size_t>(i) * c.n_head + h) * hd + e]) *
               k[(static_cast<size_t>(t) * c.n_kv + g) * hd + e];
        }
        s[t] = d * scale;
        mx = std::max(mx, s[t]);
      }
      double sum = 0;
      for (auto& x : s) sum += (x = std::isinf(x) ? 0.0 : std::exp(x - mx));
      for (int t = 0; t <= p; ++t) probs[t] += s[t] / sum;
      for (int e = 0; e < hd; ++e) {
        double acc = 0;
        for (int t = 0; t <= p; ++t)
          acc += s[t] / sum * v[(static_cast<size_t>(t) * c.n_kv + g) * hd + e];
        out[(static_cast<size_t>(i) * c.n_head + h) * hd + e] = static_cast<float>(acc);
      }
    }
  }
}

class AttentionWindowed : public ::testing::TestWithParam<WinCase> {};

TEST_P(AttentionWindowed, MatchesReferenceAndAccumulatesProbabilities) {
  const WinCase c = GetParam();
  KvLayout layout{1, c.n_kv, c.hd, c.block_size, KvType::kF32, KvType::kF32};
  auto kvr = KvCacheManager::create(layout, (c.n_ctx + c.block_size - 1) / c.block_size + 1);
  ASSERT_TRUE(kvr.is_ok()) << kvr.status().to_string();
  KvCacheManager& kv = **kvr;
  ASSERT_TRUE(kv.add_sequence(1).is_ok());
  ASSERT_TRUE(kv.reserve(1, c.n_ctx).is_ok());
  const BlockTable& table = kv.table(1);
  std::mt19937 rng(c.n_ctx * 7 + c.window);
  std::uniform_real_distribution<float> u(-1, 1);
  const test::RandomKv kvs =
      test::write_random_kv(kv.storage(), table, c.n_ctx, c.n_kv * c.hd, c.block_size, rng);
  std::vector<float> q(static_cast<size_t>(c.n_q) * c.n_head * c.hd), q_sink(q.size());
  for (auto& x : q) x = u(rng);
  for (auto& x : q_sink) x = u(rng);
  const int pos0 = c.n_ctx - c.n_q;
  std::vector<float> out(q.size()), ref, scores(c.n_ctx, 0.0f);
  std::vector<double> probs;
  ThreadPool pool(2);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  const kernels::AttentionWindow win{c.window, c.sink};
  kernels::attention_paged(q.data(), q_sink.data(), {{&table, pos0, c.n_q, 0, scores.data()}},
                           kv.storage(), 0, c.n_head, scale, win, out.data(), pool);
  reference(q, q_sink, kvs.k, kvs.v, c, ref, probs);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5) << i;
  double total = 0;
  for (int t = 0; t < c.n_ctx; ++t) {
    ASSERT_NEAR(scores[t], probs[t], 1e-5 * std::max(1.0, probs[t])) << t;
    total += scores[t];
  }
  EXPECT_NEAR(total, static_cast<double>(c.n_q) * c.n_head, 1e-3);  // each row sums to 1

  // Decode of the last query alone equals the chunk's last row, bitwise.
  std::vector<float> last(static_cast<size_t>(c.n_head) * c.hd);
  const size_t off = q.size() - last.size();
  kernels::attention_paged(q.data() + off, q_sink.data() + off, {{&table, c.n_ctx - 1, 1, 0}},
                           kv.storage(), 0, c.n_head, scale, win, last.data(), pool);
  for (size_t i = 0; i < last.size(); ++i) ASSERT_EQ(last[i], out[off + i]);
  kv.free_sequence(1);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionWindowed,
    ::testing::Values(WinCase{16, 4, 2, 16, 100, 20, 32, 0},  // sliding window
                      WinCase{16, 4, 2, 16, 100, 20, 32, 4},  // sinks + window
                      WinCase{4, 2, 1, 8, 700, 9, 300, 3},    // window across partitions
                      WinCase{8, 4, 4, 32, 600, 5, 0, 0},     // full, scores only
                      WinCase{16, 8, 2, 64, 64, 64, 16, 20},  // sinks overlapping the window
                      WinCase{1, 2, 2, 16, 50, 50, 7, 1}));

}  // namespace
}  // namespace kvserve
