// EngineCore driven step by step in the test's thread, as Generator and EngineLoop drive it:
// what a step does and reports, and the modes of the one path (forced tokens, recompute,
// cancellation, requests answered without a step).
#include "engine/engine_core.h"

#include <gtest/gtest.h>

#include "test_models.h"

namespace kvserve {
namespace {

struct Collected {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
  std::string finish_reason;
  int n_events = 0;
};

class EngineCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = test::synth_demo_model(DType::kF32, 5);
    ASSERT_NE(model_, nullptr);
    EngineCoreOptions o;
    o.engine.kv_type_k = o.engine.kv_type_v = KvType::kF32;
    o.engine.n_ctx = 128;
    o.engine.n_threads = 2;
    auto core = EngineCore::create(*model_, o);
    ASSERT_TRUE(core.is_ok()) << core.status().to_string();
    core_ = std::move(*core);
  }
  std::shared_ptr<Request> request(int max_tokens) const {
    auto r = std::make_shared<Request>();
    SeqSpec s;
    s.prompt = {1, 17, 33, 65, 129, 200, 7};
    s.max_tokens = max_tokens;
    s.sampling.temperature = 0;
    s.ignore_eos = true;
    r->seqs.push_back(s);
    return r;
  }
  // Drains the channel into c; true when the sequence has finished.
  static bool drain(Request& r, Collected& c) {
    bool done = false;
    for (SeqEvent& e : r.channel->wait(std::chrono::milliseconds(0))) {
      ++c.n_events;
      c.tokens.insert(c.tokens.end(), e.tokens.begin(), e.tokens.end());
      for (auto& l : e.logits) c.logits.push_back(std::move(l));
      if (e.finished) {
        c.finish_reason = e.finish_reason;
        done = true;
      }
    }
    return done;
  }
  Collected run(const std::shared_ptr<Request>& r) {
    Collected c;
    core_->add(r);
    for (int i = 0; i < 1000 && !drain(*r, c); ++i) core_->step();
    return c;
  }
  const Model* model_ = nullptr;
  std::unique_ptr<EngineCore> core_;
};

TEST_F(EngineCoreTest, AnIdleCoreComputesNothing) {
  EXPECT_TRUE(core_->idle());
  EXPECT_FALSE(core_->step());
  EXPECT_EQ(core_->stats().steps_total, 0);
}

TEST_F(EngineCoreTest, ZeroMaxTokensIsAnsweredWithoutAStep) {
  auto r = request(0);
  core_->add(r);
  Collected c;
  EXPECT_TRUE(drain(*r, c));
  EXPECT_EQ(c.finish_reason, "length");
  EXPECT_TRUE(c.tokens.empty());
  EXPECT_EQ(core_->stats().steps_total, 0);
  EXPECT_TRUE(core_->idle());
}

TEST_F(EngineCoreTest, OneStepPerGeneratedTokenAfterThePrefill) {
  int n_finished = 0;
  core_->set_on_finish([&] { ++n_finished; });
  const Collected c = run(request(5));
  EXPECT_EQ(c.tokens.size(), 5u);
  EXPECT_EQ(c.finish_reason, "length");
  EXPECT_EQ(core_->stats().steps_total, 5);  // the prefill samples the first token
  EXPECT_EQ(core_->stats().generated_tokens_total, 5);
  EXPECT_EQ(n_finished, 1);
  EXPECT_EQ(core_->kv().pool().n_blocks_used(), 0);
}

TEST_F(EngineCoreTest, ForcedTokensAreTakenAndTheirLogitsReported) {
  const Collected free_run = [&] {
    auto r = request(3);
    r->seqs[0].keep_logits = true;
    return run(r);
  }();
  auto r = request(3);
  r->seqs[0].forced = {5, 6, 7};
  r->seqs[0].keep_logits = true;
  const Collected forced = run(r);
  EXPECT_EQ(forced.tokens, (std::vector<int32_t>{5, 6, 7}));
  ASSERT_EQ(forced.logits.size(), 3u);
  for (const auto& l : forced.logits)
    EXPECT_EQ(l.size(), static_cast<size_t>(model_->config.n_vocab));
  // The first logits come from the prompt alone: forcing cannot change them.
  ASSERT_EQ(free_run.logits.size(), 3u);
  EXPECT_EQ(forced.logits[0], free_run.logits[0]);
  if (free_run.tokens[0] != 5) {
    EXPECT_NE(forced.logits[1], free_run.logits[1]);  // after a different token
  }
}

TEST_F(EngineCoreTest, RecomputingEveryStepGivesTheCachedTokens) {
  const Collected cached = run(request(8));
  auto r = request(8);
  r->recompute = true;
  r->use_prefix_cache = false;
  const Collected recomputed = run(r);
  EXPECT_EQ(recomputed.tokens, cached.tokens);
  EXPECT_EQ(core_->kv().pool().n_blocks_used(), 0);
}

