// End-to-end: `kvserve bench batch` on the tiny synth demo model prints one row per batch size
// and a JSON object with positive step times and rates the process's own wall time bounds, with
// --ops the time of each op (timed by their own clocks) within the step, and rejects bad sizes.
#include <gtest/gtest.h>

#include <chrono>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/run_kvserve.h"
#include "test_models.h"

namespace kvserve {
namespace {

TEST(BenchBatch, OneRowPerBatchSize) {
  const std::string model = test::synth_model_path("demo", DType::kF32, 11);
  const auto t0 = std::chrono::steady_clock::now();
  const test::Proc p = test::run_kvserve(
      "bench batch -m " + model + " --batch 1,3 --context 5 --steps 1000 --warmup 1 -t 1 --json",
      false);
  // The whole process's wall time: more than the timed steps of every batch size together,
  // and, with 1000 steps of each, not much more (loading and prefilling take a few ms).
  const double wall_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(p.rc, 0) << p.out;
  const auto j = test::last_json_line(p.out);
  ASSERT_TRUE(j.is_object()) << p.out;
  EXPECT_EQ(j["bench"], "batch");
  ASSERT_EQ(j["results"].size(), 2u);
  double timed_ms = 0;
  for (size_t i = 0; i < 2; ++i) {
    const auto& r = j["results"][i];
    const int batch = r["batch"].get<int>();
    EXPECT_EQ(batch, i == 0 ? 1 : 3);
    EXPECT_GT(r["step_ms"].get<double>(), 0.0);
    timed_ms += 1000 * r["step_ms"].get<double>();
    // B x 1000 tokens came out in less than the process ran: the rate (tokens per second,
    // all B sequences counted) is at least that over the wall time, a clock of the test's own.
    EXPECT_GT(r["tokens_per_s"].get<double>(), batch * 1000 / (wall_ms / 1000)) << r.dump();
  }
  EXPECT_LT(timed_ms, wall_ms);
  EXPECT_NE(p.out.find("vs 1"), std::string::npos) << p.out;
}

TEST(BenchBatch, OpsAddUpToTheStep) {
  const std::string model = test::synth_model_path("demo", DType::kF32, 11);
  const test::Proc p =
      test::run_kvserve("bench batch -m " + model +
                            " --batch 1,2 --context 5 --steps 10 --warmup 1 -t 1 --ops --json",
                        false);
  ASSERT_EQ(p.rc, 0) << p.out;
  EXPECT_NE(p.out.find("ms per step by op"), std::string::npos) << p.out;
  const auto j = test::last_json_line(p.out);
  ASSERT_EQ(j["results"].size(), 2u) << p.out;
  const char* names[] = {"norm",    "qkv",    "rope", "attention", "out_proj",
                         "gate_up", "swiglu", "down", "lm_head",   "other"};
  for (const auto& r : j["results"]) {
    const auto& ops = r["ops_ms"];
    ASSERT_EQ(ops.size(), std::size(names)) << ops.dump();
    for (const char* n : names) {
      ASSERT_TRUE(ops.contains(n)) << n;
      EXPECT_GE(ops[n].get<double>(), 0.0) << n;
    }
    // Every layer runs these: none can take no time at all.
    for (const char* n : {"qkv", "attention", "gate_up", "down", "lm_head"})
      EXPECT_GT(ops[n].get<double>(), 0.0) << n;
    // The named ops are timed by their own clocks inside the step (not derived from it, as
    // "other", the remainder, is): together they fit in the step's time, and they are most of
    // it (about 90 % here; the rest is each layer's set-up and the embedding lookup: the bound
    // is loose, as a step of ~15 us can lose its share to one preemption).
    double named = 0;
    for (const char* n : names)
      if (std::string(n) != "other") named += ops[n].get<double>();
    const double step = r["step_ms"].get<double>();
    EXPECT_LE(named, step * (1 + 1e-9)) << ops.dump();
    EXPECT_GT(named, 0.25 * step) << ops.dump();
    // So tokens/s, B / step time, is at most B over the named ops' time: a bound from other
    // clocks than the step's.
    EXPECT_LE(r["tokens_per_s"].get<double>(), r["batch"].get<int>() * 1000.0 / named * (1 + 1e-9))
        << r.dump();
  }
  // Without --ops there are no op times.
  const test::Proc q = test::run_kvserve(
      "bench batch -m " + model + " --batch 1 --context 5 --steps 2 -t 1 --json", false);
  ASSERT_EQ(q.rc, 0) << q.out;
  EXPECT_FALSE(test::last_json_line(q.out)["results"][0].contains("ops_ms")) << q.out;
  EXPECT_EQ(q.out.find("ms per step by op"), std::string::npos) << q.out;
}

TEST(BenchBatch, RejectsBadArguments) {
  const std::string model = test::synth_model_path("demo", DType::kF32, 11);
  const test::Proc a = test::run_kvserve("bench batch -m " + model + " --batch 2,0");
  EXPECT_NE(a.rc, 0);
  EXPECT_NE(a.out.find("--batch"), std::string::npos) << a.out;
  const test::Proc b = test::run_kvserve("bench batch -m " + model + " --steps 0");
  EXPECT_NE(b.rc, 0);
  EXPECT_NE(b.out.find("--steps"), std::string::npos) << b.out;
  const test::Proc c = test::run_kvserve("bench batch -m " + model + " --kv-type q5");
  EXPECT_NE(c.rc, 0);
  EXPECT_NE(c.out.find("--kv-type must be one of"), std::string::npos) << c.out;
}

}  // namespace
}  // namespace kvserve
