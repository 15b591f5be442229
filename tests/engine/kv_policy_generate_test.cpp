// Bounded-memory policies through the generator: a window (or H2O budget) that covers the whole
// sequence changes nothing, bit for bit; a generation 10x longer than the window stays within
// the policy's block bound and runs past the trained context; policies work with the prefix
// cache; every block is free or cached afterwards.
#include <gtest/gtest.h>

#include <numeric>

#include "engine/generator.h"
#include "test_models.h"
#include "test_util.h"

namespace kvserve {
namespace {

struct Run {
  GenerateResult res;
  int peak = 0, used_after = 0, max_blocks = 0;
  KvCacheStats stats;
};

EngineOptions options(const KvPolicy& p, int block_size = 16) {
  EngineOptions eo;
  eo.block_size = block_size;
  eo.kv_type_k = eo.kv_type_v = KvType::kF32;
  eo.n_threads = 2;
  eo.prefill_chunk = 24;
  eo.kv_policy = p;
  return eo;
}

std::vector<int32_t> prompt_of(int n, int n_vocab) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = 1 + (i * 37 + 11) % (n_vocab - 1);
  return p;
}

// Runs `requests` prompts one after another on one generator.
std::vector<Run> generate(const Model& m, const EngineOptions& eo,
                          const std::vector<std::vector<int32_t>>& prompts, int n_predict) {
  auto g = Generator::create(m, eo);
  EXPECT_TRUE(g.is_ok()) << g.status().to_string();
  std::vector<Run> out;
  if (!g) return out;
  for (const auto& prompt : prompts) {
    GenerateRequest req;
    req.prompt = prompt;
    req.n_predict = n_predict;
    req.ignore_eos = true;
    req.keep_logits = true;
    auto r = (*g)->generate(req);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    if (!r) return out;
    Run run;
    run.res = std::move(*r);
    run.peak = run.res.blocks_used_peak;
    run.used_after = (*g)->kv().pool().n_blocks_used();
    run.stats = (*g)->kv().stats();
    const auto& L = (*g)->kv().layout();
    run.max_blocks = kv_policy_max_blocks(
        eo.kv_policy, L.block_size, kv_policy_chunk(eo.kv_policy, L.block_size, eo.prefill_chunk));
    out.push_back(std::move(run));
  }
  return out;
}

TEST(KvPolicyGenerate, PoliciesCoveringTheSequenceChangeNothing) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  const auto prompt = prompt_of(30, m->config.n_vocab);
  const auto full = generate(*m, options(FullKv{}), {prompt}, 40);
  ASSERT_EQ(full.size(), 1u);
  for (const KvPolicy& p :
       {KvPolicy{WindowKv{200, 0}}, KvPolicy{WindowKv{100, 4}}, KvPolicy{HeavyHitterKv{100, 10}}}) {
    const auto r = generate(*m, options(p), {prompt}, 40);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].res.tokens, full[0].res.tokens) << kv_policy_name(p);
    ASSERT_EQ(r[0].res.logits.size(), full[0].res.logits.size());
    for (size_t i = 0; i < r[0].res.logits.size(); ++i) {
      ASSERT_EQ(r[0].res.logits[i], full[0].res.logits[i]) << kv_policy_name(p) << " step " << i;
    }
    EXPECT_EQ(r[0].used_after, 0);
  }
}

TEST(KvPolicyGenerate, WindowChangesOutputOnceTheSequenceOutgrowsIt) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  const auto prompt = prompt_of(30, m->config.n_vocab);
  const auto full = generate(*m, options(FullKv{}), {prompt}, 40);
  const auto win = generate(*m, options(WindowKv{16, 0}), {prompt}, 40);
  ASSERT_EQ(full.size(), 1u);
  ASSERT_EQ(win.size(), 1u);
  EXPECT_NE(win[0].res.logits[0], full[0].res.logits[0]);
}

// Memory stays bounded through a generation 10x the window, past the trained context (demo: 256).
TEST(KvPolicyGenerate, MemoryStaysBoundedTenTimesPastTheWindow) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  const int w = 32;
  const auto prompt = prompt_of(40, m->config.n_vocab);
  for (const KvPolicy& p : {KvPolicy{WindowKv{w, 0}}, KvPolicy{WindowKv{w - 4, 4}},
                            KvPolicy{HeavyHitterKv{w, w / 4}}}) {
    const auto r = generate(*m, options(p), {prompt}, 10 * w);
    ASSERT_EQ(r.size(), 1u) << kv_policy_name(p);
    EXPECT_EQ(static_cast<int>(r[0].res.tokens.size()), 10 * w) << kv_policy_name(p);
    EXPECT_EQ(r[0].res.finish_reason, "length");
    EXPECT_LE(r[0].peak, r[0].max_blocks) << kv_policy_name(p);
    EXPECT_LE(r[0].peak, 6) << kv_policy_name(p);  // vs 23 blocks for 360 tokens in full
    EXPECT_EQ(r[0].used_after, 0);
  }
}

TEST(KvPolicyGenerate, WindowReusesCachedPrefixesAndMatchesAFreshRun) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  const auto prompt = prompt_of(64, m->config.n_vocab);
  EngineOptions eo = options(WindowKv{32, 0});
  eo.prefix_cache = true;
  const auto r = generate(*m, eo, {prompt, prompt}, 20);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].res.n_cached_tokens, 0);
  EXPECT_EQ(r[1].res.n_cached_tokens, 48);
  EXPECT_EQ(r[1].res.tokens, r[0].res.tokens);
  for (size_t i = 0; i < r[0].res.logits.size(); ++i) {
    ASSERT_EQ(r[1].res.logits[i], r[0].res.logits[i]) << i;
  }
  EXPECT_EQ(r[1].used_after, 0);
  // H2O with the prefix cache: runs, bounded, nothing leaks.
  EngineOptions h2o = options(HeavyHitterKv{32, 8});
  h2o.prefix_cache = true;
  const auto h = generate(*m, h2o, {prompt, prompt}, 60);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_GT(h[1].res.n_cached_tokens, 0);
  EXPECT_LE(h[1].peak, h[1].max_blocks);
  EXPECT_GT(h[1].stats.n_h2o_evicted, 0);
  EXPECT_EQ(h[1].used_after, 0);
}

// The real model: stories260K with attention sinks generates past its trained context (2048).
TEST(KvPolicyGenerate, SinksRunPastTheTrainedContextOnStories260K) {
  const std::string path = test::shared_model_path("stories260K/stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(path);
  const Model* m = test::load_model_once(path);
  ASSERT_NE(m, nullptr);
  const int n_ctx = m->config.n_ctx_train;
  const auto r = generate(*m, options(WindowKv{60, 4}), {{1, 403, 407}}, n_ctx + 100);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(static_cast<int>(r[0].res.tokens.size()), n_ctx + 100);
  EXPECT_LE(r[0].peak, r[0].max_blocks);
  EXPECT_EQ(r[0].used_after, 0);
  // Without a bounding policy the same request stops at the context.
  const auto full = generate(*m, options(FullKv{}), {{1, 403, 407}}, n_ctx + 100);
  ASSERT_EQ(full.size(), 1u);
  EXPECT_EQ(static_cast<int>(full[0].res.tokens.size()), n_ctx - 3);
}

}  // namespace
}  // namespace kvserve
