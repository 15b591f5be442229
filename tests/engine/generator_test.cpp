// The engine's contract: generation through the paged KV cache gives exactly the tokens (and,
// within 1e-5, the logits) of recomputing the whole sequence at every step, on real and synth
// models, at block sizes 1, 16 and 256; and the stories260K reference text byte for byte.
#include "engine/generator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "model/synth.h"
#include "test_models.h"
#include "test_util.h"

namespace kvserve {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct RunOut {
  GenerateResult res;
  int blocks_free_after = 0, blocks_total = 0;
};

RunOut run(const Model& m, std::vector<int32_t> prompt, int n, bool cache, int block_size,
           float temperature = 0.0f, KvType kv_type = KvType::kF32) {
  EngineOptions eo;
  eo.block_size = block_size;
  eo.kv_type_k = eo.kv_type_v = kv_type;
  eo.n_threads = 2;
  eo.prefill_chunk = 7;  // odd chunks, so chunk boundaries fall inside blocks
  auto g = Generator::create(m, eo);
  EXPECT_TRUE(g.is_ok()) << g.status().to_string();
  GenerateRequest req;
  req.prompt = std::move(prompt);
  req.n_predict = n;
  req.use_kv_cache = cache;
  req.keep_logits = true;
  req.ignore_eos = true;
  req.sampling.temperature = temperature;
  req.sampling.top_k = 20;
  req.sampling.seed = 99;
  auto r = (*g)->generate(req);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  RunOut out;
  out.res = std::move(*r);
  out.blocks_free_after = (*g)->kv().pool().n_blocks_available();
  out.blocks_total = (*g)->kv().pool().n_blocks_total();
  return out;
}

void expect_cache_equals_recompute(const Model& m, const std::vector<int32_t>& prompt, int n,
                                   int block_size, float temperature = 0.0f) {
  RunOut a = run(m, prompt, n, true, block_size, temperature);
  RunOut b = run(m, prompt, n, false, block_size, temperature);
  EXPECT_EQ(a.res.tokens, b.res.tokens) << "block size " << block_size;
  ASSERT_EQ(a.res.logits.size(), b.res.logits.size());
  float worst = 0;
  for (size_t i = 0; i < a.res.logits.size(); ++i) {
    for (size_t j = 0; j < a.res.logits[i].size(); ++j) {
      worst = std::max(worst, std::fabs(a.res.logits[i][j] - b.res.logits[i][j]));
    }
  }
  EXPECT_LE(worst, 1e-5f) << "block size " << block_size;
  // Every block is back in the pool after each run.
  EXPECT_EQ(a.blocks_free_after, a.blocks_total);
  EXPECT_EQ(b.blocks_free_after, b.blocks_total);
}

std::vector<int32_t> some_prompt(int n, int n_vocab, int salt) {
  std::vector<int32_t> p = {1};
  for (int i = 1; i < n; ++i) p.push_back(3 + (i * 37 + salt * 11) % (n_vocab - 3));
  return p;
}

class CacheVsRecompute : public ::testing::TestWithParam<int> {};

TEST_P(CacheVsRecompute, Stories260KGguf) {
  const std::string path = test::shared_model_path("stories260K/stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(path);
  const Model* m = test::load_model_once(path);
  ASSERT_NE(m, nullptr);
  expect_cache_equals_recompute(*m, some_prompt(19, m->config.n_vocab, 1), 24, GetParam());
  expect_cache_equals_recompute(*m, some_prompt(5, m->config.n_vocab, 2), 16, GetParam(), 0.9f);
}

TEST_P(CacheVsRecompute, Stories260KQ80Checkpoint) {
  const std::string path = test::shared_model_path("stories260K/stories260K_q80.bin");
  KV_REQUIRE_SHARED_FILE(path);
  const Model* m = test::load_model_once(path);
  ASSERT_NE(m, nullptr);
  expect_cache_equals_recompute(*m, some_prompt(11, m->config.n_vocab, 3), 20, GetParam());
}

TEST_P(CacheVsRecompute, SynthModelsEveryWeightType) {
  for (DType t : {DType::kF32, DType::kF16, DType::kQ8_0, DType::kQ4_0}) {
    SCOPED_TRACE(dtype_name(t));
    const Model* m = test::synth_demo_model(t, 5);
    ASSERT_NE(m, nullptr);
    expect_cache_equals_recompute(*m, some_prompt(13, m->config.n_vocab, 4), 12, GetParam());
  }
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, CacheVsRecompute, ::testing::Values(1, 16, 256));

TEST(Generator, F16KvCacheAlsoMatchesRecompute) {
  const Model* m = test::synth_demo_model(DType::kF16, 5);
  ASSERT_NE(m, nullptr);
  RunOut a = run(*m, some_prompt(9, m->config.n_vocab, 5), 10, true, 16, 0, KvType::kF16);
  RunOut b = run(*m, some_prompt(9, m->config.n_vocab, 5), 10, false, 16, 0, KvType::kF16);
  EXPECT_EQ(a.res.tokens, b.res.tokens);
  EXPECT_EQ(a.res.logits, b.res.logits);
}

// The reference greedy text of llama2.c's run.c: prompt "Once upon a time" with BOS, 256
// positions in all (run.c's steps count the prompt), written as prompt + continuation + "\n".
void expect_reference_text(const std::string& model_file) {
  const std::string dir = test::shared_model_path("stories260K");
  const std::string path = dir + "/" + model_file;
  KV_REQUIRE_SHARED_FILE(path);
  const Model* m = test::load_model_once(path);
  ASSERT_NE(m, nullptr);
  ASSERT_NE(m->tokenizer, nullptr);
  const std::string ref = read_text(dir + "/reference_greedy_fp32_run.c.txt");
  ASSERT_FALSE(ref.empty());
  const std::vector<int32_t> prompt = m->tokenizer->encode("Once upon a time", true);
  ASSERT_EQ(prompt.front(), m->tokenizer->bos());
  for (KvType kv : {KvType::kF32, KvType::kF16}) {
    EngineOptions eo;
    eo.kv_type_k = eo.kv_type_v = kv;
    auto g = Generator::create(*m, eo);
    ASSERT_TRUE(g.is_ok());
    GenerateRequest req;
    req.prompt = prompt;
    req.n_predict = 256 - static_cast<int>(prompt.size()) + 1;
    auto r = (*g)->generate(req);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    std::string text = m->tokenizer->decode(prompt);
    text += m->tokenizer->decode(r->tokens, prompt.back());
    EXPECT_EQ(text + "\n", ref) << "KV " << kv_type_name(kv);
  }
}

TEST(Reference, Stories260KGgufGreedyTextMatchesRunC) {
  expect_reference_text("stories260K.gguf");
}
TEST(Reference, Stories260KLlama2cGreedyTextMatchesRunC) {
  expect_reference_text("stories260K.bin");
}

TEST(Generator, ExhaustedKvBudgetIsAClearErrorAndLeaksNothing) {
  const Model* m = test::synth_demo_model(DType::kF32, 5);
  ASSERT_NE(m, nullptr);
  EngineOptions eo;
  eo.block_size = 4;
  eo.kv_blocks = 3;  // 12 tokens
  auto g = Generator::create(*m, eo);
  ASSERT_TRUE(g.is_ok());
  GenerateRequest req;
  req.prompt = some_prompt(8, m->config.n_vocab, 6);
  req.n_predict = 10;  // needs 17 positions
  req.ignore_eos = true;
  auto r = (*g)->generate(req);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(r.status().message().find("KV cache full"), std::string::npos);
  EXPECT_EQ((*g)->kv().pool().n_blocks_available(), 3);
  EXPECT_EQ((*g)->kv().n_sequences(), 0);
  // The same generator still works for a request that fits.
  req.n_predict = 4;
  auto ok = (*g)->generate(req);
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(ok->tokens.size(), 4u);
  EXPECT_EQ(ok->blocks_used_peak, 3);
}

TEST(Generator, RejectsBadPrompts) {
  const Model* m = test::synth_demo_model(DType::kF32, 5);
  ASSERT_NE(m, nullptr);
  EngineOptions eo;
  eo.n_ctx = 16;
  auto g = Generator::create(*m, eo);
  ASSERT_TRUE(g.is_ok());
  GenerateRequest req;
  EXPECT_EQ((*g)->generate(req).status().code(), StatusCode::kInvalidArgument);  // empty
  req.prompt = {1, m->config.n_vocab};
  EXPECT_NE((*g)->generate(req).status().message().find("out of range"), std::string::npos);
  req.prompt = some_prompt(17, m->config.n_vocab, 7);
  EXPECT_NE((*g)->generate(req).status().message().find("more than the context of 16"),
            std::string::npos);
  req.prompt = {1, 5};
  req.sampling.top_p = 0;
  EXPECT_EQ((*g)->generate(req).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*g)->kv().pool().n_blocks_available(), (*g)->kv().pool().n_blocks_total());
}

TEST(Generator, StopsAtContextLimitAndAtCancel) {
  const Model* m = test::synth_demo_model(DType::kF32, 5);
  ASSERT_NE(m, nullptr);
  EngineOptions eo;
  eo.n_ctx = 10;
  auto g = Generator::create(*m, eo);
  ASSERT_TRUE(g.is_ok());
  GenerateRequest req;
  req.prompt = some_prompt(6, m->config.n_vocab, 8);
  req.n_predict = 100;
  req.ignore_eos = true;
  auto r = (*g)->generate(req);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->tokens.size(), 4u);  // prompt + generated never exceed the context of 10
  EXPECT_EQ(r->finish_reason, "length");
  int seen = 0;
  req.on_token = [&](int32_t) { return ++seen < 2; };
  auto c = (*g)->generate(req);
  ASSERT_TRUE(c.is_ok());
  EXPECT_EQ(c->finish_reason, "cancelled");
  EXPECT_EQ(c->tokens.size(), 2u);
}

}  // namespace
}  // namespace kvserve
