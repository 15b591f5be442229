// Greedy argmax: every SIMD path returns exactly what the reference loop returns (first index of
// the maximum, NaN never wins, a NaN at x[0] gives 0) on random inputs, ties, signed zeros,
// NaNs, infinities, every size 0..300 and vocabulary sizes around 49152.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "kernels/reduce.h"

namespace kvserve {
namespace {

constexpr CpuLevel kLevels[] = {CpuLevel::kScalar, CpuLevel::kAvx2, CpuLevel::kAvx512};
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// The loop argmax was before it was vectorized: the definition of its result.
int32_t reference_argmax(const float* x, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

void expect_all_levels_match(const std::vector<float>& x, const std::string& what) {
  const int n = static_cast<int>(x.size());
  const int32_t want = reference_argmax(x.data(), n);
  for (CpuLevel level : kLevels) {
    ASSERT_EQ(kernels::argmax(x.data(), n, level), want)
        << what << " n " << n << " " << cpu_level_name(level);
  }
  ASSERT_EQ(kernels::argmax(x.data(), n), want) << what << " n " << n;
}

// One random vector of a given kind.
std::vector<float> make(int kind, int n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> x(n);
  for (float& v : x) v = nd(rng);
  switch (kind) {
    case 0:  // plain random
      break;
    case 1:  // many ties, signed zeros
      for (float& v : x) {
        static constexpr float kFew[] = {-1.0f, -0.0f, 0.0f, 1.0f, 2.0f};
        v = kFew[rng() % 5];
      }
      break;
    case 2:  // sprinkled NaNs
      for (float& v : x) {
        if (rng() % 4 == 0) v = kNan;
      }
      break;
    case 3:  // NaN at x[0]
      if (n) x[0] = kNan;
      break;
    case 4:  // -inf with NaNs, no finite value
      for (float& v : x) v = rng() % 3 == 0 ? kNan : -kInf;
      break;
    case 5:  // all -inf
      for (float& v : x) v = -kInf;
      break;
    case 6:  // all NaN
      for (float& v : x) v = kNan;
      break;
    case 7:  // -inf and NaN with one finite value anywhere (the tail included)
      for (float& v : x) v = rng() % 2 ? kNan : -kInf;
      if (n) x[rng() % n] = -1e30f;
      break;
    case 8:  // +inf twice, NaN before them
      if (n) {
        x[rng() % n] = kInf;
        x[rng() % n] = kInf;
        x[rng() % n] = kNan;
      }
      break;
    case 9:  // the maximum duplicated at random places, the last one near the end
      if (n) {
        for (int k = 0; k < 3; ++k) x[rng() % n] = 100.0f;
        x[n - 1 - rng() % std::min(n, 70)] = 100.0f;
      }
      break;
    case 10:  // increasing: the maximum is last
      for (int i = 0; i < n; ++i) x[i] = static_cast<float>(i);
      break;
    case 11:  // decreasing from -0.0 then +0.0 at the end: -0 at x[0] must win
      for (int i = 0; i < n; ++i) x[i] = -static_cast<float>(i);
      if (n > 1) x[n - 1] = 0.0f;
      break;
  }
  return x;
}

TEST(Argmax, MatchesReferenceLoopOnSmallSizes) {
  std::mt19937 rng(1);
  for (int n = 0; n <= 300; ++n) {
    for (int kind = 0; kind < 12; ++kind) {
      for (int trial = 0; trial < 4; ++trial) {
        expect_all_levels_match(make(kind, n, rng), "kind " + std::to_string(kind));
      }
    }
  }
}

TEST(Argmax, MatchesReferenceLoopOnVocabularySizes) {
  std::mt19937 rng(2);
  for (int n : {32000, 49151, 49152, 49153, 128256}) {
    for (int kind = 0; kind < 12; ++kind) {
      for (int trial = 0; trial < 3; ++trial) {
        expect_all_levels_match(make(kind, n, rng), "kind " + std::to_string(kind));
      }
    }
  }
}

// The maximum at every position of a 49152 vector (each lane and round, the tail), with an
// equal value before and after it in some trials, and NaN neighbours.
TEST(Argmax, MaximumAtEveryPosition) {
  const int n = 49152 + 37;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-10.0f, 10.0f);
  std::vector<float> x(n);
  for (float& v : x) v = u(rng);
  for (int p = 0; p < n; p += (p < 512 || p > n - 256 ? 1 : 97)) {
    std::vector<float> y = x;
    y[p] = 20.0f;
    if (p + 1 < n) y[p + 1] = kNan;
    if (p % 3 == 0 && p + 64 < n) y[p + 64] = 20.0f;  // later tie: p still wins
    if (p % 5 == 0 && p > 0) y[p - 1] = 20.0f;        // earlier tie wins
    const int32_t want = reference_argmax(y.data(), n);
    for (CpuLevel level : kLevels) {
      ASSERT_EQ(kernels::argmax(y.data(), n, level), want)
          << "p " << p << " " << cpu_level_name(level);
    }
  }
}

TEST(Argmax, DocumentedCases) {
  for (CpuLevel level : kLevels) {
    std::vector<float> x(100, 1.0f);
    x[0] = kNan;
    x[50] = 5.0f;
    EXPECT_EQ(kernels::argmax(x.data(), 100, level), 0);  // NaN at 0 never loses
    x[0] = -kInf;
    EXPECT_EQ(kernels::argmax(x.data(), 100, level), 50);
    x.assign(100, kNan);
    x[0] = -kInf;
    EXPECT_EQ(kernels::argmax(x.data(), 100, level), 0);
    x[99] = -kInf;
    EXPECT_EQ(kernels::argmax(x.data(), 100, level), 0);  // first of the equal -infs
    x[70] = -3.0f;
    EXPECT_EQ(kernels::argmax(x.data(), 100, level), 70);
    EXPECT_EQ(kernels::argmax(x.data(), 0, level), 0);
    EXPECT_EQ(kernels::argmax(nullptr, 0, level), 0);
  }
}

}  // namespace
}  // namespace kvserve
