// End-to-end: `kvserve bench attention` prints one row per (context, sequence count) with the
// K/V bytes of those contexts, and rejects bad arguments.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/run_kvserve.h"
#include "engine/generator.h"
#include "kv/kv_storage.h"
#include "model/synth.h"

namespace kvserve {
namespace {

TEST(BenchAttention, OneRowPerPoint) {
  const auto t0 = std::chrono::steady_clock::now();
  const test::Proc p = test::run_kvserve(
      "bench attention --preset demo --seqs 1,3 --contexts 20,40 --repeat 2 -t 2 --json", false);
  // The whole process's wall time: more than any one timed step.
  const double wall_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(p.rc, 0) << p.out;
  const auto j = test::last_json_line(p.out);
  ASSERT_TRUE(j.is_object()) << p.out;
  EXPECT_EQ(j["bench"], "attention");
  ASSERT_EQ(j["results"].size(), 4u);
  // The K/V read per step is every layer's K and V of every context (f16, blocks of 16).
  auto cfg = synth_preset("demo");
  ASSERT_TRUE(cfg);
  const KvLayout L = kv_layout_for(*cfg, EngineOptions{});  // f16, blocks of 16 by default
  double timed_ms = 0;  // at least 2 steps (--repeat 2) of min_ms per row
  for (size_t i = 0; i < 4; ++i) {
    const auto& r = j["results"][i];
    timed_ms += 2 * r["min_ms"].get<double>();
    const int seqs = i % 2 == 0 ? 1 : 3, ctx = i < 2 ? 20 : 40;
    EXPECT_EQ(r["seqs"], seqs);
    EXPECT_EQ(r["context"], ctx);
    EXPECT_NEAR(r["kv_mb"].get<double>(), seqs * ctx * L.bytes_per_token() / 1e6, 1e-9);
    EXPECT_GT(r["ms_per_step"].get<double>(), 0.0);
    EXPECT_LE(r["min_ms"].get<double>(), r["ms_per_step"].get<double>());
    // The rate is the K/V bytes of the shape (not the bench's kv_mb) per median step, and a
    // step took less than the whole process: at least those bytes over the wall time.
    const double mb = seqs * ctx * L.bytes_per_token() / 1e6;
    EXPECT_NEAR(r["gb_per_s"].get<double>() * r["ms_per_step"].get<double>(), mb, 1e-6 * mb);
    EXPECT_GT(r["gb_per_s"].get<double>(), mb / wall_ms) << r.dump();
  }
  EXPECT_LT(timed_ms, wall_ms);
  // Mixed: 4 contexts spread over [8, 2 x 30], longest first: 48, 36, 24, 12.
  const test::Proc m = test::run_kvserve(
      "bench attention --preset demo --seqs 4 --contexts 30 --mixed --repeat 1 -t 1 --json", false);
  ASSERT_EQ(m.rc, 0) << m.out;
  const auto jm = test::last_json_line(m.out);
  ASSERT_TRUE(jm.is_object()) << m.out;
  EXPECT_EQ(jm["results"][0]["context"], (48 + 36 + 24 + 12) / 4);
}

TEST(BenchAttention, RejectsBadArguments) {
  const test::Proc a = test::run_kvserve("bench attention --seqs 2,0");
  EXPECT_NE(a.rc, 0);
  EXPECT_NE(a.out.find("--seqs"), std::string::npos) << a.out;
  const test::Proc b = test::run_kvserve("bench attention --kv-type q5");
  EXPECT_NE(b.rc, 0);
  EXPECT_NE(b.out.find("--kv-type must be one of"), std::string::npos) << b.out;
  const test::Proc c = test::run_kvserve("bench attention --preset nope");
  EXPECT_NE(c.rc, 0);
  EXPECT_NE(c.out.find("nope"), std::string::npos) << c.out;
  const test::Proc d = test::run_kvserve("bench attention --repeat 0");
  EXPECT_NE(d.rc, 0);
  EXPECT_NE(d.out.find("--repeat"), std::string::npos) << d.out;
}

}  // namespace
}  // namespace kvserve
