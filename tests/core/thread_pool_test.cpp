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

TEST(ThreadPool, CostedCoversRangeExactlyOnce) {
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 2, 3, 17, 1000}) {
      for (int zeros : {0, 1}) {  // with items of no cost among them, and all free
        std::vector<int64_t> prefix{0};
        for (int64_t i = 0; i < n; ++i) prefix.push_back(prefix.back() + (zeros ? 0 : i % 7 + 1));
        std::vector<std::atomic<int>> seen(n);
        pool.parallel_for_costed(prefix, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) seen[i]++;
        });
        for (auto& s : seen) ASSERT_EQ(s.load(), 1) << threads << " threads, n " << n;
      }
    }
    pool.parallel_for_costed(std::vector<int64_t>{0}, [&](int64_t, int64_t) { FAIL(); });
  }
}

TEST(ThreadPool, CostedRunsAreCutByCost) {
  // Item 0 costs as much as the 100 after it: it is the caller's whole run, so no chunk holds
  // it with another item (an even cut by count would give the caller items 0..49).
  ThreadPool pool(2);
  std::vector<int64_t> prefix{0, 100};
  for (int i = 0; i < 100; ++i) prefix.push_back(prefix.back() + 1);
  std::atomic<int> mixed{0}, chunks_with_0{0};
  pool.parallel_for_costed(prefix, [&](int64_t b, int64_t e) {
    if (b == 0) chunks_with_0++;
    if (b == 0 && e > 1) mixed++;
  });
  EXPECT_EQ(chunks_with_0.load(), 1);
  EXPECT_EQ(mixed.load(), 0);
  // The cheap end: the first 100 items cost 100, the last 100; the cut falls after item 99.
  std::vector<int64_t> rev{0};
  for (int i = 0; i < 100; ++i) rev.push_back(rev.back() + 1);
  rev.push_back(rev.back() + 100);
  std::atomic<int> spans_cut{0};
  pool.parallel_for_costed(rev, [&](int64_t b, int64_t e) {
    if (b < 100 && e > 100) spans_cut++;
  });
  EXPECT_EQ(spans_cut.load(), 0);
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
