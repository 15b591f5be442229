// WindowKvPolicy releases exactly the blocks between the sink blocks and the first block the
// next query's window reaches, once each, and keeps no per-sequence state.
#include "kv/kv_policy_window.h"

#include <gtest/gtest.h>

#include "kv/kv_cache_manager.h"
#include "kv/kv_policy_fake_ops.h"

namespace kvserve {
namespace {

TEST(WindowKvPolicy, ReleasesBlocksBeforeTheWindowOnce) {
  auto p = make_kv_policy(WindowKv{8, 0});
  ASSERT_NE(dynamic_cast<WindowKvPolicy*>(p.get()), nullptr);
  test::FakeBlockOps ops(4);
  BlockTable t = ops.table_with(40, 100);  // blocks 100..109
  // The query at 40 sees [33, 40]: blocks 0..7 (positions 0..31) are out of reach.
  ASSERT_TRUE(p->enforce(1, t, 40, ops).is_ok());
  EXPECT_EQ(ops.released, (std::vector<BlockId>{100, 101, 102, 103, 104, 105, 106, 107}));
  for (int b = 0; b < 10; ++b) EXPECT_EQ(t.blocks[b] == kNoBlock, b < 8) << b;
  EXPECT_EQ(t.n_tokens, 40);  // slots stay positions
  ASSERT_TRUE(p->enforce(1, t, 40, ops).is_ok());
  EXPECT_EQ(ops.released.size(), 8u);  // nothing twice
  // Four positions on, the window starts at 37: block 8 goes too.
  ASSERT_TRUE(p->enforce(1, t, 44, ops).is_ok());
  EXPECT_EQ(ops.released.back(), 108);
  EXPECT_EQ(t.blocks[9], 109);
  KvCacheStats st;
  p->add_stats(st);
  EXPECT_EQ(st.n_window_released, 9);
}

TEST(WindowKvPolicy, SinkBlocksStay) {
  auto p = make_kv_policy(WindowKv{8, 5});  // sinks 0..4: blocks 0 and 1 of 4
  test::FakeBlockOps ops(4);
  BlockTable t = ops.table_with(40, 100);
  ASSERT_TRUE(p->enforce(1, t, 40, ops).is_ok());
  EXPECT_EQ(ops.released, (std::vector<BlockId>{102, 103, 104, 105, 106, 107}));
  EXPECT_EQ(t.blocks[0], 100);
  EXPECT_EQ(t.blocks[1], 101);
  EXPECT_EQ(t.blocks[8], 108);
}

TEST(WindowKvPolicy, ShortSequencesLoseNothing) {
  auto p = make_kv_policy(WindowKv{8, 0});
  test::FakeBlockOps ops(4);
  BlockTable t = ops.table_with(8, 100);
  ASSERT_TRUE(p->enforce(1, t, 8, ops).is_ok());  // the query at 8 sees [1, 8]: block 0 stays
  EXPECT_TRUE(ops.released.empty());
}

TEST(WindowKvPolicy, MatchesWithItsWindowAndKeepsNoState) {
  auto p = make_kv_policy(WindowKv{8, 2});
  ASSERT_NE(p->match_window(), nullptr);
  EXPECT_EQ(p->match_window()->window, 8);
  EXPECT_EQ(p->match_window()->sink, 2);
  p->add(1, 4, 8);
  EXPECT_EQ(p->attention_scores(1), nullptr);
  EXPECT_TRUE(p->slots_are_positions(1));
  EXPECT_EQ(p->detach(1), nullptr);
  EXPECT_EQ(kv_policy_name(p->config()), "sink 2 + window 8");
}

}  // namespace
}  // namespace kvserve
