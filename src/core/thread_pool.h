// A persistent thread pool: workers are created once and wait between jobs (spin, then sleep),
// so a decode step that dispatches hundreds of ops creates no threads.
// The calling thread takes part as worker 0. run() may be called only by one thread at a time
// (the engine loop owns the pool).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace kvserve {

class ThreadPool {
 public:
  // n_threads >= 1 counts the caller; 0 means one per hardware core.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return n_threads_; }

  // Calls fn(ith, nth) once on each of nth threads and returns when all are done.
  void run(const std::function<void(int ith, int nth)>& fn);

  // Splits [0, n) into contiguous chunks, at least `grain` each, and calls fn(begin, end).
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_main(int ith);

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> n_pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace kvserve
