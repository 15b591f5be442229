// Prefix caching end to end through the Generator: greedy outputs with the cache on are the
// tokens of the cache off across many overlapping prompts with evictions; multi-turn reuse;
// parallel sampling by fork equals separate runs; salts; forced collisions; SHA-256 keys.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "engine/generator.h"
#include "model/synth.h"
#include "prefix/prefix_cache.h"
#include "test_models.h"
#include "test_util.h"

namespace kvserve {
namespace {

std::unique_ptr<Generator> make_gen(const Model& m, bool prefix, int block_size, int kv_blocks,
                                    HashKind hash = HashKind::kXxh3_128) {
  EngineOptions eo;
  eo.block_size = block_size;
  eo.kv_type_k = eo.kv_type_v = KvType::kF32;
  eo.kv_blocks = kv_blocks;
  eo.n_threads = 2;
  eo.prefill_chunk = 5;
  eo.prefix_cache = prefix;
  eo.hash = hash;
  auto g = Generator::create(m, eo);
  EXPECT_TRUE(g.is_ok()) << g.status().to_string();
  return g ? std::move(*g) : nullptr;
}

GenerateResult gen(Generator& g, const std::vector<int32_t>& prompt, int n,
                   const std::string& salt = "", float temp = 0.0f, uint64_t seed = 1) {
  GenerateRequest req;
  req.prompt = prompt;
  req.n_predict = n;
  req.ignore_eos = true;
  req.cache_salt = salt;
  req.sampling.temperature = temp;
  req.sampling.seed = seed;
  req.sampling.top_k = 20;
  auto r = g.generate(req);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  // After every request: nothing left in use, every block free or cached-evictable.
  EXPECT_EQ(g.kv().pool().n_blocks_used(), 0);
  EXPECT_EQ(g.kv().pool().n_blocks_available(), g.kv().pool().n_blocks_total());
  return r ? *r : GenerateResult{};
}

// 40 prompts built from 4 shared heads and short tails (some exact repeats), shuffled.
std::vector<std::vector<int32_t>> overlapping_prompts(int n_vocab) {
  std::mt19937 rng(123);
  auto tok = [&] { return 3 + static_cast<int32_t>(rng() % (n_vocab - 3)); };
  std::vector<std::vector<int32_t>> heads;
  for (int h = 0; h < 4; ++h) {
    std::vector<int32_t> head = {1};
    const int len = 9 + 7 * h;
    while (static_cast<int>(head.size()) < len) head.push_back(tok());
    heads.push_back(head);
  }
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 40; ++i) {
    std::vector<int32_t> p = heads[i % 4];
    if (i % 5 == 4) {
      p = prompts[i - 4];  // an exact repeat
    } else {
      const int tail = static_cast<int>(rng() % 12);
      for (int t = 0; t < tail; ++t) p.push_back(tok());
    }
    prompts.push_back(p);
  }
  std::shuffle(prompts.begin(), prompts.end(), rng);
  return prompts;
}

void expect_on_equals_off(const Model& m, int block_size, int kv_blocks,
                          HashKind hash = HashKind::kXxh3_128) {
  auto on = make_gen(m, true, block_size, kv_blocks, hash);
  auto off = make_gen(m, false, block_size, kv_blocks, hash);
  ASSERT_TRUE(on && off);
  int n_cached = 0;
  for (const auto& p : overlapping_prompts(m.config.n_vocab)) {
    const GenerateResult a = gen(*on, p, 8);
    const GenerateResult b = gen(*off, p, 8);
    EXPECT_EQ(a.tokens, b.tokens) << "prompt of " << p.size();
    EXPECT_EQ(b.n_cached_tokens, 0);
    EXPECT_LE(a.n_cached_tokens, static_cast<int>(p.size()) - 1);
    EXPECT_EQ(a.n_cached_tokens % block_size, 0);
    n_cached += a.n_cached_tokens;
  }
  const KvCacheStats st = on->kv().stats();
  EXPECT_GT(n_cached, 0);
  EXPECT_EQ(st.n_hit_tokens, n_cached);
  EXPECT_GT(st.n_evictions, 0) << "the pool should be small enough to force evictions";
  EXPECT_EQ(off->kv().stats().n_hit_tokens, 0);
}

TEST(PrefixGenerate, GreedyOnEqualsOffDemoModel) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  expect_on_equals_off(*m, 4, 24);
  expect_on_equals_off(*m, 16, 8);
}

