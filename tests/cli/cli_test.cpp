// End-to-end: the real kvserve binary, its output and exit codes.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/run_kvserve.h"
#include "core/memory_info.h"
#include "test_util.h"

namespace kvserve {
namespace {

using test::Proc;
using test::run_kvserve;

std::string stories(const std::string& file) {
  return test::shared_model_path("stories260K/" + file);
}

TEST(Cli, GenerateJsonOnStories260K) {
  const std::string model = stories("stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(model);
  Proc p =
      run_kvserve("generate -m " + model + " -p 'Once upon a time' -n 12 --temp 0 --json", false);
  ASSERT_EQ(p.rc, 0) << p.out;
  auto j = nlohmann::json::parse(p.out);
  EXPECT_EQ(j["prompt_tokens"], nlohmann::json({1, 403, 407, 261, 378}));
  EXPECT_EQ(j["tokens"].size(), 12u);
  EXPECT_EQ(j["text"].get<std::string>().substr(0, 20), ", there was a little");
  for (const char* k : {"prefill_ms", "decode_ms", "decode_tokens_per_s"})
    EXPECT_TRUE(j["timings"].contains(k)) << k;
  EXPECT_EQ(j["kv"]["block_size"], 16);
  EXPECT_EQ(j["kv"]["blocks_used_peak"],
            1);  // 5 + 11 positions computed: the last token is never fed back
  EXPECT_EQ(j["kv"]["bytes_per_token"], 640);  // 2 * 5 layers * 4 kv heads * 8 * f16
  EXPECT_GT(j["kv"]["blocks_total"].get<int>(), 2);

  // --no-kv-cache gives the same tokens; a different block size too.
  Proc q =
      run_kvserve("generate -m " + model +
                      " -p 'Once upon a time' -n 12 --temp 0 --json --no-kv-cache --block-size 1",
                  false);
  ASSERT_EQ(q.rc, 0) << q.out;
  EXPECT_EQ(nlohmann::json::parse(q.out)["tokens"], j["tokens"]);
}

// --stop ends the output before the stop string, in text and JSON alike, with finish "stop"; the
// text streamed before it is the same as without it.
TEST(Cli, GenerateStopsBeforeAStopString) {
  const std::string model = stories("stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(model);
  const std::string base = "generate -m " + model + " -p 'Once upon a time' -n 40 --temp 0";
  Proc full = run_kvserve(base + " --json", false);
  ASSERT_EQ(full.rc, 0) << full.out;
  const std::string text = nlohmann::json::parse(full.out)["text"];
  ASSERT_GT(text.size(), 40u);
  const std::string stop = text.substr(30, 6);  // the first match may come earlier
  const std::string want = text.substr(0, text.find(stop));
  Proc j = run_kvserve(base + " --json --stop '" + stop + "'", false);
  ASSERT_EQ(j.rc, 0) << j.out;
  const auto out = nlohmann::json::parse(j.out);
  EXPECT_EQ(out["text"], want);
  EXPECT_EQ(out["finish_reason"], "stop");
  EXPECT_LT(out["tokens"].size(), 40u);
  Proc t = run_kvserve(base + " --stop '" + stop + "'", false);
  ASSERT_EQ(t.rc, 0) << t.out;
  EXPECT_EQ(t.out, "Once upon a time" + want + "\n");
}

TEST(Cli, GenerateTextReproducesRunCReference) {
  const std::string model = stories("stories260K.bin");
  KV_REQUIRE_SHARED_FILE(model);
  Proc p = run_kvserve("generate -m " + model + " -p 'Once upon a time' -n 252 --temp 0", false);
  ASSERT_EQ(p.rc, 0);
  std::ifstream in(stories("reference_greedy_fp32_run.c.txt"), std::ios::binary);
  std::stringstream ref;
  ref << in.rdbuf();
  EXPECT_EQ(p.out, ref.str());
}

TEST(Cli, PromptTokensUsedExactlyAndSeedReproduces) {
  const std::string model = stories("stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(model);
  const std::string args =
      "generate -m " + model + " --prompt-tokens 5,6,7 -n 10 --temp 1.0 --seed 11 --json";
  Proc a = run_kvserve(args, false), b = run_kvserve(args, false);
  ASSERT_EQ(a.rc, 0) << a.out;
  auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja["prompt_tokens"], nlohmann::json({5, 6, 7}));
  EXPECT_EQ(ja["tokens"], jb["tokens"]);
}

TEST(Cli, DemoModelWhenNoModelGiven) {
  test::TempDir cache;
  const std::string env = "XDG_CACHE_HOME=" + cache.path();
  Proc p = run_kvserve("generate -p 'Hello world' -n 4 --temp 0 --json", true, env);
  ASSERT_EQ(p.rc, 0) << p.out;
  EXPECT_NE(p.out.find("built-in demo model"), std::string::npos);
  const auto brace = p.out.find('{');
  ASSERT_NE(brace, std::string::npos);
  auto j = nlohmann::json::parse(p.out.substr(brace));
  EXPECT_EQ(j["tokens"].size(), 4u);
  // Second use: the file is reused, not rewritten, and gives the same tokens.
  Proc q = run_kvserve("generate -p 'Hello world' -n 4 --temp 0 --json", true, env);
  ASSERT_EQ(q.rc, 0);
  EXPECT_EQ(q.out.find("writing the built-in"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(q.out.substr(q.out.find('{')))["tokens"], j["tokens"]);
}

TEST(Cli, ClearErrorsWithNonZeroExit) {
  const std::string model = stories("stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(model);
  struct Case {
    std::string args, expect;
  };
  const std::vector<Case> cases = {
      {"generate -m /nonexistent/model.gguf -p hi", "/nonexistent/model.gguf"},
      {"generate -m " + model, "exactly one of -p"},
      {"generate -m " + model + " -p hi --prompt-tokens 1,2", "exactly one of -p"},
      {"generate -m " + model + " --prompt-tokens 1,x", "not a token id"},
      {"generate -m " + model + " --prompt-tokens 1,99999", "out of range"},
      {"generate -m " + model + " -p hi --kv-type q9", "--kv-type"},
      {"generate -m " + model + " -p hi --kv-budget 10", "smaller than one block"},
      {"generate -m " + model + " -p hi --kv-budget 1XB", "unknown size unit"},
      {"generate -m " + model + " -p hi --block-size 0", "block-size must be in [1, 256]"},
      {"generate -m " + model + " -p 'one two three four five six' --ctx 4",
       "more than the context"},
      {"generate -m " + model + " -p hi -n 40 --kv-blocks 1 --ignore-eos --temp 0",
       "KV cache full"},
      {"generate -m " + model + " -p hi --temp -1", "temperature"},
      {"generate -m " + model + " -p hi -t 100000", "--threads"},
      {"kv-size --layers 2", "--kv-heads"},
      {"synth --preset nope --dtype f16 -o /tmp/x.gguf", "nope"},
  };
  // A KV budget above the machine's memory: refused before committing (the OOM killer would
  // otherwise end the process part-way through), with the memory there is.
  std::vector<Case> all = cases;
  if (const auto avail = available_memory()) {
    const size_t gib = (2 * *avail >> 30) + 1;
    all.push_back({"generate -m " + model + " -p hi --kv-budget " + std::to_string(gib) + "GiB",
                   "of memory is available"});
    // Likewise a swap area for preempted sequences: refused before the server binds a port
    // (a server that started anyway is stopped by the timeout, and fails the check).
    const Proc s = run_kvserve("serve -m " + model + " --swap-space " + std::to_string(gib) + "GiB",
                               true, "timeout 30");
    EXPECT_NE(s.rc, 0);
    EXPECT_NE(s.out.find("of memory available"), std::string::npos) << s.out;
  }
  // A request refused before its first token (a bad sampling value, a prompt over the context)
  // prints only its error: the prompt is echoed with the first token, so stdout stays empty.
  const Proc bad_top_p = run_kvserve("generate -m " + model + " -p hi --top-p 2", false);
  EXPECT_NE(bad_top_p.rc, 0);
  EXPECT_EQ(bad_top_p.out, "");
  const Proc over_ctx =
      run_kvserve("generate -m " + model + " -p 'one two three four five six' --ctx 4", false);
  EXPECT_NE(over_ctx.rc, 0);
  EXPECT_EQ(over_ctx.out, "");
  for (const Case& c : all) {
    Proc p = run_kvserve(c.args);
    EXPECT_NE(p.rc, 0) << c.args;
    EXPECT_NE(p.out.find(c.expect), std::string::npos) << c.args << "\n" << p.out;
    EXPECT_EQ(p.out.find("invariant failed"), std::string::npos) << p.out;
  }
}

TEST(Cli, KvSizeFormula) {
  Proc p = run_kvserve(
      "kv-size --layers 32 --kv-heads 8 --head-dim 128 --ctx 8192 --batch 4 --memory 8GiB --json",
      false);
  ASSERT_EQ(p.rc, 0) << p.out;
  auto j = nlohmann::json::parse(p.out);
  EXPECT_EQ(j["bytes_per_token"], 131072.0);
  EXPECT_EQ(j["bytes_per_request"], 131072.0 * 8192);
  EXPECT_EQ(j["bytes_total"], 4.0 * 131072 * 8192);
  EXPECT_EQ(j["requests_fit"], 8);
  Proc t = run_kvserve("kv-size --layers 32 --kv-heads 8 --head-dim 128 --ctx 8192 --memory 8GiB",
                       false);
  EXPECT_NE(t.out.find("fits           8 requests of 8192 tokens"), std::string::npos) << t.out;
}

TEST(Cli, KvSizeWithBoundingPolicies) {
  // Sinks + window: a 32k-token request holds 4096 tokens, so 8x as many fit.
  Proc p = run_kvserve(
      "kv-size --layers 32 --kv-heads 8 --head-dim 128 --ctx 32768 --kv-sink 4 --kv-window 4092 "
      "--memory 8GiB --json",
      false);
  ASSERT_EQ(p.rc, 0) << p.out;
  auto j = nlohmann::json::parse(p.out);
  EXPECT_EQ(j["ctx"], 4096);
  EXPECT_EQ(j["ctx_requested"], 32768);
  EXPECT_EQ(j["bytes_per_request"], 131072.0 * 4096);
  EXPECT_EQ(j["requests_fit"], 16);
  EXPECT_EQ(j["policy"], "sink 4 + window 4092");
  Proc h = run_kvserve(
      "kv-size --layers 2 --kv-heads 1 --head-dim 64 --ctx 9000 --kv-evict h2o --kv-keep 1000 "
      "--json",
      false);
  ASSERT_EQ(h.rc, 0) << h.out;
  EXPECT_EQ(nlohmann::json::parse(h.out)["ctx"], 1000);
  Proc bad = run_kvserve("kv-size --layers 2 --kv-heads 1 --head-dim 64 --kv-keep 10");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.out.find("--kv-evict h2o"), std::string::npos) << bad.out;
}

TEST(Cli, KvSizeAndInspectFromModelFile) {
  const std::string model = stories("stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(model);
  Proc p = run_kvserve("kv-size -m " + model + " --ctx 512 --kv-type f32 --json", false);
  ASSERT_EQ(p.rc, 0) << p.out;
  EXPECT_EQ(nlohmann::json::parse(p.out)["bytes_per_token"], 1280.0);  // 2*5*4*8*4
  Proc i = run_kvserve("inspect -m " + model + " --json", false);
  ASSERT_EQ(i.rc, 0) << i.out;
  auto j = nlohmann::json::parse(i.out);
  EXPECT_EQ(j["arch"], "llama");
  EXPECT_EQ(j["n_layer"], 5);
  EXPECT_EQ(j["n_head_kv"], 4);
  EXPECT_EQ(j["kv_bytes_per_token"]["f16"], 640.0);
  EXPECT_EQ(j["tokenizer"]["n_vocab"], 512);
}

TEST(Cli, SynthListsPresetsAndWritesLoadableModel) {
  Proc l = run_kvserve("synth --list", false);
  ASSERT_EQ(l.rc, 0);
  for (const char* p :
       {"stories15m", "smollm-135m", "qwen2.5-0.5b", "tinyllama-1.1b", "llama-3-8b"})
    EXPECT_NE(l.out.find(p), std::string::npos) << p;
  test::TempDir dir;
  const std::string out = dir.file("q.gguf");
  Proc s = run_kvserve("synth --preset demo --dtype q4_0 -o " + out);
  ASSERT_EQ(s.rc, 0) << s.out;
  Proc g = run_kvserve("generate -m " + out + " -p 'a b c' -n 3 --temp 0 --json", false);
  ASSERT_EQ(g.rc, 0) << g.out;
  EXPECT_EQ(nlohmann::json::parse(g.out)["tokens"].size(), 3u);
}

TEST(Cli, GeneratePrefixCacheFlagsAndCachedTokens) {
  const std::string model = stories("stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(model);
  const std::string base = "generate -m " + model + " -p 'Once upon a time' -n 4 --temp 0 --json";
  Proc on = run_kvserve(base, false);
  ASSERT_EQ(on.rc, 0) << on.out;
  auto j = nlohmann::json::parse(on.out);
  EXPECT_EQ(j["cached_tokens"], 0);  // one request per process: nothing cached yet
  EXPECT_EQ(j["prefix_cache"], true);
  for (const char* extra : {" --prefix-cache off", " --hash sha256"}) {
    Proc p = run_kvserve(base + extra, false);
    ASSERT_EQ(p.rc, 0) << extra << p.out;
    EXPECT_EQ(nlohmann::json::parse(p.out)["tokens"], j["tokens"]) << extra;
  }
  EXPECT_EQ(
      nlohmann::json::parse(run_kvserve(base + " --prefix-cache off", false).out)["prefix_cache"],
      false);
  Proc bad = run_kvserve(base + " --prefix-cache maybe");
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.out.find("--prefix-cache must be on or off"), std::string::npos) << bad.out;
  Proc badh = run_kvserve(base + " --hash md5");
  EXPECT_EQ(badh.rc, 2);
  EXPECT_NE(badh.out.find("--hash must be xxh3 or sha256"), std::string::npos) << badh.out;
}

TEST(Cli, BenchPrefixJson) {
  const std::string model = stories("stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(model);
  Proc p = run_kvserve("bench prefix -m " + model + " --shared 40 --suffix 8 --requests 4 --json",
                       false);
  ASSERT_EQ(p.rc, 0) << p.out;
  auto j = nlohmann::json::parse(p.out);
  for (const char* k : {"ttft_p50_ms_off", "ttft_p95_ms_off", "ttft_p50_ms_on", "ttft_p95_ms_on"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  // 3 of 4 requests hit floor(40 / 16) * 16 = 32 tokens of 48.
  EXPECT_DOUBLE_EQ(j["hit_rate_optimum"].get<double>(), 3.0 * 32 / (4 * 48));
  EXPECT_DOUBLE_EQ(j["hit_rate"].get<double>(), j["hit_rate_optimum"].get<double>());
  EXPECT_EQ(j["cached_tokens_on"], nlohmann::json({0, 32, 32, 32}));
}

}  // namespace
}  // namespace kvserve
