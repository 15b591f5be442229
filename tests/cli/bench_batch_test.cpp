// End-to-end: `kvserve bench batch` on the tiny synth demo model prints one row per batch size
// and a JSON object with positive step times, and rejects bad sizes.
#include <gtest/gtest.h>

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
