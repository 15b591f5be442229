// The prefix cache through the KvCacheManager facade, with a tiny KV layout and no model: exact
// block ids, LRU eviction order, salts, copy-on-write, forced collisions, transactions.
#include "prefix/prefix_cache.h"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "kv/kv_cache_manager.h"
#include "prefix/block_key.h"

namespace kvserve {
namespace {

constexpr int kBlock = 4;

KvLayout tiny_layout() {
  KvLayout l;
  l.n_layer = 1;
  l.n_head_kv = 1;
  l.head_dim = 4;
  l.block_size = kBlock;
  l.k_type = l.v_type = KvType::kF32;
  return l;
}

std::vector<int32_t> iota(int n, int first) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

std::vector<int32_t> cat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class PrefixCacheTest : public ::testing::Test {
 protected:
  void make(int n_blocks, HashKind kind = HashKind::kXxh3_128) {
    Digest fp = hash_bytes(kind, "test-model", 10);
    auto prefix = std::make_unique<HashPrefixCache>(kind, fp);
    hash_ = prefix.get();
    auto m = KvCacheManager::create(tiny_layout(), n_blocks, std::move(prefix));
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    kv = std::move(*m);
  }
  void SetUp() override { make(6); }
  // Every test ends with no sequence and every block free or cached-evictable.
  void TearDown() override {
    EXPECT_EQ(kv->n_sequences(), 0);
    EXPECT_EQ(kv->pool().n_blocks_used(), 0);
    EXPECT_EQ(kv->pool().n_blocks_available(), kv->pool().n_blocks_total());
  }
  // Adds seq for tokens from the cache, "computes" the rest, registers its blocks.
  int run_seq(SeqId seq, const std::vector<int32_t>& tokens, const std::string& salt = "") {
    auto n = kv->add_sequence_from_prefix(seq, tokens, salt);
    EXPECT_TRUE(n.is_ok()) << n.status().to_string();
    if (!n) return -1;
    EXPECT_TRUE(kv->reserve(seq, static_cast<int>(tokens.size())).is_ok());
    kv->commit_and_register(seq, tokens);
    return *n;
  }
  std::unique_ptr<KvCacheManager> kv;
  HashPrefixCache* hash_ = nullptr;
};

TEST_F(PrefixCacheTest, ExactIdsReuseAndLruEviction) {
  const auto a = iota(13, 100);  // 3 full blocks + 1 token
  EXPECT_EQ(run_seq(1, a), 0);
  EXPECT_EQ(kv->table(1).blocks, (std::vector<BlockId>{0, 1, 2, 3}));
  EXPECT_EQ(kv->pool().n_blocks_cached(), 0);  // all in use
  kv->free_sequence(1);
  // Released last block first: the tail of a sequence is evicted before its head.
  EXPECT_EQ(kv->pool().free_queue(), (std::vector<BlockId>{4, 5, 3, 2, 1, 0}));
  EXPECT_EQ(kv->pool().n_blocks_cached(), 3);

  // B shares A's first two blocks, then diverges.
  const auto b = cat(iota(8, 100), iota(5, 500));
  EXPECT_EQ(run_seq(2, b), 8);
  EXPECT_EQ(kv->table(2).blocks, (std::vector<BlockId>{0, 1, 4, 5}));
  EXPECT_EQ(kv->pool().ref_count(0), 1);
  EXPECT_EQ(kv->pool().free_queue(), (std::vector<BlockId>{3, 2}));

  // C (no match) takes the free block 3 first, then evicts A's third block (2).
  const auto c = iota(8, 900);
  EXPECT_EQ(run_seq(3, c), 0);
  EXPECT_EQ(kv->table(3).blocks, (std::vector<BlockId>{3, 2}));
  EXPECT_EQ(kv->stats().n_evictions, 1);
  kv->free_sequence(2);
  kv->free_sequence(3);

  // A again: blocks 0 and 1 are still cached, block 2's content is gone.
  auto n = kv->add_sequence_from_prefix(4, a);
  ASSERT_TRUE(n.is_ok());
  EXPECT_EQ(*n, 8);
  EXPECT_EQ(kv->table(4).blocks[0], 0);
  EXPECT_EQ(kv->table(4).blocks[1], 1);
  kv->free_sequence(4);

  const KvCacheStats st = kv->stats();
  EXPECT_EQ(st.n_prefix_queries, 4);
  EXPECT_EQ(st.n_query_tokens, 13 + 13 + 8 + 13);
  EXPECT_EQ(st.n_hit_tokens, 16);
  EXPECT_DOUBLE_EQ(st.hit_rate(), 16.0 / 47);
}

TEST_F(PrefixCacheTest, FullyCachedPromptStillComputesItsLastBlock) {
  const auto a = iota(12, 7);  // exactly 3 blocks
  EXPECT_EQ(run_seq(1, a), 0);
  kv->free_sequence(1);
  EXPECT_EQ(run_seq(2, a), 8);           // block 2 recomputed: its last token gives the logits
  EXPECT_EQ(kv->table(2).blocks[2], 3);  // a fresh block, not the cached copy of block 2
  kv->free_sequence(2);
  // A one-token prompt can hit nothing.
  EXPECT_EQ(run_seq(3, {7}), 0);
  kv->free_sequence(3);
}

TEST_F(PrefixCacheTest, GeneratedTokensAreRegisteredForTheNextTurn) {
  std::vector<int32_t> turn = iota(6, 40);
  ASSERT_EQ(run_seq(1, turn), 0);
  // Decode 6 more tokens one by one, committing each.
  for (int i = 0; i < 6; ++i) {
    turn.push_back(70 + i);
    ASSERT_TRUE(kv->reserve(1, static_cast<int>(turn.size())).is_ok());
    kv->commit_and_register(1, turn);
  }
  kv->free_sequence(1);
  EXPECT_EQ(kv->pool().n_blocks_cached(), 3);
  const auto next = cat(turn, iota(3, 300));
  EXPECT_EQ(run_seq(2, next), 12);
  kv->free_sequence(2);
}

TEST_F(PrefixCacheTest, SaltsNeverShare) {
  make(12);
  const auto a = iota(9, 1);
  EXPECT_EQ(run_seq(1, a, "tenant-a"), 0);
  kv->free_sequence(1);
  EXPECT_EQ(run_seq(2, a, "tenant-b"), 0);
  kv->free_sequence(2);
  EXPECT_EQ(run_seq(3, a), 0);  // the public namespace is separate too
  kv->free_sequence(3);
  EXPECT_EQ(run_seq(4, a, "tenant-a"), 8);
  kv->free_sequence(4);
  EXPECT_EQ(run_seq(5, a), 8);
  kv->free_sequence(5);
}

TEST_F(PrefixCacheTest, ForkSharesBlocksAndCopiesOnWrite) {
  const auto p = iota(6, 10);  // block 0 full (keyed), block 1 half full
  ASSERT_EQ(run_seq(1, p), 0);
  // Mark block 1's written slot so the copy can be checked.
  const std::vector<float> k(4, 1.5f), v(4, -2.5f);
  kv->storage().write_token(0, kv->table(1).blocks[1], 1, k.data(), v.data());
  ASSERT_TRUE(kv->fork(1, 2).is_ok());
  EXPECT_EQ(kv->fork(1, 2).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(kv->fork(99, 3).code(), StatusCode::kInvalidArgument);
  const BlockId b0 = kv->table(1).blocks[0], b1 = kv->table(1).blocks[1];
  EXPECT_EQ(kv->table(2).blocks, kv->table(1).blocks);
  EXPECT_EQ(kv->pool().ref_count(b1), 2);

  // The child writes position 6: its shared partial block is copied first.
  ASSERT_TRUE(kv->reserve(2, 7).is_ok());
  const BlockId c1 = kv->table(2).blocks[1];
  EXPECT_NE(c1, b1);
  EXPECT_EQ(kv->table(2).blocks[0], b0);  // the full block stays shared
  EXPECT_EQ(kv->pool().ref_count(b1), 1);
  EXPECT_EQ(kv->pool().ref_count(b0), 2);
  EXPECT_EQ(0, std::memcmp(kv->storage().k_tile(0, c1, 0), kv->storage().k_tile(0, b1, 0),
                           kv->layout().k_tile_bytes()));
  const std::vector<float> k2(4, 9.0f);
  kv->storage().write_token(0, c1, 2, k2.data(), k2.data());
  EXPECT_NE(0, std::memcmp(kv->storage().k_tile(0, c1, 0), kv->storage().k_tile(0, b1, 0),
                           kv->layout().k_tile_bytes()));
  // The parent now owns b1 alone: no copy.
  ASSERT_TRUE(kv->reserve(1, 7).is_ok());
  EXPECT_EQ(kv->table(1).blocks[1], b1);
  EXPECT_EQ(kv->stats().n_cow_copies, 1);
  kv->free_sequence(1);
  kv->free_sequence(2);
}

TEST_F(PrefixCacheTest, RewritingACachedBlockCopiesItAndKeepsTheCachedContent) {
  const auto p = iota(5, 10);
  ASSERT_EQ(run_seq(1, p), 0);
  const BlockId b0 = kv->table(1).blocks[0];
  ASSERT_TRUE(kv->pool().has_key(b0));
  kv->commit(1, 2);  // roll back into the keyed block
  ASSERT_TRUE(kv->reserve(1, 3).is_ok());
  EXPECT_NE(kv->table(1).blocks[0], b0);
  EXPECT_TRUE(kv->pool().has_key(b0));
  EXPECT_EQ(kv->pool().ref_count(b0), 0);  // cached, evictable
  kv->free_sequence(1);
  EXPECT_EQ(run_seq(2, p), 4);
  EXPECT_EQ(kv->table(2).blocks[0], b0);
  kv->free_sequence(2);
}

TEST_F(PrefixCacheTest, ForcedCollisionIsAMissNotWrongKv) {
  hash_->set_key_fn_for_testing(
      [](const std::optional<BlockKey>&, std::span<const int32_t>, std::string_view) {
        return BlockKey{};  // every block gets the same key
      });
  const auto a = iota(9, 1);
  ASSERT_EQ(run_seq(1, a), 0);
  kv->free_sequence(1);
  EXPECT_EQ(kv->pool().n_blocks_cached(), 1);  // only the first registration holds the key
  EXPECT_EQ(run_seq(2, iota(9, 50)), 0);       // same key, other tokens: miss
  kv->free_sequence(2);
  // Same tokens: block 0 is a real hit; block 1's key names block 0, whose parent differs.
  EXPECT_EQ(run_seq(3, a), 4);
  kv->free_sequence(3);
}

TEST_F(PrefixCacheTest, FailedMatchAllocationChangesNothing) {
  const auto a = iota(12, 1);
  ASSERT_EQ(run_seq(1, a), 0);
  kv->free_sequence(1);
  const auto queue = kv->pool().free_queue();
  // Two cached hits, but 5 more blocks needed and only 4 others exist.
  auto r = kv->add_sequence_from_prefix(2, cat(iota(8, 1), iota(20, 600)));
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfMemory);
  EXPECT_FALSE(kv->has_sequence(2));
  EXPECT_EQ(kv->pool().free_queue(), queue);
  EXPECT_EQ(kv->pool().n_blocks_cached(), 3);
  EXPECT_EQ(kv->stats().n_prefix_queries, 1);
  EXPECT_EQ(kv->add_sequence_from_prefix(2, {}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(PrefixCacheTest, Sha256KeysWorkTheSame) {
  make(6, HashKind::kSha256);
  const auto a = iota(9, 3);
  ASSERT_EQ(run_seq(1, a), 0);
  kv->free_sequence(1);
  EXPECT_EQ(run_seq(2, a), 8);
  EXPECT_EQ(kv->pool().key(kv->table(2).blocks[0])->word(3) != 0 ||
                kv->pool().key(kv->table(2).blocks[0])->word(2) != 0,
            true);  // a 256-bit key
  kv->free_sequence(2);
}

TEST_F(PrefixCacheTest, DumpShowsStatesAndTables) {
  ASSERT_EQ(run_seq(1, iota(5, 1)), 0);
  const std::string d = kv->dump();
  EXPECT_NE(d.find("refs [1 1 . . . .]"), std::string::npos) << d;
  EXPECT_NE(d.find("seq 1: 5 tokens, blocks [0 1], 1 keyed"), std::string::npos) << d;
  kv->free_sequence(1);
  EXPECT_NE(kv->dump().find("refs [c . . . . .]"), std::string::npos) << kv->dump();
  EXPECT_NE(kv->dump().find("cached"), std::string::npos);
}

TEST(NoPrefixCache, NeverHitsAndKeepsNoKeys) {
  auto m = KvCacheManager::create(tiny_layout(), 4);
  ASSERT_TRUE(m.is_ok());
  auto& kv = **m;
  const auto a = iota(9, 1);
  for (SeqId s : {1, 2}) {
    auto n = kv.add_sequence_from_prefix(s, a);
    ASSERT_TRUE(n.is_ok());
    EXPECT_EQ(*n, 0);
    kv.commit_and_register(s, a);
    kv.free_sequence(s);
  }
  EXPECT_EQ(kv.pool().n_blocks_cached(), 0);
  EXPECT_STREQ(kv.prefix_cache_name(), "off");
}

TEST(BlockKey, ChainsParentTokensAndExtra) {
  const Digest ns = namespace_key(HashKind::kXxh3_128, Digest{}, "");
  const std::vector<int32_t> t = {1, 2, 3, 4};
  const BlockKey k0 = block_key(HashKind::kXxh3_128, std::nullopt, t, ns);
  EXPECT_EQ(k0, block_key(HashKind::kXxh3_128, std::nullopt, t, ns));
  EXPECT_NE(k0, block_key(HashKind::kXxh3_128, k0, t, ns));
  EXPECT_NE(k0, block_key(HashKind::kXxh3_128, std::nullopt, std::vector<int32_t>{1, 2, 3, 5}, ns));
  EXPECT_NE(k0, block_key(HashKind::kXxh3_128, std::nullopt, t,
                          namespace_key(HashKind::kXxh3_128, Digest{}, "salt")));
  Digest other_model;
  other_model.bytes[0] = 1;
  EXPECT_NE(k0, block_key(HashKind::kXxh3_128, std::nullopt, t,
                          namespace_key(HashKind::kXxh3_128, other_model, "")));
}

}  // namespace
}  // namespace kvserve
