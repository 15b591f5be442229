#include "kv/kv_planner.h"

#include <gtest/gtest.h>

namespace kvserve {
namespace {

TEST(KvPlanner, Llama3_8bAtF16) {
  KvPlanInput in;
  in.n_layer = 32;
  in.n_head_kv = 8;
  in.head_dim = 128;
  in.kv_type_k = in.kv_type_v = KvType::kF16;
  in.ctx = 8192;
  in.batch = 4;
  in.memory = 24ull << 30;
  in.weight_bytes = 16ull << 30;
  const KvPlan p = plan_kv(in);
  EXPECT_EQ(p.bytes_per_token, 131072.0);  // 2 * 32 * 8 * 128 * 2
  EXPECT_EQ(p.bytes_per_request, 131072.0 * 8192);  // 1 GiB
  EXPECT_EQ(p.bytes_total, 4.0 * (1ull << 30));
  EXPECT_EQ(p.requests_fit, 8);  // 8 GiB left after weights
}

TEST(KvPlanner, QuantizedTypesCountScalesAndPagingRoundsUp) {
  KvPlanInput in;
  in.n_layer = 1;
  in.n_head_kv = 1;
  in.head_dim = 64;
  in.kv_type_k = in.kv_type_v = KvType::kQ8;  // 64 int8 + an fp16 scale per row
  in.ctx = 17;
  in.block_size = 16;
  const KvPlan p = plan_kv(in);
  EXPECT_DOUBLE_EQ(p.bytes_per_token, 2 * 66.0);
  EXPECT_DOUBLE_EQ(p.bytes_per_request_paged, p.bytes_per_token * 32);
  EXPECT_EQ(p.requests_fit, -1);
}

}  // namespace
}  // namespace kvserve
