#include "kv/kv_cache_manager.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "prefix/prefix_cache.h"

namespace kvserve {
namespace {

KvLayout small_layout(int block_size, KvType t = KvType::kF32) {
  KvLayout l;
  l.n_layer = 2;
  l.n_head_kv = 2;
  l.head_dim = 4;
  l.block_size = block_size;
  l.k_type = l.v_type = t;
  return l;
}

class KvCacheManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = KvCacheManager::create(small_layout(4), 6);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    kv = std::move(*m);
  }
  // The invariant every test ends with: every block is back in the pool.
  void TearDown() override {
    ASSERT_EQ(kv->pool().n_blocks_available(), kv->pool().n_blocks_total());
  }
  std::unique_ptr<KvCacheManager> kv;
};

TEST_F(KvCacheManagerTest, AllocatesOnDemandAndFreesAtOnce) {
  ASSERT_TRUE(kv->add_sequence(7).is_ok());
  ASSERT_TRUE(kv->reserve(7, 1).is_ok());
  EXPECT_EQ(kv->table(7).blocks, (std::vector<BlockId>{0}));
  ASSERT_TRUE(kv->reserve(7, 4).is_ok());  // still one block
  EXPECT_EQ(kv->table(7).n_blocks(), 1);
  ASSERT_TRUE(kv->reserve(7, 5).is_ok());
  EXPECT_EQ(kv->table(7).blocks, (std::vector<BlockId>{0, 1}));
  kv->commit(7, 5);
  EXPECT_EQ(kv->table(7).n_tokens, 5);
  EXPECT_EQ(kv->pool().n_blocks_used(), 2);
  kv->free_sequence(7);
  EXPECT_FALSE(kv->has_sequence(7));
  EXPECT_EQ(kv->pool().n_blocks_used(), 0);
  EXPECT_EQ(kv->n_blocks_used_peak(), 2);
}

TEST_F(KvCacheManagerTest, ExhaustionIsAStatusAndTransactional) {
  ASSERT_TRUE(kv->add_sequence(1).is_ok());
  ASSERT_TRUE(kv->add_sequence(2).is_ok());
  ASSERT_TRUE(kv->reserve(1, 16).is_ok());  // 4 blocks
  Status st = kv->reserve(2, 12);           // needs 3, 2 free
  EXPECT_EQ(st.code(), StatusCode::kOutOfMemory);
  EXPECT_EQ(kv->table(2).n_blocks(), 0);
  EXPECT_EQ(kv->pool().n_blocks_available(), 2);
  EXPECT_TRUE(kv->reserve(2, 8).is_ok());
  EXPECT_EQ(kv->blocks_needed(2, 9), 1);
  kv->free_sequence(1);
  kv->free_sequence(2);
}

TEST_F(KvCacheManagerTest, DuplicateSequenceRejected) {
  ASSERT_TRUE(kv->add_sequence(3).is_ok());
  EXPECT_EQ(kv->add_sequence(3).code(), StatusCode::kInvalidArgument);
  kv->free_sequence(3);
  kv->free_sequence(99);  // unknown: no-op
}

TEST_F(KvCacheManagerTest, AnswersOccupancyQuestionsWithoutThePool) {
  EXPECT_FALSE(kv->prefix_caching());  // NoPrefixCache keeps no keys
  EXPECT_STREQ(kv->prefix_cache_name(), "off");
  ASSERT_TRUE(kv->add_sequence(1).is_ok());
  ASSERT_TRUE(kv->reserve(1, 9).is_ok());  // 3 blocks
  const KvOccupancy o = kv->occupancy();
  EXPECT_EQ(o.total, 6);
  EXPECT_EQ(o.used, 3);
  EXPECT_EQ(o.cached, 0);
  EXPECT_EQ(o.free, 3);
  EXPECT_EQ(o.available(), 3);
  EXPECT_EQ(kv->n_blocks_total(), 6);
  EXPECT_EQ(kv->n_blocks_used(), 3);
  EXPECT_EQ(kv->n_blocks_available(), 3);
  kv->free_sequence(1);
}

// "free" counts blocks holding nothing; "available" adds the cached ones allocation may evict.
TEST(KvCacheManager, FreeExcludesCachedBlocksAvailableIncludesThem) {
  auto m = KvCacheManager::create(small_layout(4), 6,
                                  std::make_unique<HashPrefixCache>(HashKind::kXxh3_128, Digest{}));
  ASSERT_TRUE(m.is_ok());
  KvCacheManager& kv = **m;
  EXPECT_TRUE(kv.prefix_caching());
  const std::vector<int32_t> toks = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  ASSERT_TRUE(kv.add_sequence_from_prefix(1, toks).is_ok());
  kv.commit_and_register(1, toks);  // registers the 2 full blocks
  kv.free_sequence(1);
  const KvOccupancy o = kv.occupancy();
  EXPECT_EQ(o.used, 0);
  EXPECT_EQ(o.cached, 2);
  EXPECT_EQ(o.free, 4);
  EXPECT_EQ(kv.n_blocks_available(), 6);
  const KvCacheStats st = kv.stats();
  EXPECT_EQ(st.n_blocks_cached, 2);
  EXPECT_EQ(st.n_blocks_empty, 4);
  // commit() without tokens registers nothing.
  ASSERT_TRUE(kv.add_sequence(2).is_ok());
  ASSERT_TRUE(kv.reserve(2, 8).is_ok());
  kv.commit(2, 8);
  kv.free_sequence(2);
  EXPECT_EQ(kv.occupancy().cached, 2);
}

