#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <map>
#include <vector>

namespace kvserve {
namespace {

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  Sampler s(SamplingParams{});
  std::vector<float> l = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(s.sample(l.data(), 4, {}), 1);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDiffers) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 7;
  std::vector<float> base(100);
  for (int i = 0; i < 100; ++i) base[i] = static_cast<float>(i % 10) * 0.1f;
  auto draw = [&](uint64_t seed) {
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) {
      auto l = base;
      out.push_back(s.sample(l.data(), 100, {}));
    }
    return out;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

TEST(Sampler, TopKRestrictsToKBest) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  Sampler s(p);
  std::vector<float> base = {0.0f, 5.0f, 4.9f, 1.0f, 4.8f};
  for (int i = 0; i < 200; ++i) {
    auto l = base;
    const int t = s.sample(l.data(), 5, {});
    EXPECT_TRUE(t == 1 || t == 2) << t;
  }
}

TEST(Sampler, TopPKeepsSmallestNucleus) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.5f;
  Sampler s(p);
  // probabilities ~ [0.64, 0.24, 0.09, 0.03]: nucleus of 0.5 is token 0 alone.
  std::vector<float> base = {3.0f, 2.0f, 1.0f, 0.0f};
  for (int i = 0; i < 100; ++i) {
    auto l = base;
    EXPECT_EQ(s.sample(l.data(), 4, {}), 0);
  }
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.min_p = 0.3f;
  Sampler s(p);
  std::vector<float> base = {2.0f, 1.9f, 0.0f, -1.0f};  // p2/p0 = e^-2 = 0.135 < 0.3
  std::map<int, int> seen;
  for (int i = 0; i < 300; ++i) {
    auto l = base;
    seen[s.sample(l.data(), 4, {})]++;
  }
  EXPECT_EQ(seen.count(2) + seen.count(3), 0u);
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[1], 0);
}

TEST(Sampler, TemperatureSharpensDistribution) {
  auto freq_of_best = [](float temp) {
    SamplingParams p;
    p.temperature = temp;
    p.seed = 3;
    Sampler s(p);
    int best = 0;
    for (int i = 0; i < 2000; ++i) {
      std::vector<float> l = {1.0f, 0.5f, 0.0f};
      best += s.sample(l.data(), 3, {}) == 0;
    }
    return best;
  };
  EXPECT_GT(freq_of_best(0.2f), freq_of_best(1.0f) + 300);
}

TEST(Sampler, RepetitionPenaltyAvoidsRecentTokens) {
  SamplingParams p;
  p.repeat_penalty = 2.0f;
  Sampler s(p);
  std::vector<float> l = {1.0f, 0.9f, -0.5f};
  EXPECT_EQ(s.sample(l.data(), 3, {0}), 1);  // 1.0/2 < 0.9
  std::vector<float> l2 = {-0.1f, -0.15f};
  EXPECT_EQ(s.sample(l2.data(), 2, {1, 0}), 0);  // -0.2 vs -0.3
}

TEST(Sampler, ValidateRejectsOutOfRange) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_FALSE(p.validate().is_ok());
  p = {};
  p.top_p = 0;
  EXPECT_FALSE(p.validate().is_ok());
  p = {};
  p.min_p = 2;
  EXPECT_FALSE(p.validate().is_ok());
  p = {};
  p.top_k = -3;
  EXPECT_FALSE(p.validate().is_ok());
  EXPECT_TRUE(SamplingParams{}.validate().is_ok());
}

TEST(Rng, UniformInRangeAndDeterministic) {
  Rng a(1), b(1);
  for (int i = 0; i < 1000; ++i) {
    const float x = a.uniform();
    EXPECT_GE(x, 0.0f);
    EXPECT_LT(x, 1.0f);
    EXPECT_EQ(x, b.uniform());
  }
}

}  // namespace
}  // namespace kvserve
