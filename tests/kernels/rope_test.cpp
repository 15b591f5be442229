#include "kernels/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace kvserve {
namespace {

ModelConfig cfg(int head_dim, RopeStyle style) {
  ModelConfig c;
  c.head_dim = head_dim;
  c.rope_style = style;
  c.rope_freq_base = 10000.0f;
  return c;
}

// Rotating by position p then reading the pair back gives the angle p * base^(-2i/d).
TEST(Rope, NormRotatesAdjacentPairsNeoxRotatesHalves) {
  const int hd = 8, pos = 3;
  for (RopeStyle style : {RopeStyle::kNorm, RopeStyle::kNeox}) {
    kernels::Rope rope(cfg(hd, style));
    std::vector<float> c, s;
    rope.angles(&pos, 1, c, s);
    std::vector<float> x(hd);
    for (int i = 0; i < hd; ++i) x[i] = static_cast<float>(i + 1);
    const std::vector<float> x0 = x;
    rope.apply(x.data(), 1, c.data(), s.data());
    for (int i = 0; i < hd / 2; ++i) {
      const int a = style == RopeStyle::kNorm ? 2 * i : i;
      const int b = style == RopeStyle::kNorm ? 2 * i + 1 : i + hd / 2;
      const double theta = pos * std::pow(10000.0, -2.0 * i / hd);
      EXPECT_NEAR(x[a], x0[a] * std::cos(theta) - x0[b] * std::sin(theta), 1e-5);
      EXPECT_NEAR(x[b], x0[a] * std::sin(theta) + x0[b] * std::cos(theta), 1e-5);
    }
  }
}

TEST(Rope, LinearScalingDividesPositionsAndFreqFactorsDivideFrequencies) {
  ModelConfig c = cfg(4, RopeStyle::kNorm);
  c.rope_scaling = RopeScaling::kLinear;
  c.rope_scale_factor = 4.0f;
  kernels::Rope scaled(c);
  kernels::Rope plain(cfg(4, RopeStyle::kNorm));
  std::vector<float> c1, s1, c2, s2;
  const int p8 = 8, p2 = 2;
  scaled.angles(&p8, 1, c1, s1);
  plain.angles(&p2, 1, c2, s2);
  EXPECT_EQ(c1, c2);
  const float factors[2] = {1.0f, 2.0f};
  kernels::Rope ff(cfg(4, RopeStyle::kNorm), factors);
  std::vector<float> c3, s3;
  const int p1 = 1;
  ff.angles(&p1, 1, c3, s3);
  EXPECT_NEAR(std::asin(s3[1]), 0.01 / 2, 1e-7);  // base^(-2/4) = 0.01, divided by 2
}

TEST(Rope, Llama3ScalingKeepsHighFrequenciesSlowsLowOnes) {
  ModelConfig c = cfg(128, RopeStyle::kNorm);
  c.rope_freq_base = 500000.0f;
  c.rope_scaling = RopeScaling::kLlama3;
  c.rope_scale_factor = 8.0f;
  c.rope_orig_ctx = 8192;
  kernels::Rope scaled(c);
  ModelConfig p = c;
  p.rope_scaling = RopeScaling::kNone;
  kernels::Rope plain(p);
  std::vector<float> cs, ss, cp, sp;
  const int pos = 1000;
  scaled.angles(&pos, 1, cs, ss);
  plain.angles(&pos, 1, cp, sp);
  EXPECT_EQ(cs[0], cp[0]);  // wavelength 2*pi: untouched
  // The lowest frequency is slowed by exactly the factor.
  const double lo = pos * std::pow(500000.0, -126.0 / 128) / 8.0;
  EXPECT_NEAR(cs[63], std::cos(lo), 1e-5);
}

}  // namespace
}  // namespace kvserve
