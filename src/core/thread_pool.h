// A persistent thread pool: workers are created once and wait between jobs (spin, then sleep),
// so a decode step that dispatches hundreds of ops creates no threads.
//
// Work is split into chunks, and the caller works too. Each thread owns a contiguous run of
// chunks and claims them in order from its own cursor (a cache line no other thread touches
// until it steals), so a step's hundreds of ops pay no cross-core traffic per chunk, and a
// thread's next chunk follows the one its prefetches ran into. A thread that has finished its
// run steals from the others' cursors, so a slow core still sheds its work. When the
// caller has run out of chunks it closes the job: a worker that had not started by then (say it
// was descheduled by another process) skips it, and the caller waits only for workers already
// inside. So a busy core delays a step by at most one chunk, not by a scheduler time slice.
// parallel_for may be called only by one thread at a time (the engine loop owns the pool).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
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

  // Calls fn(begin, end) over disjoint chunks covering [0, n), each at least `grain` long
  // (except the last), in any order and on any thread. Returns when all chunks are done.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // The same over items of uneven cost, grain 1: n = cost_prefix.size() - 1 items, and
  // cost_prefix[i] (non-decreasing from 0) the summed cost of items [0, i). Each thread's own run
  // is cut to about an equal share of the cost rather than of the count, and its first claim to
  // about three quarters of its run's cost. A chunk never spans two runs. With runs of equal
  // count, a thread holding the expensive items (attention over long contexts) worked on inside
  // one large claim while the other, done with its cheap run and the stealable tail, waited.
  void parallel_for_costed(std::span<const int64_t> cost_prefix,
                           const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_main(int self);
  void run_chunks(int self);
  // Publishes the job over the cursors already set, works on it, and waits for the workers.
  void run_job(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Thread t's run of grains [next, end), claimed by fetch_add, by the owner or a thief: the
  // owner's first claim takes `first` grains, later claims `rest`.
  struct alignas(64) Cursor {
    std::atomic<int64_t> next{0};
    int64_t end = 0, first = 1, rest = 1;
  };

  int n_threads_;
  std::vector<std::thread> workers_;
  // The open job. Written by the caller before a generation is published.
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, grain_ = 1;
  std::vector<Cursor> cursors_;  // [n_threads]

  std::atomic<uint64_t> generation_{0};  // bumped to wake workers for a new job
  std::atomic<uint64_t> open_gen_{0};    // generation of the job workers may still join; 0: closed
  std::atomic<int> n_active_{0};         // workers inside the job
  std::atomic<bool> stop_{false};
};

}  // namespace kvserve
