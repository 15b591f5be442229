#include "kv/block_pool.h"

#include <gtest/gtest.h>

namespace kvserve {
namespace {

TEST(BlockPool, AllocatesInFreeQueueOrderAndReturnsToBack) {
  BlockPool pool(4);
  EXPECT_EQ(pool.n_blocks_free(), 4);
  auto a = pool.allocate(2);
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ(*a, (std::vector<BlockId>{0, 1}));
  auto b = pool.allocate(1);
  ASSERT_TRUE(b.is_ok());
  EXPECT_EQ(*b, (std::vector<BlockId>{2}));
  pool.release(0);
  EXPECT_EQ(pool.free_queue(), (std::vector<BlockId>{3, 0}));
  auto c = pool.allocate(2);
  ASSERT_TRUE(c.is_ok());
  EXPECT_EQ(*c, (std::vector<BlockId>{3, 0}));
  pool.release(*c);
  pool.release(1);
  pool.release(2);
  EXPECT_EQ(pool.free_queue(), (std::vector<BlockId>{3, 0, 1, 2}));
  EXPECT_EQ(pool.n_blocks_free(), pool.n_blocks_total());
}

TEST(BlockPool, FailedAllocationChangesNothing) {
  BlockPool pool(3);
  auto a = pool.allocate(2);
  ASSERT_TRUE(a.is_ok());
  const auto before = pool.free_queue();
  auto b = pool.allocate(2);
  EXPECT_FALSE(b.is_ok());
  EXPECT_EQ(b.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(b.status().message().find("need 2 blocks, 1 of 3 free"), std::string::npos);
  EXPECT_EQ(pool.free_queue(), before);
  EXPECT_EQ(pool.n_blocks_free(), 1);
  pool.release(*a);
  EXPECT_EQ(pool.n_blocks_free(), 3);
}

TEST(BlockPool, SharedBlockFreedOnlyAtLastRelease) {
  BlockPool pool(2);
  auto a = pool.allocate(1);
  ASSERT_TRUE(a.is_ok());
  const BlockId id = (*a)[0];
  pool.ref(id);
  EXPECT_EQ(pool.ref_count(id), 2);
  pool.release(id);
  EXPECT_EQ(pool.n_blocks_free(), 1);
  pool.release(id);
  EXPECT_EQ(pool.ref_count(id), 0);
  EXPECT_EQ(pool.n_blocks_free(), 2);
}

TEST(BlockPool, ZeroAndEmpty) {
  BlockPool pool(0);
  EXPECT_TRUE(pool.allocate(0).is_ok());
  EXPECT_FALSE(pool.allocate(1).is_ok());
  BlockPool p2(2);
  EXPECT_FALSE(p2.allocate(-1).is_ok());
}

TEST(BlockPool, DumpShowsReferenceMap) {
  BlockPool pool(4);
  auto a = pool.allocate(2);
  ASSERT_TRUE(a.is_ok());
  pool.ref(1);
  EXPECT_EQ(pool.dump(), "blocks total=4 used=2 free=2\nrefs [1 2 . .]");
  pool.release(*a);
  pool.release(1);
}

TEST(BlockPoolDeathTest, ReleasingAFreeBlockIsABug) {
  BlockPool pool(2);
  EXPECT_DEATH(pool.release(0), "invariant failed");
}

}  // namespace
}  // namespace kvserve
