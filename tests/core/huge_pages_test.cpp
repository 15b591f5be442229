#include "core/huge_pages.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "core/memory_info.h"

namespace kvserve {
namespace {

TEST(HugePages, AlignedZeroedAndRefusedBeyondAvailableMemory) {
  const size_t n = size_t{3} << 20;
  std::shared_ptr<void> p = alloc_huge_pages(n);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p.get()) % (size_t{2} << 20), 0u);
  const auto* b = static_cast<const uint8_t*>(p.get());
  EXPECT_EQ(b[0], 0);
  EXPECT_EQ(b[n - 1], 0);
  std::memset(p.get(), 1, n);  // writable end to end
  const auto avail = available_memory();
  if (!avail) GTEST_SKIP() << "available memory unknown here";
  EXPECT_EQ(alloc_huge_pages(2 * *avail), nullptr);
}

}  // namespace
}  // namespace kvserve
