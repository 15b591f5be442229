#include "core/status.h"

#include <gtest/gtest.h>

#include "core/dtype.h"

namespace kvserve {
namespace {

Result<int> half(int x) {
  if (x % 2) return invalid_argument("odd: " + std::to_string(x));
  return x / 2;
}

Result<int> quarter(int x) {
  KV_ASSIGN_OR_RETURN(int h, half(x));
  return half(h);
}

TEST(Status, ResultCarriesValueOrError) {
  EXPECT_EQ(*quarter(8), 2);
  auto r = quarter(6);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().to_string(), "invalid argument: odd: 3");
}

TEST(DType, InfoAndNames) {
  EXPECT_EQ(row_bytes(DType::kQ8_0, 64), 68u);
  EXPECT_EQ(row_bytes(DType::kQ4_0, 64), 36u);
  EXPECT_EQ(row_bytes(DType::kF16, 10), 20u);
  EXPECT_EQ(dtype_from_name("q4_0"), DType::kQ4_0);
  EXPECT_FALSE(dtype_from_name("q5_1").has_value());
  EXPECT_FALSE(dtype_info(uint32_t{7}).has_value());  // q5_1 id: unsupported
}

TEST(DType, Fp16AndBf16RoundTrip) {
  for (float f : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f}) {
    EXPECT_EQ(fp16_to_fp32(fp32_to_fp16(f)), f) << f;
  }
  EXPECT_EQ(bf16_to_fp32(fp32_to_bf16(1.5f)), 1.5f);
  EXPECT_EQ(bf16_to_fp32(fp32_to_bf16(-3.0f)), -3.0f);
}

}  // namespace
}  // namespace kvserve
