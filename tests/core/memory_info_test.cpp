#include "core/memory_info.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

namespace kvserve {
namespace {

TEST(MemoryInfo, ParsesMeminfoAndCgroupFiles) {
  const std::string meminfo =
      "MemTotal:       24000000 kB\nMemFree:        1000 kB\nMemAvailable:   23000000 kB\n";
  EXPECT_EQ(parse_meminfo_available(meminfo), size_t{23000000} * 1024);
  EXPECT_EQ(parse_meminfo_available("MemTotal: 5 kB\n"), std::nullopt);
  EXPECT_EQ(parse_meminfo_available("MemAvailable: x kB\n"), std::nullopt);
  EXPECT_EQ(parse_cgroup_bytes("1073741824\n"), size_t{1} << 30);
  EXPECT_EQ(parse_cgroup_bytes("max\n"), std::nullopt);
  EXPECT_EQ(parse_cgroup_bytes(""), std::nullopt);
}

TEST(MemoryInfo, AvailableIsAtMostTheMachinesMemory) {
  std::ifstream in("/proc/meminfo");
  if (!in) GTEST_SKIP() << "no /proc/meminfo";
  const auto avail = available_memory();
  ASSERT_TRUE(avail.has_value());
  std::string key;
  size_t total_kib = 0;
  while (in >> key && key != "MemTotal:") in.ignore(1 << 10, '\n');
  in >> total_kib;
  EXPECT_GT(*avail, 0u);
  EXPECT_LE(*avail, total_kib * 1024);
}

}  // namespace
}  // namespace kvserve
