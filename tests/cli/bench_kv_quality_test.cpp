// End-to-end: `kvserve bench kv-quality` on the real stories260K weights and the committed text,
// its JSON fields and numbers, and its errors.
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

std::string stories_gguf() {
  return test::shared_model_path("stories260K/stories260K.gguf");
}
std::string story_text() {
  return std::string(KVSERVE_SOURCE_DIR) + "/bench/data/kv_quality.txt";
}

TEST(BenchKvQuality, JsonOnStories260K) {
  KV_REQUIRE_SHARED_FILE(stories_gguf());
  // Two segments of 64 (BOS + 63 text tokens), 100 text tokens: 63 + 37 positions.
  Proc p = run_kvserve("bench kv-quality -m " + stories_gguf() + " --text " + story_text() +
                           " --max-tokens 100 --segment 64 -t 2 --json"
                           " --configs f32,f16,q8,q4,k=q8:v=q4,window=8,sink=4:window=4,h2o=8",
                       false);
  ASSERT_EQ(p.rc, 0) << p.out;
  auto j = nlohmann::json::parse(p.out);
  EXPECT_EQ(j["bench"], "kv-quality");
  EXPECT_EQ(j["segments"], 2);
  EXPECT_EQ(j["positions"], 100);
  EXPECT_EQ(j["reference"]["k_type"], "f32");
  const double ref_ppl = j["reference"]["perplexity"].get<double>();
  EXPECT_GT(ref_ppl, 1.0);
  EXPECT_LT(ref_ppl, 30.0);
  ASSERT_EQ(j["results"].size(), 8u);
  for (const auto& r : j["results"]) {
    for (const char* k : {"name", "k_type", "v_type", "policy", "block_size", "bytes_per_token",
                          "bytes_per_token_vs_f16", "peak_kv_bytes_per_seq", "perplexity",
                          "perplexity_change_pct", "mean_kl", "top1_agreement", "positions"}) {
      EXPECT_TRUE(r.contains(k)) << r["name"] << " lacks " << k;
    }
    EXPECT_EQ(r["positions"], 100) << r["name"];
    EXPECT_GE(r["mean_kl"].get<double>(), 0.0) << r["name"];
    EXPECT_GT(r["top1_agreement"].get<double>(), 0.5) << r["name"];
  }
  const auto& f32 = j["results"][0];
  EXPECT_EQ(f32["name"], "f32");
  EXPECT_EQ(f32["mean_kl"].get<double>(), 0.0);  // deterministic: the reference recomputed
  EXPECT_EQ(f32["top1_agreement"].get<double>(), 1.0);
  EXPECT_EQ(f32["perplexity"].get<double>(), ref_ppl);
  EXPECT_EQ(f32["perplexity_change_pct"].get<double>(), 0.0);
  // stories260K: 5 layers, 4 kv heads of 8: f32 K+V = 1280 bytes per token, f16 640.
  EXPECT_EQ(f32["bytes_per_token"].get<double>(), 1280.0);
  EXPECT_EQ(f32["peak_kv_bytes_per_seq"].get<double>(), 4 * 16 * 1280.0);  // 63 positions
  const auto& f16 = j["results"][1];
  EXPECT_EQ(f16["bytes_per_token_vs_f16"].get<double>(), 1.0);
  EXPECT_LT(std::abs(f16["perplexity_change_pct"].get<double>()), 1.0);
  const auto& q8 = j["results"][2];
  EXPECT_GT(q8["mean_kl"].get<double>(), 0.0);
  EXPECT_LT(q8["bytes_per_token"].get<double>(), f16["bytes_per_token"].get<double>());
  const auto& q4 = j["results"][3];
  EXPECT_EQ(q4["k_type"], "q4");
  EXPECT_EQ(q4["block_size"], 32);  // KIVI's group by default
  EXPECT_GT(q4["mean_kl"].get<double>(), 0.0);
  EXPECT_LT(q4["bytes_per_token"].get<double>(), q8["bytes_per_token"].get<double>());
  const auto& mixed = j["results"][4];
  EXPECT_EQ(mixed["k_type"], "q8");
  EXPECT_EQ(mixed["v_type"], "q4");
  // The policies keep at most 8 tokens (+ a block being filled), so their peak is below full
  // f16 KV's 4 blocks.
  for (int i = 5; i < 8; ++i) {
    const auto& r = j["results"][i];
    EXPECT_EQ(r["k_type"], "f16") << r["name"];
    EXPECT_NE(r["policy"], "full") << r["name"];
    EXPECT_LT(r["peak_kv_bytes_per_seq"].get<double>(), 4 * 16 * 640.0) << r["name"];
    EXPECT_GT(r["mean_kl"].get<double>(), 0.0) << r["name"];
  }
}

