// FullKvPolicy keeps everything: enforce() never touches a table, and it has no state.
#include "kv/kv_policy_full.h"

#include <gtest/gtest.h>

#include "kv/kv_policy_fake_ops.h"

namespace kvserve {
namespace {

TEST(FullKvPolicy, KeepsEveryBlockAndHasNoState) {
  auto p = make_kv_policy(FullKv{});
  ASSERT_NE(dynamic_cast<FullKvPolicy*>(p.get()), nullptr);
  EXPECT_FALSE(kv_policy_bounded(p->config()));
  test::FakeBlockOps ops(4);
  BlockTable t = ops.table_with(40, 100);
  const BlockTable before = t;
  p->add(1, 0, 0);
  p->commit(1, 0, 40, 0);
  ASSERT_TRUE(p->enforce(1, t, 40, ops).is_ok());
  EXPECT_EQ(t.blocks, before.blocks);
  EXPECT_EQ(t.n_tokens, 40);
  EXPECT_TRUE(ops.released.empty());
  EXPECT_EQ(p->attention_scores(1), nullptr);
  EXPECT_EQ(p->match_window(), nullptr);
  EXPECT_TRUE(p->slots_are_positions(1));
  EXPECT_EQ(p->detach(1), nullptr);
  EXPECT_TRUE(p->check_layout(KvLayout{1, 1, 32, 32, KvType::kQ4, KvType::kQ4}).is_ok());
}

}  // namespace
}  // namespace kvserve
