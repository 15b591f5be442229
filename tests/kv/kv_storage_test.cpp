// KvStorage::create against the machine's memory.
#include "kv/kv_storage.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/memory_info.h"

namespace kvserve {
namespace {

TEST(KvStorage, CommitBeyondAvailableMemoryIsRefused) {
  const auto avail = available_memory();
  if (!avail) GTEST_SKIP() << "available memory unknown here";
  KvLayout L;
  L.n_layer = 4;
  L.n_head_kv = 4;
  L.head_dim = 64;
  L.block_size = 16;
  L.k_type = L.v_type = KvType::kF16;
  const int n_blocks = static_cast<int>(2 * *avail / L.bytes_per_block() + 1);
  auto refused = KvStorage::create(L, n_blocks, KvCommit::kAtStart);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(refused.status().message().find("of memory is available"), std::string::npos)
      << refused.status().message();
  // Committed on write instead, the same size only reserves address space.
  auto lazy = KvStorage::create(L, n_blocks, KvCommit::kOnWrite);
  EXPECT_TRUE(lazy) << lazy.status().message();
}

// Per layer, a block's K tiles of every kv head and then its V tiles are one contiguous region
// (the attention kernel sweeps it head after head), and the regions do not overlap: the whole
// mapping is tiled exactly once.
TEST(KvStorage, OneLayerOfOneBlockIsOneContiguousRegion) {
  for (KvType t : {KvType::kF16, KvType::kQ8, KvType::kQ4}) {
    SCOPED_TRACE(kv_type_name(t));
    KvLayout L;
    L.n_layer = 3;
    L.n_head_kv = 3;
    L.head_dim = 64;
    L.block_size = 16;
    L.k_type = t;
    L.v_type = KvType::kF16;
    const int n_blocks = 5;
    auto made = KvStorage::create(L, n_blocks);
    ASSERT_TRUE(made) << made.status().message();
    const KvStorage& kv = **made;
    const size_t kt = L.k_tile_bytes(), vt = L.v_tile_bytes();
    const size_t region = L.n_head_kv * (kt + vt);
    std::vector<const uint8_t*> starts;
    for (int l = 0; l < L.n_layer; ++l) {
      for (BlockId b = 0; b < n_blocks; ++b) {
        const uint8_t* k0 = kv.k_tile(l, b, 0);
        for (int h = 0; h < L.n_head_kv; ++h) {
          EXPECT_EQ(kv.k_tile(l, b, h), k0 + h * kt);
          EXPECT_EQ(kv.v_tile(l, b, h), k0 + L.n_head_kv * kt + h * vt);
        }
        starts.push_back(k0);
      }
    }
    std::sort(starts.begin(), starts.end());
    for (size_t i = 1; i < starts.size(); ++i) EXPECT_EQ(starts[i], starts[i - 1] + region);
    EXPECT_EQ(starts.size() * region, kv.bytes_total());
  }
}

}  // namespace
}  // namespace kvserve
