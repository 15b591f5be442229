#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace kvserve {
namespace {

TEST(ThreadPool, ManyShortJobsInARow) {
  ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  for (int rep = 0; rep < 2000; ++rep) {
    pool.parallel_for(64, 1, [&](int64_t b, int64_t e) { total += e - b; });
  }
  EXPECT_EQ(total.load(), 2000 * 64);
}

TEST(ThreadPool, ChunksRespectGrain) {
  ThreadPool pool(2);
  std::atomic<int> short_chunks{0};
  pool.parallel_for(1000, 100, [&](int64_t b, int64_t e) {
    if (e - b < 100 && e != 1000) short_chunks++;
  });
  EXPECT_EQ(short_chunks.load(), 0);
}

TEST(ThreadPool, ParallelForCoversRangeExactlyOnce) {
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 2, 3, 17, 1000}) {
      for (int64_t grain : {1, 4}) {
        std::vector<std::atomic<int>> seen(n);
        pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) seen[i]++;
        });
        for (auto& s : seen) ASSERT_EQ(s.load(), 1) << threads << " threads, n " << n;
      }
    }
    pool.parallel_for(0, 1, [&](int64_t, int64_t) { FAIL(); });
  }
}

TEST(ThreadPool, AStalledThreadsTailIsTakenOver) {
  // Each thread owns half the range; the worker stalls in its first chunk. The caller does its
  // own half, then the tail of the worker's half (all but its first chunk, a quarter of it).
  ThreadPool pool(2);
  const auto caller = std::this_thread::get_id();
  std::atomic<int64_t> by_caller{0};
  std::atomic<bool> stalled{false};
  std::atomic<bool> first{true};
  pool.parallel_for(1000, 1, [&](int64_t b, int64_t e) {
    if (std::this_thread::get_id() != caller) {
      if (!stalled.exchange(true)) std::this_thread::sleep_for(std::chrono::milliseconds(300));
      return;
    }
    if (first.exchange(false)) {  // hold the caller until the worker is inside its chunk
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (!stalled.load() && std::chrono::steady_clock::now() < give_up)
        std::this_thread::yield();
    }
    by_caller += e - b;
  });
  if (!stalled.load()) GTEST_SKIP() << "the worker never started";
  EXPECT_GE(by_caller.load(), 500 + 500 / 4);
}

TEST(ThreadPool, SingleThreadRunsInline) {
  ThreadPool pool(1);
  int calls = 0;
  pool.parallel_for(10, 1, [&](int64_t b, int64_t e) {
    EXPECT_EQ(b, 0);
    EXPECT_EQ(e, 10);
    ++calls;
  });
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace kvserve
