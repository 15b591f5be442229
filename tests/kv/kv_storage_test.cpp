// KvStorage::create against the machine's memory.
#include "kv/kv_storage.h"

#include <gtest/gtest.h>

#include <string>

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

}  // namespace
}  // namespace kvserve
