#include "core/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#define KV_CPU_RELAX() _mm_pause()
#else
#define KV_CPU_RELAX() ((void)0)
#endif

namespace kvserve {

namespace {
constexpr int kSpinIterations = 20000;  // about 50-100 us before sleeping
// A thread's run is claimed as one chunk of all but 1/kTailParts of it, then pieces of half that
// tail: one long stream of memory per thread per op (each new chunk is a cold start for the
// prefetchers), and a tail small enough for another thread to take over.
constexpr int64_t kTailParts = 4;
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0)
    n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  n_threads_ = n_threads;
  cursors_ = std::vector<Cursor>(static_cast<size_t>(n_threads_));
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks(int self) {
  // Own run first (one large claim, then the small ones), then the others' small ones in turn.
  for (int i = 0; i < n_threads_; ++i) {
    Cursor& cur = cursors_[(self + i) % n_threads_];
    int64_t size = i == 0 ? cur.first : cur.rest;
    for (int64_t c; (c = cur.next.fetch_add(size, std::memory_order_relaxed)) < cur.end;) {
      (*fn_)(c * grain_, std::min({n_, (c + size) * grain_, cur.end * grain_}));
      size = cur.rest;
    }
  }
}

void ThreadPool::worker_main(int self) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int spin = 0; g == seen && spin < kSpinIterations; ++spin) {
      KV_CPU_RELAX();
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      continue;
    }
    seen = g;
    if (stop_.load()) return;
    // Enter, then check the job is still open (seq_cst on both sides: either the caller sees
    // us active, or we see the job closed).
    n_active_.fetch_add(1);
    if (open_gen_.load() == g) run_chunks(self);
    if (n_active_.fetch_sub(1) == 1) n_active_.notify_one();
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t n_grains = (n + grain - 1) / grain;
  if (n_threads_ == 1 || n_grains == 1) {
    fn(0, n);
    return;
  }
  for (int t = 0; t < n_threads_; ++t) {
    Cursor& cur = cursors_[t];
    const int64_t begin = n_grains * t / n_threads_, end = n_grains * (t + 1) / n_threads_;
    const int64_t share = end - begin;
    cur.next.store(begin, std::memory_order_relaxed);
    cur.end = end;
    cur.first = std::max<int64_t>(1, share - share / kTailParts);
    cur.rest = std::max<int64_t>(1, share / (2 * kTailParts));
  }
  run_job(n, grain, fn);
}

void ThreadPool::parallel_for_costed(std::span<const int64_t> cost_prefix,
                                     const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t n = static_cast<int64_t>(cost_prefix.size()) - 1;
  if (n <= 0) return;
  if (n_threads_ == 1 || n == 1) {
    fn(0, n);
    return;
  }
  // The first item i >= lo whose prefix reaches `cost` (n when none does).
  auto reach = [&](int64_t lo, int64_t cost) {
    return std::lower_bound(cost_prefix.begin() + lo, cost_prefix.end() - 1, cost) -
           cost_prefix.begin();
  };
  const int64_t total = cost_prefix[n];
  int64_t begin = 0;
  for (int t = 0; t < n_threads_; ++t) {
    Cursor& cur = cursors_[t];
    // Item i goes to the thread in whose share of the cost its end falls.
    const int64_t end = t + 1 == n_threads_ ? n : reach(begin, total * (t + 1) / n_threads_);
    const int64_t run_cost = cost_prefix[end] - cost_prefix[begin];
    const int64_t first =
        reach(begin, cost_prefix[begin] + run_cost - run_cost / kTailParts) - begin;
    cur.next.store(begin, std::memory_order_relaxed);
    cur.end = end;
    cur.first = std::max<int64_t>(1, first);
    cur.rest = std::max<int64_t>(1, (end - begin - first) / 2);
    begin = end;
  }
  run_job(n, 1, fn);
}

void ThreadPool::run_job(int64_t n, int64_t grain,
                         const std::function<void(int64_t, int64_t)>& fn) {
  fn_ = &fn;
  n_ = n;
  grain_ = grain;
  const uint64_t g = generation_.load() + 1;
  open_gen_.store(g);
  generation_.store(g, std::memory_order_release);
  generation_.notify_all();
  run_chunks(0);
  open_gen_.store(0);  // close: late workers skip this job
  int active = n_active_.load();
  for (int spin = 0; active != 0 && spin < kSpinIterations; ++spin) {
    KV_CPU_RELAX();
    active = n_active_.load();
  }
  while (active != 0) {
    n_active_.wait(active);
    active = n_active_.load();
  }
  fn_ = nullptr;
}

}  // namespace kvserve