TEST(PrefixGenerate, GreedyOnEqualsOffStories260K) {
  const std::string path = test::shared_model_path("stories260K/stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(path);
  const Model* m = test::load_model_once(path);
  ASSERT_NE(m, nullptr);
  expect_on_equals_off(*m, 4, 24);
  expect_on_equals_off(*m, 4, 24, HashKind::kSha256);
}

TEST(PrefixGenerate, ForcedCollisionsAreMissesNotWrongOutput) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  auto on = make_gen(*m, true, 4, 64);
  auto off = make_gen(*m, false, 4, 64);
  auto* hash = dynamic_cast<HashPrefixCache*>(&on->kv().prefix_cache_for_testing());
  ASSERT_NE(hash, nullptr);
  hash->set_key_fn_for_testing([](const std::optional<BlockKey>&, std::span<const int32_t>,
                                  std::string_view) { return BlockKey{}; });
  const auto prompts = overlapping_prompts(m->config.n_vocab);
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(gen(*on, prompts[i], 6).tokens, gen(*off, prompts[i], 6).tokens);
  }
}

TEST(PrefixGenerate, MultiTurnReusesEveryFullBlockGeneratedTokensIncluded) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  auto on = make_gen(*m, true, 4, 64);
  auto off = make_gen(*m, false, 4, 64);
  std::vector<int32_t> convo = {1, 10, 11, 12, 13, 14, 15};
  int prev_computed = 0;
  for (int turn = 0; turn < 4; ++turn) {
    const GenerateResult a = gen(*on, convo, 9);
    const GenerateResult b = gen(*off, convo, 9);
    ASSERT_EQ(a.tokens, b.tokens) << "turn " << turn;
    if (turn > 0) {
      // Everything the previous turn computed (its prompt and all generated tokens but the
      // last, never fed back), in full blocks, capped below the whole prompt.
      EXPECT_EQ(a.n_cached_tokens,
                std::min(prev_computed / 4 * 4, (static_cast<int>(convo.size()) - 1) / 4 * 4));
    }
    prev_computed = static_cast<int>(convo.size() + a.tokens.size()) - 1;
    convo.insert(convo.end(), a.tokens.begin(), a.tokens.end());
    for (int u = 0; u < 3; ++u) convo.push_back(20 + turn * 3 + u);  // the next user message
  }
}

TEST(PrefixGenerate, SaltsIsolateTenants) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  auto g = make_gen(*m, true, 4, 64);
  const std::vector<int32_t> p = {1, 5, 6, 7, 8, 9, 10, 11, 12, 13};
  EXPECT_EQ(gen(*g, p, 2, "alice").n_cached_tokens, 0);
  EXPECT_EQ(gen(*g, p, 2, "bob").n_cached_tokens, 0);
  EXPECT_EQ(gen(*g, p, 2).n_cached_tokens, 0);
  EXPECT_EQ(gen(*g, p, 2, "alice").n_cached_tokens, 8);
  EXPECT_EQ(gen(*g, p, 2, "bob").n_cached_tokens, 8);
  EXPECT_EQ(gen(*g, p, 2).n_cached_tokens, 8);
}

TEST(PrefixGenerate, ParallelSamplingByForkEqualsSeparateRuns) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  for (bool prefix : {true, false}) {
    auto g = make_gen(*m, prefix, 4, 64);
    GenerateRequest req;
    req.prompt = {1, 30, 31, 32, 33, 34, 35, 36, 37, 38};  // the last block is shared and partial
    req.n_predict = 10;
    req.ignore_eos = true;
    req.sampling.temperature = 0.9f;
    req.sampling.top_k = 20;
    const std::vector<uint64_t> seeds = {3, 4, 5};
    auto par = g->generate_parallel(req, seeds);
    ASSERT_TRUE(par.is_ok()) << par.status().to_string();
    ASSERT_EQ(par->size(), 3u);
    EXPECT_GT(g->kv().stats().n_cow_copies, 0);
    EXPECT_EQ(g->kv().pool().n_blocks_used(), 0);
    auto ref = make_gen(*m, false, 4, 64);
    for (size_t i = 0; i < seeds.size(); ++i) {
      const GenerateResult one = gen(*ref, req.prompt, 10, "", 0.9f, seeds[i]);
      EXPECT_EQ((*par)[i].tokens, one.tokens) << "seed " << seeds[i];
    }
    EXPECT_NE((*par)[0].tokens, (*par)[1].tokens);
  }
}

}  // namespace
}  // namespace kvserve
