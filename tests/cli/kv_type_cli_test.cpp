// KV types through the CLI: flags, true bytes per token in kv-size and inspect, refusals.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/run_kvserve.h"
#include "test_util.h"

namespace kvserve {
namespace {

using test::Proc;
using test::run_kvserve;

TEST(KvTypeCli, KvSizeReportsKAndVSeparatelyWithScalesAndHeaders) {
  Proc p = run_kvserve(
      "kv-size --layers 30 --kv-heads 3 --head-dim 64 --block-size 32 --kv-type-k q4 "
      "--kv-type-v q8 --json",
      false);
  ASSERT_EQ(p.rc, 0) << p.out;
  auto j = nlohmann::json::parse(p.out);
  EXPECT_EQ(j["kv_type_k"], "q4");
  EXPECT_EQ(j["kv_type_v"], "q8");
  EXPECT_EQ(j["bytes_per_token_k"], 30 * 3 * 40.0);  // 32 nibble bytes + 256 header bytes / 32
  EXPECT_EQ(j["bytes_per_token_v"], 30 * 3 * 66.0);  // 64 int8 + fp16 scale
  EXPECT_EQ(j["bytes_per_token"], 30 * 3 * 106.0);
  Proc f = run_kvserve("kv-size --layers 30 --kv-heads 3 --head-dim 64 --kv-type fp8-e4m3 --json",
                       false);
  ASSERT_EQ(f.rc, 0) << f.out;
  EXPECT_EQ(nlohmann::json::parse(f.out)["bytes_per_token"], 30 * 3 * 2 * 66.0);
}

TEST(KvTypeCli, RefusesWhatTheKernelsCannotDo) {
  struct Case {
    std::string args, expect;
  };
  const std::string model = test::shared_model_path("stories260K/stories260K.gguf");
  for (const Case& c : {
           Case{"kv-size --layers 2 --kv-heads 2 --head-dim 7 --kv-type q4",
                "even head_dim, got 7"},
           Case{"kv-size --layers 2 --kv-heads 2 --head-dim 80 --kv-type-v q4", "groups of 64"},
           Case{"kv-size --layers 2 --kv-heads 2 --head-dim 64 --kv-type q5",
                "unknown KV type 'q5'"},
           Case{"generate -m " + model + " -p hi -n 2 --kv-type int8", "f32, f16, bf16, q8, fp8"},
           Case{"generate -m " + model + " -p hi -n 2 --kv-type-v q3",
                "--kv-type-v must be one of"},
       }) {
    Proc p = run_kvserve(c.args, true);
    EXPECT_NE(p.rc, 0) << c.args;
    EXPECT_NE(p.out.find(c.expect), std::string::npos) << c.args << "\n" << p.out;
  }
}

TEST(KvTypeCli, GenerateAndInspectOnStories260K) {
  const std::string model = test::shared_model_path("stories260K/stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(model);
  Proc g = run_kvserve("generate -m " + model +
                           " -p 'Once upon a time' -n 20 --temp 0 --json --kv-type-k q4"
                           " --kv-type-v q8 --block-size 16",
                       false);
  ASSERT_EQ(g.rc, 0) << g.out;
  auto j = nlohmann::json::parse(g.out);
  EXPECT_EQ(j["kv"]["type_k"], "q4");
  EXPECT_EQ(j["kv"]["type_v"], "q8");
  EXPECT_EQ(j["kv"]["bytes_per_token"], 5 * 4 * ((4 + 32 / 16.0) + 10));  // hd 8, blocks of 16
  EXPECT_EQ(j["tokens"].size(), 20u);
  // Without --block-size, q4 gets blocks of 32 (default_block_size), as bench kv-quality does:
  // the per-channel header amortised over twice the tokens.
  Proc d = run_kvserve("generate -m " + model +
                           " -p 'Once upon a time' -n 20 --temp 0 --json --kv-type-k q4"
                           " --kv-type-v q8",
                       false);
  ASSERT_EQ(d.rc, 0) << d.out;
  auto jd = nlohmann::json::parse(d.out);
  EXPECT_EQ(jd["kv"]["block_size"], 32);
  EXPECT_EQ(jd["kv"]["bytes_per_token"], 5 * 4 * ((4 + 32 / 32.0) + 10));
  EXPECT_EQ(jd["tokens"].size(), 20u);
  Proc i = run_kvserve("inspect -m " + model + " --json", false);
  ASSERT_EQ(i.rc, 0) << i.out;
  auto ji = nlohmann::json::parse(i.out);
  EXPECT_EQ(ji["kv_bytes_per_token"]["f16"], 640.0);
  EXPECT_EQ(ji["kv_bytes_per_token"]["q8"], 400.0);  // 5 layers * 4 heads * 2 * (8 + 2)
  EXPECT_EQ(ji["kv_bytes_per_token"]["fp8"], 400.0);
  EXPECT_EQ(ji["kv_bytes_per_token"]["q4"], 280.0);  // K 4 + 64/16, V 4 + 4
  EXPECT_EQ(ji["kv_bytes_per_token_k"]["q4"], 120.0);
  EXPECT_EQ(ji["kv_bytes_per_token_v"]["q4"], 160.0);
}

}  // namespace
}  // namespace kvserve
