#include "kv/block_pool.h"

#include <gtest/gtest.h>

namespace kvserve {
namespace {

TEST(BlockPool, AllocatesInFreeQueueOrderAndReturnsToBack) {
  BlockPool pool(4);
  EXPECT_EQ(pool.n_blocks_available(), 4);
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
  EXPECT_EQ(pool.n_blocks_available(), pool.n_blocks_total());
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
  EXPECT_EQ(pool.n_blocks_available(), 1);
  pool.release(*a);
  EXPECT_EQ(pool.n_blocks_available(), 3);
}

TEST(BlockPool, SharedBlockFreedOnlyAtLastRelease) {
  BlockPool pool(2);
  auto a = pool.allocate(1);
  ASSERT_TRUE(a.is_ok());
  const BlockId id = (*a)[0];
  pool.ref(id);
  EXPECT_EQ(pool.ref_count(id), 2);
  pool.release(id);
  EXPECT_EQ(pool.n_blocks_available(), 1);
  pool.release(id);
  EXPECT_EQ(pool.ref_count(id), 0);
  EXPECT_EQ(pool.n_blocks_available(), 2);
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

namespace kvserve {
namespace {

BlockKey key_of(int i) {
  BlockKey k;
  k.bytes[0] = static_cast<uint8_t>(i);
  k.bytes[1] = 0xAB;
  return k;
}

TEST(BlockPoolKeys, CachedBlocksStayFindableUntilAllocationEvictsThemInQueueOrder) {
  BlockPool pool(4);
  auto a = pool.allocate(3);
  ASSERT_TRUE(a.is_ok());
  const std::vector<int32_t> toks = {1, 2};
  EXPECT_TRUE(pool.set_key(0, key_of(0), std::nullopt, toks));
  EXPECT_TRUE(pool.set_key(1, key_of(1), key_of(0), toks));
  EXPECT_FALSE(pool.set_key(2, key_of(1), key_of(0), toks));  // key taken: first one wins
  pool.release(*a);                                           // 0, 1, 2 to the back
  EXPECT_EQ(pool.free_queue(), (std::vector<BlockId>{3, 0, 1, 2}));
  EXPECT_EQ(pool.n_blocks_available(), 4);
  EXPECT_EQ(pool.n_blocks_cached(), 2);
  EXPECT_EQ(pool.find(key_of(1)), std::optional<BlockId>(1));
  EXPECT_TRUE(pool.verify(1, key_of(0), toks));
  EXPECT_FALSE(pool.verify(1, std::nullopt, toks));                     // other parent
  EXPECT_FALSE(pool.verify(1, key_of(0), std::vector<int32_t>{1, 3}));  // other tokens
  EXPECT_EQ(pool.dump(), "blocks total=4 used=0 free=4 cached=2\nrefs [c c . .]\n  block 0 key " +
                             key_of(0).short_hex() + " parent - cached\n  block 1 key " +
                             key_of(1).short_hex() + " parent " + key_of(0).short_hex() +
                             " cached");

  // A hit takes a cached block back out of the queue (ref 0 -> 1).
  pool.ref(1);
  EXPECT_EQ(pool.free_queue(), (std::vector<BlockId>{3, 0, 2}));
  EXPECT_EQ(pool.n_blocks_cached(), 1);
  // Allocation pops the front; the cached block 0 is evicted then, never block 1 (in use).
  auto b = pool.allocate(2);
  ASSERT_TRUE(b.is_ok());
  EXPECT_EQ(*b, (std::vector<BlockId>{3, 0}));
  EXPECT_EQ(pool.n_evictions(), 1);
  EXPECT_FALSE(pool.find(key_of(0)).has_value());
  EXPECT_FALSE(pool.has_key(0));
  EXPECT_EQ(pool.find(key_of(1)), std::optional<BlockId>(1));
  pool.release(*b);
  pool.release(1);
  EXPECT_EQ(pool.n_blocks_used(), 0);
  EXPECT_EQ(pool.n_blocks_cached(), 1);
}

TEST(BlockPoolKeys, DropKeyForgetsABlockInUse) {
  BlockPool pool(2);
  auto a = pool.allocate(1);
  ASSERT_TRUE(a.is_ok());
  ASSERT_TRUE(pool.set_key(0, key_of(5), std::nullopt, std::vector<int32_t>{7}));
  pool.drop_key(0);
  EXPECT_FALSE(pool.find(key_of(5)).has_value());
  pool.release(0);
  EXPECT_EQ(pool.n_blocks_cached(), 0);
}

TEST(BlockPoolKeysDeathTest, ReferencingAFreeUnkeyedBlockIsABug) {
  BlockPool pool(2);
  EXPECT_DEATH(pool.ref(0), "invariant failed");
}

Digest key_of(uint8_t b) {
  Digest d;
  d.bytes[0] = b;
  return d;
}

TEST(BlockPool, RecordsStoredAndRemovedKeysAsTheyHappen) {
  BlockPool pool(2);
  auto a = pool.allocate(2);
  ASSERT_TRUE(a.is_ok());
  ASSERT_TRUE(pool.set_key(0, key_of(1), std::nullopt, std::vector<int32_t>{5, 6}));
  EXPECT_TRUE(pool.take_events().empty());  // not recording yet
  pool.set_recording(true);
  ASSERT_TRUE(pool.set_key(1, key_of(2), key_of(1), std::vector<int32_t>{7, 8}));
  EXPECT_FALSE(pool.set_key(1, key_of(3), key_of(1), std::vector<int32_t>{7, 8}));  // no event
  pool.drop_key(1);
  pool.release(*a);           // both back; block 0 cached
  auto b = pool.allocate(2);  // evicts block 0's key
  ASSERT_TRUE(b.is_ok());
  const std::vector<KvEvent> want = {
      BlockStored{key_of(2), key_of(1), {7, 8}, KvTier::kPool},
      BlockRemoved{key_of(2), KvTier::kPool},
      BlockRemoved{key_of(1), KvTier::kPool},
  };
  EXPECT_EQ(pool.take_events(), want);
  EXPECT_TRUE(pool.take_events().empty());  // drained
}

TEST(BlockPool, DroppingAllKeysFreesCachedBlocksWithOneEvent) {
  BlockPool pool(3);
  pool.set_recording(true);
  auto a = pool.allocate(2);
  ASSERT_TRUE(a.is_ok());
  ASSERT_TRUE(pool.set_key(0, key_of(1), std::nullopt, std::vector<int32_t>{1}));
  ASSERT_TRUE(pool.set_key(1, key_of(2), key_of(1), std::vector<int32_t>{2}));
  pool.release(0);
  EXPECT_EQ(pool.n_blocks_cached(), 1);
  (void)pool.take_events();
  pool.drop_all_keys();
  EXPECT_EQ(pool.n_blocks_cached(), 0);
  EXPECT_FALSE(pool.find(key_of(1)).has_value());
  EXPECT_FALSE(pool.has_key(1));  // in use, its key gone too
  EXPECT_EQ(pool.take_events(), (std::vector<KvEvent>{AllBlocksCleared{KvTier::kPool}}));
  // Eviction of a block whose key was cleared records nothing more.
  auto b = pool.allocate(2);
  ASSERT_TRUE(b.is_ok());
  EXPECT_TRUE(pool.take_events().empty());
}

}  // namespace
}  // namespace kvserve
