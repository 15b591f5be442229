#include "core/bytes.h"

#include <gtest/gtest.h>

namespace kvserve {
namespace {

TEST(ByteSize, ParsesUnits) {
  EXPECT_EQ(*parse_byte_size("512MiB"), 512ull << 20);
  EXPECT_EQ(*parse_byte_size("2GiB"), 2ull << 30);
  EXPECT_EQ(*parse_byte_size("1000"), 1000u);
  EXPECT_EQ(*parse_byte_size("1.5GB"), 1500000000u);
  EXPECT_FALSE(parse_byte_size("lots").is_ok());
  EXPECT_FALSE(parse_byte_size("12XB").is_ok());
  EXPECT_FALSE(parse_byte_size("-5MiB").is_ok());
}

TEST(ByteSize, FormatsBinaryUnits) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1.5 * 1024 * 1024 * 1024), "1.50 GiB");
}

}  // namespace
}  // namespace kvserve