TEST_F(KvCacheManagerTest, DumpListsSequences) {
  ASSERT_TRUE(kv->add_sequence(1).is_ok());
  ASSERT_TRUE(kv->reserve(1, 6).is_ok());
  kv->commit(1, 6);
  EXPECT_NE(kv->dump().find("seq 1: 6 tokens, blocks [0 1]"), std::string::npos);
  kv->free_sequence(1);
}

TEST(KvStorage, WritesLandInTheirTileAndCopyBlockCopiesAllLayers) {
  for (KvType t : {KvType::kF32, KvType::kF16, KvType::kBF16}) {
    auto s = KvStorage::create(small_layout(2, t), 3);
    ASSERT_TRUE(s.is_ok());
    KvStorage& kv = **s;
    std::vector<float> k(8), v(8);
    for (int i = 0; i < 8; ++i) {
      k[i] = 0.5f * i;
      v[i] = -1.0f * i;
    }
    kv.write_token(1, 2, 1, k.data(), v.data());
    kv.copy_block(2, 0);
    const size_t rb = kv_row_stride(t, KvRole::kK, 4);
    for (BlockId b : {2, 0}) {
      for (int h = 0; h < 2; ++h) {
        // slot 1 of head h holds elements [h*4, h*4+4)
        EXPECT_EQ(std::memcmp(kv.k_tile(1, b, h) + rb, kv.k_tile(1, 2, h) + rb, rb), 0);
      }
    }
    if (t == KvType::kF32) {
      const float* kt = reinterpret_cast<const float*>(kv.k_tile(1, 0, 1));
      EXPECT_EQ(kt[4 + 0], 2.0f);  // head 1, slot 1, element 0 = k[4]
      const float* vt = reinterpret_cast<const float*>(kv.v_tile(1, 0, 0));
      EXPECT_EQ(vt[4 + 3], -3.0f);
    }
  }
}

TEST(KvStorage, RejectsBadLayouts) {
  EXPECT_FALSE(KvStorage::create(small_layout(0), 4).is_ok());
  EXPECT_FALSE(KvStorage::create(small_layout(257), 4).is_ok());
  EXPECT_FALSE(KvStorage::create(small_layout(16), 0).is_ok());
  KvLayout odd = small_layout(16, KvType::kQ4);
  odd.head_dim = 5;  // q4 packs channel pairs
  EXPECT_FALSE(KvStorage::create(odd, 4).is_ok());
}

// Fraction of the storage's pages that are resident (mincore).
double resident_fraction(const KvStorage& kv) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t n_pages = (kv.bytes_total() + page - 1) / page;
  std::vector<unsigned char> in(n_pages);
  void* base = const_cast<uint8_t*>(kv.k_tile(0, 0, 0));  // layer 0, K, block 0: the start
  if (mincore(base, kv.bytes_total(), in.data()) != 0) return -1;
  size_t n = 0;
  for (unsigned char c : in) n += c & 1;
  return static_cast<double>(n) / n_pages;
}

TEST(KvStorage, CommitsItsMemoryAtStartOrOnFirstWrite) {
  KvLayout l = small_layout(16);
  l.head_dim = 64;  // 16 KiB a block: 256 blocks are 4 MiB
  auto lazy = KvStorage::create(l, 256, KvCommit::kOnWrite);
  auto eager = KvStorage::create(l, 256, KvCommit::kAtStart);
  ASSERT_TRUE(lazy.is_ok() && eager.is_ok());
  EXPECT_EQ((*eager)->bytes_total(), 256 * l.bytes_per_block());
  EXPECT_EQ(resident_fraction(**eager), 1.0);
  EXPECT_LT(resident_fraction(**lazy), 0.5);  // nothing written yet (a huge page at most)
  // Either way the memory reads as zeros and takes writes.
  const std::vector<float> k(l.n_head_kv * l.head_dim, 1.5f), v(k.size(), -2.0f);
  for (auto* kv : {lazy->get(), eager->get()}) {
    const float* t = reinterpret_cast<const float*>(kv->k_tile(1, 255, 1));
    EXPECT_EQ(t[0], 0.0f);
    kv->write_token(1, 255, 3, k.data(), v.data());
    EXPECT_EQ(t[3 * l.head_dim], 1.5f);
  }
}

}  // namespace
}  // namespace kvserve
