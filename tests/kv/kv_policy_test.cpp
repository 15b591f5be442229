// Bounded-memory policies at the cache-manager level: the window releases exactly the blocks no
// later query can see, sinks stay, prefix matching under a window needs only visible blocks, and
// H2O keeps the top-scored plus recent tokens, moving their rows, without touching shared blocks.
#include "kv/kv_policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "kv/kv_cache_manager.h"
#include "prefix/prefix_cache.h"

namespace kvserve {
namespace {

KvLayout layout_f32(int block_size) {
  KvLayout l;
  l.n_layer = 2;
  l.n_head_kv = 1;
  l.head_dim = 4;
  l.block_size = block_size;
  l.k_type = l.v_type = KvType::kF32;
  return l;
}

std::unique_ptr<KvCacheManager> make(int bs, int n_blocks, const KvPolicy& p, bool prefix = false) {
  std::unique_ptr<PrefixCache> pc;
  if (prefix) pc = std::make_unique<HashPrefixCache>(HashKind::kXxh3_128, Digest{});
  auto m = KvCacheManager::create(layout_f32(bs), n_blocks, std::move(pc), p);
  EXPECT_TRUE(m.is_ok()) << m.status().to_string();
  return m ? std::move(*m) : nullptr;
}

// Writes token `pos` as K = V = (pos, layer, 0, 0) at `slot`, every layer.
void write(KvCacheManager& kv, SeqId seq, int slot, int pos) {
  const int bs = kv.block_size();
  for (int l = 0; l < 2; ++l) {
    const float row[4] = {static_cast<float>(pos), static_cast<float>(l), 0, 0};
    kv.storage().write_token(l, kv.table(seq).blocks[slot / bs], slot % bs, row, row);
  }
}

float k_at(const KvCacheManager& kv, SeqId seq, int layer, int slot) {
  const int bs = kv.block_size();
  const auto* tile = reinterpret_cast<const float*>(
      kv.storage().k_tile(layer, kv.table(seq).blocks[slot / bs], 0));
  return tile[(slot % bs) * 4];
}

// One decode step of a sequence through the manager: reserve, write, commit, enforce.
void step(KvCacheManager& kv, SeqId seq, const std::vector<int32_t>& tokens) {
  const int slot = kv.table(seq).n_tokens;
  ASSERT_TRUE(kv.reserve(seq, slot + 1).is_ok());
  write(kv, seq, slot, kv.n_positions(seq));
  kv.commit_and_register(seq, std::span<const int32_t>(tokens.data(), kv.n_positions(seq) + 1));
  ASSERT_TRUE(kv.enforce_policy(seq).is_ok());
}

TEST(KvPolicy, ValidatesAndNames) {
  EXPECT_FALSE(validate_kv_policy(WindowKv{0, 0}).is_ok());
  EXPECT_FALSE(validate_kv_policy(WindowKv{8, -1}).is_ok());
  EXPECT_FALSE(validate_kv_policy(HeavyHitterKv{4, 5}).is_ok());
  EXPECT_TRUE(validate_kv_policy(HeavyHitterKv{4, 4}).is_ok());
  EXPECT_EQ(kv_policy_name(WindowKv{252, 4}), "sink 4 + window 252");
  EXPECT_EQ(kv_policy_name(FullKv{}), "full");
  EXPECT_FALSE(KvCacheManager::create(layout_f32(4), 4, nullptr, WindowKv{0, 0}).is_ok());
}

TEST(KvPolicy, WindowReleasesBlocksNoQueryCanSee) {
  auto kv = make(4, 16, WindowKv{8, 0});
  ASSERT_TRUE(kv->add_sequence(1).is_ok());
  std::vector<int32_t> toks(200);
  std::iota(toks.begin(), toks.end(), 0);
  for (int n = 1; n <= 200; ++n) {
    step(*kv, 1, toks);
    // The next query (position n) sees [n - 7, n]: blocks before (n - 7) / 4 are gone.
    const int first = std::max(0, n - 7) / 4;
    const auto& b = kv->table(1).blocks;
    for (int i = 0; i < static_cast<int>(b.size()); ++i) {
      ASSERT_EQ(b[i] == kNoBlock, i < first) << "n=" << n << " block " << i;
    }
    ASSERT_LE(kv->pool().n_blocks_used(), 3);  // 8 positions straddle at most 3 blocks of 4
  }
  EXPECT_GT(kv->stats().n_window_released, 40);
  kv->free_sequence(1);
  EXPECT_EQ(kv->pool().n_blocks_used(), 0);
}

TEST(KvPolicy, SinkBlocksStay) {
  auto kv = make(4, 16, WindowKv{8, 2});
  ASSERT_TRUE(kv->add_sequence(1).is_ok());
  std::vector<int32_t> toks(100, 5);
  for (int n = 1; n <= 100; ++n) step(*kv, 1, toks);
  const auto& b = kv->table(1).blocks;
  EXPECT_NE(b[0], kNoBlock);  // holds the sink positions 0 and 1
  EXPECT_EQ(b[1], kNoBlock);
  EXPECT_EQ(k_at(*kv, 1, 1, 1), 1.0f);  // sink row intact
  EXPECT_LE(kv->pool().n_blocks_used(), 4);
  kv->free_sequence(1);
  EXPECT_EQ(kv->pool().n_blocks_used(), 0);
}

TEST(KvPolicy, WindowPrefixMatchNeedsOnlyVisibleBlocks) {
  auto kv = make(4, 12, WindowKv{8, 0}, /*prefix=*/true);
  std::vector<int32_t> toks(40);
  std::iota(toks.begin(), toks.end(), 100);
  ASSERT_TRUE(kv->add_sequence(1).is_ok());
  for (int n = 1; n <= 32; ++n) step(*kv, 1, toks);
  kv->free_sequence(1);
  // Blocks 0..5 were released first, so they are the first evicted: take 6 blocks and drop them.
  ASSERT_TRUE(kv->add_sequence(9).is_ok());
  ASSERT_TRUE(kv->reserve(9, 24).is_ok());
  kv->free_sequence(9);
  // The first blocks are gone; the window at position 32 needs only blocks 6 and 7.
  auto hit = kv->add_sequence_from_prefix(2, std::span<const int32_t>(toks.data(), 40));
  ASSERT_TRUE(hit.is_ok()) << hit.status().to_string();
  EXPECT_EQ(*hit, 32);
  const auto& b = kv->table(2).blocks;
  ASSERT_EQ(b.size(), 8u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(b[i], kNoBlock);
  EXPECT_EQ(k_at(*kv, 2, 0, 28), 28.0f);  // the cached row of position 28
  kv->free_sequence(2);

  // Without the window the same prompt cannot reuse anything: block 0 is gone.
  auto full = make(4, 12, FullKv{}, true);
  ASSERT_TRUE(full->add_sequence(1).is_ok());
  for (int n = 1; n <= 8; ++n) step(*full, 1, toks);
  full->free_sequence(1);
  ASSERT_TRUE(full->add_sequence(9).is_ok());
  ASSERT_TRUE(full->reserve(9, 48).is_ok());  // all 12 blocks: evicts everything cached
  full->free_sequence(9);
  auto miss = full->add_sequence_from_prefix(2, std::span<const int32_t>(toks.data(), 40));
  ASSERT_TRUE(miss.is_ok());
  EXPECT_EQ(*miss, 0);
  full->free_sequence(2);
  EXPECT_EQ(kv->pool().n_blocks_used(), 0);
}

TEST(KvPolicy, HeavyHittersKeepTopScoredAndRecentRows) {
  auto kv = make(4, 16, HeavyHitterKv{6, 2});
  ASSERT_TRUE(kv->add_sequence(1).is_ok());
  std::vector<int32_t> toks(40, 3);
  // Fill 6 tokens: nothing to evict yet.
  for (int n = 1; n <= 6; ++n) step(*kv, 1, toks);
  ASSERT_EQ(kv->table(1).n_tokens, 6);
  // Scores: position 1 and 4 are heavy hitters.
  float* sc = kv->attention_scores(1);
  ASSERT_NE(sc, nullptr);
  const float s0[6] = {0.1f, 5.0f, 0.2f, 0.3f, 4.0f, 0.05f};
  std::copy(s0, s0 + 6, sc);
  // Two more tokens (positions 6, 7): the cache must drop to 6, keeping 6 and 7 (recent), the
  // heavy hitters 1 and 4, and the next best 3 and 2.
  step(*kv, 1, toks);
  step(*kv, 1, toks);
  ASSERT_EQ(kv->table(1).n_tokens, 6);
  EXPECT_EQ(kv->n_positions(1), 8);
  std::vector<float> kept;
  for (int s = 0; s < 6; ++s) {
    kept.push_back(k_at(*kv, 1, 0, s));
    EXPECT_EQ(k_at(*kv, 1, 1, s), kept.back()) << "every layer moved together";
  }
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(kept, (std::vector<float>{1, 2, 3, 4, 6, 7}));
  EXPECT_EQ(kv->stats().n_h2o_evicted, 2);
  EXPECT_EQ(kv->pool().n_blocks_used(), 2);  // 6 slots of 4
  // Keep running: memory stays bounded.
  for (int n = 9; n <= 40; ++n) {
    step(*kv, 1, toks);
    ASSERT_LE(kv->table(1).n_tokens, 6);
    ASSERT_LE(kv->pool().n_blocks_used(), 2);
  }
  kv->free_sequence(1);
  EXPECT_EQ(kv->pool().n_blocks_used(), 0);
}

TEST(KvPolicy, HeavyHittersCopyASharedBlockBeforeRewritingIt) {
  auto kv = make(4, 16, HeavyHitterKv{4, 1});
  ASSERT_TRUE(kv->add_sequence(1).is_ok());
  std::vector<int32_t> toks(10, 3);
  for (int n = 1; n <= 4; ++n) step(*kv, 1, toks);
  ASSERT_TRUE(kv->fork(1, 2).is_ok());
  const BlockId shared = kv->table(1).blocks[0];
  step(*kv, 2, toks);  // child grows to 5 and evicts one row into the shared block: a copy
  EXPECT_NE(kv->table(2).blocks[0], shared);
  EXPECT_EQ(kv->table(1).blocks[0], shared);
  for (int s = 0; s < 4; ++s) EXPECT_EQ(k_at(*kv, 1, 0, s), static_cast<float>(s));
  EXPECT_EQ(kv->stats().n_cow_copies, 1);
  kv->free_sequence(1);
  kv->free_sequence(2);
  EXPECT_EQ(kv->pool().n_blocks_used(), 0);
}

TEST(KvPolicy, HeavyHitterScoresSurviveSwapAndLeaveWithTheSequence) {
  auto kv = make(4, 16, HeavyHitterKv{6, 2});
  ASSERT_TRUE(kv->can_swap());
  ASSERT_TRUE(kv->add_sequence(1).is_ok());
  std::vector<int32_t> toks(40, 3);
  for (int n = 1; n <= 8; ++n) step(*kv, 1, toks);  // evicts down to 6: slots moved
  kv->attention_scores(1)[2] = 7.0f;
  std::vector<float> k_before;
  for (int s = 0; s < 6; ++s) k_before.push_back(k_at(*kv, 1, 1, s));
  auto out = kv->swap_out(1);
  ASSERT_TRUE(out.is_ok());
  EXPECT_FALSE(kv->has_sequence(1));
  EXPECT_EQ(kv->pool().n_blocks_used(), 0);
  ASSERT_TRUE(kv->swap_in(1, *out).is_ok());
  EXPECT_EQ(kv->attention_scores(1)[2], 7.0f);
  EXPECT_EQ(kv->n_positions(1), 8);
  for (int s = 0; s < 6; ++s) EXPECT_EQ(k_at(*kv, 1, 1, s), k_before[s]);
  kv->free_sequence(1);
  // A new sequence under the same id starts with no scores of the old one.
  ASSERT_TRUE(kv->add_sequence(1).is_ok());
  ASSERT_TRUE(kv->reserve(1, 4).is_ok());
  for (int s = 0; s < 4; ++s) EXPECT_EQ(kv->attention_scores(1)[s], 0.0f);
  kv->free_sequence(1);
}

TEST(KvPolicy, HeavyHittersRefuseQ4Keys) {
  KvLayout l = layout_f32(32);
  l.head_dim = 32;
  l.k_type = KvType::kQ4;
  auto m = KvCacheManager::create(l, 4, nullptr, HeavyHitterKv{8, 2});
  ASSERT_FALSE(m.is_ok());
  EXPECT_NE(m.status().to_string().find("q4"), std::string::npos) << m.status().to_string();
}

TEST(KvPolicy, MaxBlocksBoundsWhatASequenceHolds) {
  EXPECT_EQ(kv_policy_max_blocks(WindowKv{8, 0}, 4, 1), 0 + 2 + 1);
  EXPECT_EQ(kv_policy_max_blocks(WindowKv{8, 2}, 4, 4), 1 + 3 + 1);
  EXPECT_EQ(kv_policy_chunk(WindowKv{64, 0}, 16, 512), 64);
  EXPECT_EQ(kv_policy_chunk(FullKv{}, 16, 512), 512);
}

}  // namespace
}  // namespace kvserve
