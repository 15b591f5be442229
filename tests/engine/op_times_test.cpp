// OpTimer adds its scope's wall time to its op once (at stop() or the end of the scope), and
// op names are distinct.
#include "engine/op_times.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <thread>

namespace kvserve {
namespace {

TEST(OpTimes, TimerAddsItsScopeOnce) {
  OpTimes t;
  {
    OpTimer timer(&t, Op::kAttention);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const double first = t.seconds[static_cast<int>(Op::kAttention)];
  EXPECT_GE(first, 0.002);
  double stopped = 0;
  {
    OpTimer timer(&t, Op::kAttention);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    timer.stop();
    stopped = t.seconds[static_cast<int>(Op::kAttention)];
    EXPECT_GE(stopped, first + 0.002);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }  // leaving the scope after stop() adds nothing
  EXPECT_EQ(t.seconds[static_cast<int>(Op::kAttention)], stopped);
  for (int o = 0; o < kNumOps; ++o) {
    if (o != static_cast<int>(Op::kAttention)) {
      EXPECT_EQ(t.seconds[o], 0.0) << o;
    }
  }
}

TEST(OpTimes, NamesAreDistinct) {
  std::set<std::string> names;
  for (int o = 0; o < kNumOps; ++o) names.insert(op_name(static_cast<Op>(o)));
  EXPECT_EQ(names.size(), static_cast<size_t>(kNumOps));
  EXPECT_EQ(names.count("other"), 0u);  // bench batch's name for the remainder
}

}  // namespace
}  // namespace kvserve