TEST(BenchKvQuality, TextTableOnStories260K) {
  KV_REQUIRE_SHARED_FILE(stories_gguf());
  Proc p = run_kvserve("bench kv-quality -m " + stories_gguf() + " --text " + story_text() +
                           " --max-tokens 40 --configs f16,q4",
                       false);
  ASSERT_EQ(p.rc, 0) << p.out;
  EXPECT_NE(p.out.find("reference perplexity"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("mean KL"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("q4 configs use blocks of 32"), std::string::npos) << p.out;
}

TEST(BenchKvQuality, Errors) {
  KV_REQUIRE_SHARED_FILE(stories_gguf());
  const std::string base = "bench kv-quality -m " + stories_gguf() + " ";
  Proc p = run_kvserve(base + "--text /nonexistent/kv_quality.txt", true);
  EXPECT_NE(p.rc, 0);
  EXPECT_NE(p.out.find("cannot read --text /nonexistent/kv_quality.txt"), std::string::npos)
      << p.out;

  test::TempDir dir;
  test::write_file_bytes(dir.file("empty.txt"), {});
  p = run_kvserve(base + "--text " + dir.file("empty.txt"), true);
  EXPECT_EQ(p.rc, 2);
  EXPECT_NE(p.out.find("is empty"), std::string::npos) << p.out;

  p = run_kvserve(base + "--text " + story_text() + " --configs f16,q7", true);
  EXPECT_EQ(p.rc, 2);
  EXPECT_NE(p.out.find("unknown KV type 'q7'"), std::string::npos) << p.out;
  p = run_kvserve(base + "--text " + story_text() + " --configs sink=4", true);
  EXPECT_EQ(p.rc, 2);
  EXPECT_NE(p.out.find("sink needs a window"), std::string::npos) << p.out;
  p = run_kvserve(base + "--text " + story_text() + " --configs f16:color=red", true);
  EXPECT_EQ(p.rc, 2);
  EXPECT_NE(p.out.find("unknown setting 'color'"), std::string::npos) << p.out;
  p = run_kvserve(base + "--text " + story_text() + " --configs window=0", true);
  EXPECT_EQ(p.rc, 2);
  p = run_kvserve(base + "--text " + story_text() + " --segment 1", true);
  EXPECT_EQ(p.rc, 2);
  EXPECT_NE(p.out.find("--segment"), std::string::npos) << p.out;
  // The reference runs at full KV, so a segment beyond the context is refused.
  p = run_kvserve(base + "--text " + story_text() + " --ctx 64 --segment 100 --configs f16", true);
  EXPECT_EQ(p.rc, 2);
  EXPECT_NE(p.out.find("reference f32: the prompt has 100 tokens, more than the context of 64"),
            std::string::npos)
      << p.out;
  p = run_kvserve("bench kv-quality -m " + stories_gguf(), true);  // --text is required
  EXPECT_NE(p.rc, 0);
  EXPECT_NE(p.out.find("--text"), std::string::npos) << p.out;
}

}  // namespace
}  // namespace kvserve
