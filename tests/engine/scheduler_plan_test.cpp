// Scheduler::schedule's plan on a tensor-free cache: which sequences run, how many tokens each,
// who is preempted, the watermark, sibling deferral, and the offline modes (no preemption, no
// prefix cache, recompute). No model: the test plays the engine, committing each plan and
// appending a token for every chunk that samples.
#include <gtest/gtest.h>

#include "engine/scheduler.h"
#include "prefix/prefix_cache.h"

namespace kvserve {
namespace {

struct Planned {
  SeqId id;
  int pos0, n_tokens;
  bool operator==(const Planned&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Planned& p) {
  return os << "{seq " << p.id << ", pos " << p.pos0 << ", n " << p.n_tokens << "}";
}

class SchedulerPlanTest : public ::testing::Test {
 protected:
  // A cache of n_blocks blocks of 4 tokens; with keys when prefix is set.
  void make_cache(int n_blocks, bool prefix = false) {
    const KvLayout l{.n_layer = 1,
                     .n_head_kv = 1,
                     .head_dim = 4,
                     .block_size = 4,
                     .k_type = KvType::kF32,
                     .v_type = KvType::kF32};
    std::unique_ptr<PrefixCache> pc;
    if (prefix) pc = std::make_unique<HashPrefixCache>(HashKind::kXxh3_128, Digest{});
    auto kv = KvCacheManager::create(l, n_blocks, std::move(pc));
    ASSERT_TRUE(kv.is_ok()) << kv.status().to_string();
    kv_ = std::move(*kv);
  }
  // One request whose sequences have these prompt lengths (token 7 repeated, or distinct ids).
  std::shared_ptr<Request> request(const std::vector<int>& lens, int max_tokens = 100) {
    auto r = std::make_shared<Request>();
    for (size_t i = 0; i < lens.size(); ++i) {
      SeqSpec s;
      for (int t = 0; t < lens[i]; ++t) s.prompt.push_back(10 + t);
      s.max_tokens = max_tokens;
      s.index = static_cast<int>(i);
      r->seqs.push_back(s);
    }
    return r;
  }
  void add_all(Scheduler& s, const std::shared_ptr<Request>& r) {
    for (const SeqSpec& spec : r->seqs) s.add(std::make_unique<Sequence>(next_id_++, r, &spec));
  }
  // Plans one step, commits it and samples token 9 for each chunk that reaches the end.
  std::vector<Planned> step(Scheduler& s) {
    auto plan = s.schedule();
    forked_ = s.commit(plan);
    std::vector<Planned> out;
    for (auto& c : plan) {
      out.push_back({c.seq->id, c.pos0, c.n_tokens});
      if (c.samples()) c.seq->tokens.push_back(9);
    }
    for (auto& f : forked_) f.seq->tokens.push_back(9);
    return out;
  }
  std::unique_ptr<KvCacheManager> kv_;
  std::vector<ForkedSeq> forked_;  // by the last step()
  SeqId next_id_ = 0;
};

TEST_F(SchedulerPlanTest, DecodesFirstThenPrefillChunksOldestFirst) {
  make_cache(1000);
  SchedulerOptions so;
  so.max_batch_tokens = 32;
  so.max_seqs = 4;
  Scheduler s(*kv_, so);
  add_all(s, request({5, 100, 100}));
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 0, 5}, {1, 0, 27}}));
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 5, 1}, {1, 27, 31}}));
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 6, 1}, {1, 58, 31}}));
  // Sequence 1 has 11 tokens left: the rest of the budget goes to sequence 2.
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 7, 1}, {1, 89, 11}, {2, 0, 20}}));
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 8, 1}, {1, 100, 1}, {2, 20, 30}}));
}

TEST_F(SchedulerPlanTest, MaxSeqsLimitsAdmission) {
  make_cache(1000);
  SchedulerOptions so;
  so.max_seqs = 2;
  Scheduler s(*kv_, so);
  add_all(s, request({3, 3, 3}));
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 0, 3}, {1, 0, 3}}));
  EXPECT_EQ(s.n_running(), 2);
  EXPECT_EQ(s.n_waiting(), 1);
}

TEST_F(SchedulerPlanTest, TheWatermarkKeepsBlocksFreeAtAdmission) {
  make_cache(20);
  SchedulerOptions so;
  so.watermark = 0.1;  // 2 blocks
  Scheduler s(*kv_, so);
  EXPECT_EQ(s.watermark_blocks(), 2);
  add_all(s, request({40, 36}));  // 10 blocks, then 9: 10 + 9 + 2 > 20
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 0, 40}}));
  EXPECT_EQ(s.n_waiting(), 1);

  make_cache(20);
  so.watermark = 0;  // none: 10 + 9 <= 20
  Scheduler none(*kv_, so);
  EXPECT_EQ(none.watermark_blocks(), 0);
  add_all(none, request({40, 36}));
  EXPECT_EQ(step(none), (std::vector<Planned>{{2, 0, 40}, {3, 0, 36}}));
}

