// HeavyHitterKvPolicy (H2O): keeps the recent tokens and the top-scored others, moving their
// rows into the evicted slots; copies shared blocks before rewriting them; its per-sequence
// scores follow forks and swaps and leave with the sequence.
#include "kv/kv_policy_h2o.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "kv/kv_cache_manager.h"
#include "kv/kv_policy_fake_ops.h"

namespace kvserve {
namespace {

// Sequence seq with n slots holding positions 0..n-1 in blocks from `first`, scored `scores`.
BlockTable fill(HeavyHitterKvPolicy& p, test::FakeBlockOps& ops, SeqId seq, int n, BlockId first,
                const std::vector<float>& scores) {
  BlockTable t = ops.table_with(n, first);
  p.add(seq, 0, 0);
  p.grow(seq, t.n_blocks() * ops.block_size());
  p.commit(seq, 0, n, 0);
  std::copy(scores.begin(), scores.end(), p.attention_scores(seq));
  return t;
}

std::vector<int> sorted(std::vector<int> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST(HeavyHitterKvPolicy, KeepsHeavyHittersAndRecentTokens) {
  HeavyHitterKvPolicy p(HeavyHitterKv{6, 2});
  test::FakeBlockOps ops(4);
  // Positions 1 and 4 are heavy hitters; 6 and 7 are recent; 0 and 5 score lowest.
  BlockTable t = fill(p, ops, 1, 8, 100, {0.1f, 5.0f, 0.2f, 0.3f, 4.0f, 0.05f, 0.0f, 0.0f});
  ASSERT_TRUE(p.enforce(1, t, 8, ops).is_ok());
  EXPECT_EQ(t.n_tokens, 6);
  EXPECT_EQ(sorted(p.slot_positions(1)), (std::vector<int>{1, 2, 3, 4, 6, 7}));
  // The holes (slots 0 and 5) took the rows above the new end, in order: 6 then 7.
  EXPECT_EQ(p.slot_positions(1), (std::vector<int>{6, 1, 2, 3, 4, 7}));
  for (int s = 0; s < 6; ++s) EXPECT_EQ(ops.value_at(t, s), p.slot_positions(1)[s]) << s;
  EXPECT_EQ(p.attention_scores(1)[1], 5.0f);  // scores moved with their rows
  EXPECT_EQ(p.attention_scores(1)[0], 0.0f);
  EXPECT_TRUE(ops.released.empty());  // 6 slots still span both blocks
  EXPECT_FALSE(p.slots_are_positions(1));
  KvCacheStats st;
  p.add_stats(st);
  EXPECT_EQ(st.n_h2o_evicted, 2);
}

TEST(HeavyHitterKvPolicy, ReleasesEmptiedBlocksTailFirst) {
  HeavyHitterKvPolicy p(HeavyHitterKv{4, 0});
  test::FakeBlockOps ops(4);
  std::vector<float> sc(12, 0.0f);
  sc[2] = 3, sc[5] = 9, sc[9] = 1, sc[11] = 2;
  BlockTable t = fill(p, ops, 1, 12, 100, sc);
  ASSERT_TRUE(p.enforce(1, t, 12, ops).is_ok());
  EXPECT_EQ(sorted(p.slot_positions(1)), (std::vector<int>{2, 5, 9, 11}));
  EXPECT_EQ(t.blocks, (std::vector<BlockId>{100}));
  EXPECT_EQ(ops.released, (std::vector<BlockId>{102, 101}));
}

TEST(HeavyHitterKvPolicy, NothingToEvictWithinKeepOrRecent) {
  HeavyHitterKvPolicy p(HeavyHitterKv{6, 6});
  test::FakeBlockOps ops(4);
  BlockTable t = fill(p, ops, 1, 6, 100, {});
  ASSERT_TRUE(p.enforce(1, t, 6, ops).is_ok());
  EXPECT_EQ(t.n_tokens, 6);
  EXPECT_TRUE(p.slots_are_positions(1));
  // Two more: all 6 recent positions (2..7) stay, so only 0 and 1 can go.
  p.grow(1, 8);
  p.commit(1, 6, 8, 6);
  BlockTable t8 = ops.table_with(8, 200);
  ASSERT_TRUE(p.enforce(1, t8, 8, ops).is_ok());
  EXPECT_EQ(sorted(p.slot_positions(1)), (std::vector<int>{2, 3, 4, 5, 6, 7}));
}

TEST(HeavyHitterKvPolicy, CopiesASharedBlockBeforeRewritingIt) {
  HeavyHitterKvPolicy p(HeavyHitterKv{4, 1});
  test::FakeBlockOps ops(4);
  BlockTable t = fill(p, ops, 1, 5, 100, {0.0f, 1.0f, 1.0f, 1.0f, 0.0f});
  ops.shared = {100};  // e.g. forked: slot 0's block belongs to the parent too
  ASSERT_TRUE(p.enforce(1, t, 5, ops).is_ok());
  EXPECT_EQ(ops.copied, (std::vector<BlockId>{100}));
  EXPECT_EQ(t.blocks[0], 1000);
  EXPECT_EQ(ops.rows.at({100, 0}), 0);  // the shared block is untouched
  EXPECT_EQ(ops.value_at(t, 0), 4);     // the copy holds the moved row
}

TEST(HeavyHitterKvPolicy, FailedCopyChangesNothing) {
  HeavyHitterKvPolicy p(HeavyHitterKv{4, 1});
  test::FakeBlockOps ops(4);
  BlockTable t = fill(p, ops, 1, 5, 100, {0.0f, 1.0f, 1.0f, 1.0f, 0.0f});
  ops.shared = {100};
  ops.fail_copies = true;
  EXPECT_FALSE(p.enforce(1, t, 5, ops).is_ok());
  EXPECT_EQ(t.n_tokens, 5);
  EXPECT_EQ(p.slot_positions(1), (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(p.slots_are_positions(1));
}

TEST(HeavyHitterKvPolicy, StateFollowsForksAndSwapsAndLeavesWithTheSequence) {
  HeavyHitterKvPolicy p(HeavyHitterKv{4, 1});
  test::FakeBlockOps ops(4);
  fill(p, ops, 1, 5, 100, {0.5f, 1.5f, 2.5f, 3.5f, 4.5f});
  p.fork(1, 2);
  EXPECT_EQ(p.n_sequences(), 2);
  p.attention_scores(2)[0] = 9.0f;
  EXPECT_EQ(p.attention_scores(1)[0], 0.5f);  // the child's scores are its own
  auto saved = p.detach(1);
  ASSERT_NE(saved, nullptr);
  EXPECT_EQ(p.n_sequences(), 1);
  p.attach(3, std::move(saved));
  EXPECT_EQ(p.attention_scores(3)[3], 3.5f);
  EXPECT_EQ(p.slot_positions(3), (std::vector<int>{0, 1, 2, 3, 4}));
  p.free(2);
  p.free(3);
  p.free(42);  // never added: no-op
  EXPECT_EQ(p.n_sequences(), 0);
}

TEST(HeavyHitterKvPolicy, RewoundSlotsLoseTheirScores) {
  HeavyHitterKvPolicy p(HeavyHitterKv{8, 2});
  test::FakeBlockOps ops(4);
  fill(p, ops, 1, 6, 100, {1, 1, 1, 1, 1, 1});
  p.commit(1, 6, 4, 6);  // back to 4 slots
  EXPECT_EQ(p.slot_positions(1).size(), 4u);
  EXPECT_EQ(p.attention_scores(1)[4], 0.0f);
  EXPECT_EQ(p.attention_scores(1)[5], 0.0f);
  EXPECT_EQ(p.attention_scores(1)[3], 1.0f);
}

TEST(HeavyHitterKvPolicy, RefusesStorageWithoutTokenCopies) {
  HeavyHitterKvPolicy p(HeavyHitterKv{8, 2});
  KvLayout l{1, 1, 32, 32, KvType::kQ4, KvType::kF16};
  EXPECT_FALSE(l.can_copy_tokens());
  EXPECT_FALSE(p.check_layout(l).is_ok());
  l.k_type = KvType::kQ8;
  l.v_type = KvType::kQ4;  // q4 V rows stand alone
  EXPECT_TRUE(p.check_layout(l).is_ok());
  EXPECT_NE(dynamic_cast<HeavyHitterKvPolicy*>(make_kv_policy(HeavyHitterKv{8, 2}).get()), nullptr);
}

}  // namespace
}  // namespace kvserve
