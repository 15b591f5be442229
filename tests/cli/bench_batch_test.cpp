// End-to-end: `kvserve bench batch` on the tiny synth demo model prints one row per batch size
// and a JSON object with positive step times, with --ops the time of each op adding up to the
// step, and rejects bad sizes.
#include <gtest/gtest.h>

#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/run_kvserve.h"
#include "test_models.h"

namespace kvserve {
namespace {

TEST(BenchBatch, OneRowPerBatchSize) {
  const std::string model = test::synth_model_path("demo", DType::kF32, 11);
  const test::Proc p = test::run_kvserve(
      "bench batch -m " + model + " --batch 1,3 --context 5 --steps 3 --warmup 1 -t 1 --json",
      false);
  ASSERT_EQ(p.rc, 0) << p.out;
  const auto j = test::last_json_line(p.out);
  ASSERT_TRUE(j.is_object()) << p.out;
  EXPECT_EQ(j["bench"], "batch");
  ASSERT_EQ(j["results"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const auto& r = j["results"][i];
    EXPECT_EQ(r["batch"], i == 0 ? 1 : 3);
    EXPECT_GT(r["step_ms"].get<double>(), 0.0);
    // tokens/s is batch / step time.
    EXPECT_NEAR(r["tokens_per_s"].get<double>(),
                r["batch"].get<int>() * 1000.0 / r["step_ms"].get<double>(), 1e-6);
  }
  EXPECT_NE(p.out.find("vs 1"), std::string::npos) << p.out;
}

TEST(BenchBatch, OpsAddUpToTheStep) {
  const std::string model = test::synth_model_path("demo", DType::kF32, 11);
  const test::Proc p = test::run_kvserve(
      "bench batch -m " + model + " --batch 1,2 --context 5 --steps 3 --warmup 1 -t 1 --ops --json",
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
    double sum = 0;
    for (const char* n : names) {
      ASSERT_TRUE(ops.contains(n)) << n;
      EXPECT_GE(ops[n].get<double>(), 0.0) << n;
      sum += ops[n].get<double>();
    }
    // Every layer runs these: none can take no time at all.
    for (const char* n : {"qkv", "attention", "gate_up", "down", "lm_head"})
      EXPECT_GT(ops[n].get<double>(), 0.0) << n;
    // The ops are timed inside the step, and "other" is the rest of it.
    const double step = r["step_ms"].get<double>();
    EXPECT_NEAR(sum, step, 1e-6 * step) << ops.dump();
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