TEST_F(SchedulerPlanTest, AGrowingDecodePreemptsTheNewestSequence) {
  make_cache(4);
  SchedulerOptions so;
  so.watermark = 0;
  Scheduler s(*kv_, so);
  add_all(s, request({8, 7}));  // 2 blocks each: the pool is full
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 0, 8}, {1, 0, 7}}));
  // Sequence 0 needs a third block for its token 8: sequence 1 (newer) is preempted; its slot
  // is not planned, and it waits at the front with nothing computed.
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 8, 1}}));
  EXPECT_EQ(s.n_preemptions(), 1);
  EXPECT_EQ(s.n_running(), 1);
  ASSERT_EQ(s.n_waiting(), 1);
  EXPECT_EQ(s.all().back()->n_computed, 0);
  EXPECT_EQ(s.all().back()->n_preemptions, 1);
}

TEST_F(SchedulerPlanTest, WithoutPreemptionTheSequenceThatCannotGrowFails) {
  make_cache(4);
  SchedulerOptions so;
  so.watermark = 0;
  so.preemption = PreemptionMode::kNone;
  Scheduler s(*kv_, so);
  add_all(s, request({8, 7}));
  step(s);
  // Sequence 0 cannot grow and takes nothing from sequence 1: it fails, sequence 1 decodes.
  EXPECT_EQ(step(s), (std::vector<Planned>{{1, 7, 1}}));
  auto failed = s.take_failed();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0]->id, 0);
  EXPECT_EQ(failed[0]->failure.code(), StatusCode::kOutOfMemory);
  EXPECT_EQ(s.n_preemptions(), 0);
  s.finish(failed[0]);
  EXPECT_TRUE(s.take_failed().empty());
  EXPECT_EQ(kv_->pool().n_blocks_used(), 2);
}

TEST_F(SchedulerPlanTest, SiblingsAreForkedFromTheLeaderWhenItsPromptIsDone) {
  make_cache(100);
  SchedulerOptions so;
  so.max_seqs = 2;
  Scheduler s(*kv_, so);
  auto r = request({10, 10, 10});
  std::vector<std::unique_ptr<Sequence>> group;
  for (const SeqSpec& spec : r->seqs)
    group.push_back(std::make_unique<Sequence>(next_id_++, r, &spec));
  s.add_siblings(std::move(group));
  // The leader computes the prompt alone; the others are deferred, not refused.
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 0, 10}}));
  // Then one sibling (max_seqs 2) is forked: every block shared, sampling from the leader's row.
  ASSERT_EQ(forked_.size(), 1u);
  EXPECT_EQ(forked_[0].seq->id, 1);
  EXPECT_EQ(forked_[0].plan_index, 0u);
  EXPECT_EQ(kv_->table(1).blocks, kv_->table(0).blocks);
  EXPECT_EQ(kv_->pool().n_blocks_used(), 3);
  EXPECT_EQ(s.n_waiting(), 1);
  // Both decode; the shared partial block is copied once, by the first writer.
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 10, 1}, {1, 10, 1}}));
  EXPECT_EQ(kv_->stats().n_cow_copies, 1);
  // The third, left waiting, starts alone once there is room.
  s.finish(s.all()[0]);
  EXPECT_EQ(step(s), (std::vector<Planned>{{1, 11, 1}, {2, 0, 10}}));
}

TEST_F(SchedulerPlanTest, APrivateRequestNeitherReadsNorRegistersCachedBlocks) {
  make_cache(100, /*prefix=*/true);
  SchedulerOptions so;
  Scheduler s(*kv_, so);
  auto pub = request({12});
  add_all(s, pub);
  step(s);
  s.finish(s.all()[0]);
  EXPECT_EQ(kv_->pool().n_blocks_cached(), 3);
  auto priv = request({12});
  priv->use_prefix_cache = false;
  add_all(s, priv);
  EXPECT_EQ(step(s), (std::vector<Planned>{{1, 0, 12}}));  // nothing reused
  EXPECT_EQ(s.all()[0]->n_cached, 0);
  s.finish(s.all()[0]);
  EXPECT_EQ(kv_->pool().n_blocks_cached(), 3);  // nothing added
}

TEST_F(SchedulerPlanTest, RecomputeDropsTheKvAfterEverySampledStep) {
  make_cache(100);
  SchedulerOptions so;
  so.max_batch_tokens = 8;
  Scheduler s(*kv_, so);
  auto r = request({10});
  r->recompute = true;
  r->use_prefix_cache = false;
  add_all(s, r);
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 0, 8}}));  // a chunk that does not sample
  EXPECT_EQ(kv_->table(0).n_tokens, 8);
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 8, 2}}));  // samples: K/V dropped
  EXPECT_EQ(kv_->table(0).n_tokens, 0);
  EXPECT_EQ(kv_->pool().n_blocks_used(), 0);
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 0, 8}}));  // all 11 tokens again
  EXPECT_EQ(step(s), (std::vector<Planned>{{0, 8, 3}}));
}

}  // namespace
}  // namespace kvserve
