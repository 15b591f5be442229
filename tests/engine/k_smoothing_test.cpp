// K smoothing: the Hadamard rotation is orthonormal, and the calibrated factors leave every
// attention score shifted by a per-query constant only (so softmax is unchanged), are
// deterministic (prefix-cache keys depend on them) and drop the offset for attention sinks.
#include "engine/k_smoothing.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/sampler.h"
#include "test_models.h"

namespace kvserve {
namespace {

std::vector<float> random_vec(Rng& rng, int n) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(static_cast<double>(rng.next() % 2001) / 1000.0 - 1.0);
  return v;
}

double dot(const float* a, const float* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

TEST(KSmoothing, HadamardRowsKeepDotProductsAndUndoThemselves) {
  Rng rng(3);
  for (int hd : {2, 8, 64, 128}) {
    ASSERT_TRUE(hadamard_ok(hd));
    const std::vector<float> q = random_vec(rng, 2 * hd), k = random_vec(rng, 2 * hd);
    std::vector<float> hq = q, hk = k;
    hadamard_rows(hq.data(), 2, hd);
    hadamard_rows(hk.data(), 2, hd);
    EXPECT_NE(hq, q);
    for (int r = 0; r < 2; ++r) {
      EXPECT_NEAR(dot(hq.data() + r * hd, hk.data() + r * hd, hd),
                  dot(q.data() + r * hd, k.data() + r * hd, hd), 1e-4)
          << hd;
    }
    hadamard_rows(hq.data(), 2, hd);  // H / sqrt(n) is its own inverse
    for (int i = 0; i < 2 * hd; ++i) EXPECT_NEAR(hq[i], q[i], 1e-5) << hd << " " << i;
  }
  EXPECT_FALSE(hadamard_ok(48));
  EXPECT_FALSE(hadamard_ok(1));
}

TEST(KSmoothing, CalibrationShiftsEachQuerysScoresByAConstant) {
  const Model* m = test::synth_demo_model(DType::kF32, 5);
  ASSERT_NE(m, nullptr);
  const ModelConfig& c = m->config;
  auto ks = calibrate_k_smoothing(*m, /*with_offset=*/true);
  ASSERT_TRUE(ks.is_ok()) << ks.status().to_string();
  ASSERT_EQ(ks->offset.size(), static_cast<size_t>(c.n_layer));
  const int hd = c.head_dim;
  Rng rng(9);
  bool any_offset = false;
  for (int l = 0; l < c.n_layer; ++l) {
    ASSERT_EQ(ks->offset[l].size(), static_cast<size_t>(c.kv_dim()));
    ASSERT_EQ(ks->div[l].size(), static_cast<size_t>(c.kv_dim()));
    ASSERT_EQ(ks->q_mul[l].size(), static_cast<size_t>(c.q_dim()));
    for (float o : ks->offset[l]) any_offset |= o != 0.0f;
    // Query head h is scored against kv head h / n_gqa with q' = q * s and k' = (k - m) / s.
    for (int h = 0; h < c.n_head; ++h) {
      const int kvh = h / c.n_gqa();
      const std::vector<float> q = random_vec(rng, hd), k1 = random_vec(rng, hd),
                               k2 = random_vec(rng, hd);
      auto scaled = [&](const std::vector<float>& k) {
        std::vector<float> out(hd);
        for (int i = 0; i < hd; ++i) {
          out[i] = (k[i] - ks->offset[l][kvh * hd + i]) * ks->div[l][kvh * hd + i];
        }
        return out;
      };
      std::vector<float> qs(hd);
      for (int i = 0; i < hd; ++i) qs[i] = q[i] * ks->q_mul[l][h * hd + i];
      const double before = dot(q.data(), k1.data(), hd) - dot(q.data(), k2.data(), hd);
      const double after =
          dot(qs.data(), scaled(k1).data(), hd) - dot(qs.data(), scaled(k2).data(), hd);
      EXPECT_NEAR(after, before, 1e-3 * (1 + std::abs(before))) << "layer " << l << " head " << h;
    }
  }
  EXPECT_TRUE(any_offset);
  // Deterministic: the same factors every start, so cached K/V stays valid.
  auto again = calibrate_k_smoothing(*m, true);
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ(again->offset, ks->offset);
  EXPECT_EQ(again->div, ks->div);
}

TEST(KSmoothing, SinksGetNoOffset) {
  const Model* m = test::synth_demo_model(DType::kF32, 5);
  ASSERT_NE(m, nullptr);
  auto ks = calibrate_k_smoothing(*m, /*with_offset=*/false);
  ASSERT_TRUE(ks.is_ok()) << ks.status().to_string();
  for (const auto& layer : ks->offset) {
    for (float o : layer) EXPECT_EQ(o, 0.0f);
  }
}

}  // namespace
}  // namespace kvserve
