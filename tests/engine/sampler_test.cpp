#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
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

TEST(Sampler, FrequencyAndPresencePenaltiesCountGeneratedTokens) {
  const std::vector<float> base = {1.0f, 0.5f, 0.1f};
  auto run = [&](float freq, float pres, int steps) {
    SamplingParams p;
    p.frequency_penalty = freq;
    p.presence_penalty = pres;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int i = 0; i < steps; ++i) {
      std::vector<float> l = base;
      out.push_back(s.sample(l.data(), 3, {}));
    }
    return out;
  };
  // No penalty: greedy repeats token 0.
  EXPECT_EQ(run(0, 0, 3), (std::vector<int32_t>{0, 0, 0}));
  // Frequency 0.3 per use: 1.0 -> 0.7 (still first), -> 0.4 (token 1's 0.5 wins), then token 1
  // at 0.2 against 0.4: token 0 again, now 0.1; then token 1 (0.2).
  EXPECT_EQ(run(0.3f, 0, 5), (std::vector<int32_t>{0, 0, 1, 0, 1}));
  // Presence 0.6, once per token: 0 (1.0 -> 0.4), 1 (0.5 -> -0.1), 0 (0.4 stays 0.4).
  EXPECT_EQ(run(0, 0.6f, 3), (std::vector<int32_t>{0, 1, 0}));
  // Negative values favour what was generated: token 0 only gains.
  EXPECT_EQ(run(-1.0f, -1.0f, 3), (std::vector<int32_t>{0, 0, 0}));
  // The history (prompt) does not count, only what the sampler produced.
  SamplingParams p;
  p.presence_penalty = 2.0f;
  Sampler s(p);
  std::vector<float> l = base;
  EXPECT_EQ(s.sample(l.data(), 3, {0, 0, 0}), 0);
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
  p = {};
  p.frequency_penalty = 2.5f;
  EXPECT_FALSE(p.validate().is_ok());
  p = {};
  p.presence_penalty = -2.5f;
  EXPECT_FALSE(p.validate().is_ok());
  EXPECT_TRUE(SamplingParams{}.validate().is_ok());
}

// The kept tokens of the filters, by the definition: softmax in double, the order (probability
// descending, id ascending), top-k, then the smallest prefix reaching top_p, then min-p.
std::set<int32_t> reference_kept(const std::vector<float>& logits, const SamplingParams& p) {
  const int n = static_cast<int>(logits.size());
  const double mx = *std::max_element(logits.begin(), logits.end());
  std::vector<double> e(n);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += e[i] = std::exp((logits[i] - mx) / p.temperature);
  std::vector<int32_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(),
            [&](int32_t a, int32_t b) { return e[a] != e[b] ? e[a] > e[b] : a < b; });
  size_t keep = p.top_k > 0 ? std::min<size_t>(p.top_k, n) : n;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += e[ids[i]] / sum;
    if (cum >= p.top_p) {
      keep = i + 1;
      break;
    }
  }
  size_t m = 1;
  while (m < keep && e[ids[m]] >= p.min_p * e[ids[0]]) ++m;
  return {ids.begin(), ids.begin() + m};
}

TEST(Sampler, FiltersKeepExactlyTheReferenceSetWithoutSortingTheVocabulary) {
  // 5000 distinct logits 0.0032 apart, shuffled: no filter boundary is within rounding.
  const int n = 5000;
  std::vector<float> base(n);
  for (int i = 0; i < n; ++i) base[i] = -8.0f + 16.0f * static_cast<float>((i * 2957) % n) / n;
  for (float t : {0.3f, 1.0f, 2.0f}) {
    for (int k : {0, 1, 7, 300}) {
      for (float top_p : {1.0f, 0.5f, 0.9f, 0.99f}) {
        for (float min_p : {0.0f, 0.05f, 0.3f}) {
          SamplingParams p;
          p.temperature = t;
          p.top_k = k;
          p.top_p = top_p;
          p.min_p = min_p;
          p.seed = 11;
          const std::set<int32_t> kept = reference_kept(base, p);
          Sampler s(p);
          std::set<int32_t> seen;
          for (int i = 0; i < 300; ++i) {
            std::vector<float> l = base;
            const int32_t tok = s.sample(l.data(), n, {});
            ASSERT_TRUE(kept.count(tok)) << "t=" << t << " k=" << k << " top_p=" << top_p
                                         << " min_p=" << min_p << " token " << tok;
            seen.insert(tok);
          }
          if (kept.size() >= 2) {
            EXPECT_GE(seen.size(), 2u) << "t=" << t << " k=" << k;
          }
        }
      }
    }
  }
}

TEST(Sampler, UnfilteredDrawFollowsTheSoftmax) {
  // 1000 tokens over several of the sampler's spans: token 3 has 30 %, token 700 20 %, the rest
  // share the remaining half evenly.
  const int n = 1000;
  std::vector<float> base(n, 0.0f);
  const double rest = 0.5 / (n - 2);
  base[3] = static_cast<float>(std::log(0.3 / rest));
  base[700] = static_cast<float>(std::log(0.2 / rest));
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 5;
  Sampler s(p);
  const int draws = 20000;
  std::vector<int> count(n, 0);
  for (int i = 0; i < draws; ++i) {
    std::vector<float> l = base;
    const int32_t tok = s.sample(l.data(), n, {});
    ASSERT_GE(tok, 0);
    ASSERT_LT(tok, n);
    ++count[tok];
  }
  EXPECT_NEAR(count[3] / double(draws), 0.3, 0.015);
  EXPECT_NEAR(count[700] / double(draws), 0.2, 0.015);
  // The even rest, by halves of the vocabulary (so a span's walk is not skewed).
  int lo = 0, hi = 0;
  for (int i = 0; i < n; ++i) (i < n / 2 ? lo : hi) += (i == 3 || i == 700) ? 0 : count[i];
  EXPECT_NEAR(lo / double(draws), 0.25, 0.015);
  EXPECT_NEAR(hi / double(draws), 0.25, 0.015);
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
