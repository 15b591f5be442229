// default_block_size: one default for every command, 32 when K or V is q4.
#include <gtest/gtest.h>

#include "kv/kv_type.h"

namespace kvserve {
namespace {

TEST(DefaultBlockSize, Q4GetsKivisGroup) {
  for (KvType t : {KvType::kF32, KvType::kF16, KvType::kBF16, KvType::kQ8, KvType::kFP8}) {
    EXPECT_EQ(default_block_size(t, t), 16) << kv_type_name(t);
    EXPECT_EQ(default_block_size(KvType::kQ4, t), 32) << kv_type_name(t);
    EXPECT_EQ(default_block_size(t, KvType::kQ4), 32) << kv_type_name(t);
  }
  EXPECT_EQ(default_block_size(KvType::kQ4, KvType::kQ4), 32);
  // The reason: q4 K's per-channel header, amortised over 32 tokens, brings q4 K under
  // 0.32x of f16 K (hd 64), which it cannot reach at 16.
  const double f16 = kv_bytes_per_token_head(KvType::kF16, KvRole::kK, 64, 16);
  EXPECT_LT(kv_bytes_per_token_head(KvType::kQ4, KvRole::kK, 64, 32) / f16, 0.32);
  EXPECT_GT(kv_bytes_per_token_head(KvType::kQ4, KvRole::kK, 64, 16) / f16, 0.32);
}

}  // namespace
}  // namespace kvserve