TEST_F(EngineCoreTest, ACancelledSequenceEndsAtTheNextStepAndFreesItsBlocks) {
  auto r = request(50);
  core_->add(r);
  Collected c;
  core_->step();
  core_->step();
  drain(*r, c);
  EXPECT_EQ(c.tokens.size(), 2u);
  EXPECT_GT(core_->kv().pool().n_blocks_used(), 0);
  r->channel->cancel();
  EXPECT_FALSE(core_->step());  // the only sequence is gone before anything is planned
  EXPECT_TRUE(drain(*r, c));
  EXPECT_EQ(c.finish_reason, "cancelled");
  EXPECT_EQ(c.tokens.size(), 2u);
  EXPECT_EQ(core_->kv().pool().n_blocks_used(), 0);
  EXPECT_TRUE(core_->idle());
}

TEST_F(EngineCoreTest, ValidationNamesTheProblem) {
  SeqSpec s;
  EXPECT_NE(core_->validate(s).message().find("empty"), std::string::npos);
  s.prompt.assign(129, 3);
  EXPECT_NE(core_->validate(s).message().find("more than the context of 128"), std::string::npos);
  s.prompt = {3, 4};
  s.forced = {5};
  s.max_tokens = 2;
  EXPECT_EQ(core_->validate(s).code(), StatusCode::kInvalidArgument);
  s.max_tokens = 1;
  EXPECT_TRUE(core_->validate(s).is_ok());
}

TEST_F(EngineCoreTest, EachStepHandsItsKvEventsToTheListeners) {
  std::vector<KvEvent> seen;
  int n_batches = 0;
  core_->add_event_listener([&](const std::vector<KvEvent>& batch) {
    ++n_batches;
    seen.insert(seen.end(), batch.begin(), batch.end());
  });
  auto r = request(20);             // 7 + 20 tokens: one full block of 16 is registered
  r->seqs[0].prompt.resize(40, 9);  // 40 + 20: three full blocks
  run(r);
  std::vector<BlockStored> stored;
  for (const KvEvent& e : seen) {
    ASSERT_TRUE(std::holds_alternative<BlockStored>(e));
    stored.push_back(std::get<BlockStored>(e));
  }
  ASSERT_EQ(stored.size(), 3u);
  EXPECT_FALSE(stored[0].parent.has_value());
  for (size_t i = 1; i < stored.size(); ++i) EXPECT_EQ(stored[i].parent, stored[i - 1].key);
  const std::vector<int32_t> first(r->seqs[0].prompt.begin(), r->seqs[0].prompt.begin() + 16);
  EXPECT_EQ(stored[0].tokens, first);
  EXPECT_LE(n_batches, core_->stats().steps_total.load());
  // The same prompt again hits those blocks: nothing new is stored.
  seen.clear();
  run(r);
  EXPECT_TRUE(seen.empty());
  core_->reset_prefix_cache();
  EXPECT_EQ(seen, (std::vector<KvEvent>{AllBlocksCleared{KvTier::kPool}}));
}

TEST_F(EngineCoreTest, ASnapshotIsPublishedEveryStep) {
  auto before = core_->snapshot();
  ASSERT_NE(before, nullptr);
  EXPECT_TRUE(before->seqs.empty());
  auto r = request(10);
  r->seqs[0].prompt.resize(40, 9);
  core_->add(r);
  core_->step();
  auto during = core_->snapshot();
  ASSERT_EQ(during->seqs.size(), 1u);
  EXPECT_TRUE(during->seqs[0].running);
  EXPECT_EQ(during->seqs[0].n_prompt, 40);
  EXPECT_EQ(during->seqs[0].n_computed, 40);
  EXPECT_EQ(during->seqs[0].n_known, 41);
  ASSERT_EQ(during->tiers.size(), 1u);
  EXPECT_EQ(during->tiers[0].tier, KvTier::kPool);
  EXPECT_EQ(during->tiers[0].blocks_used, 3);
  EXPECT_EQ(during->step, 1);
  Collected c;
  for (int i = 0; i < 100 && !drain(*r, c); ++i) core_->step();
  auto after = core_->snapshot();
  EXPECT_TRUE(after->seqs.empty());
  const TierSnapshot& pool = after->tiers[0];
  EXPECT_EQ(pool.blocks_used, 0);
  EXPECT_EQ(pool.blocks_cached, 3);  // 49 tokens computed: three full blocks registered
  EXPECT_EQ(pool.blocks_cached + pool.blocks_free, pool.blocks_total);
  EXPECT_EQ(pool.query_tokens, 40);
  EXPECT_EQ(during.use_count(), 1);  // the old one is the reader's own, untouched
  EXPECT_EQ(during->seqs.size(), 1u);
}

}  // namespace
}  // namespace kvserve
