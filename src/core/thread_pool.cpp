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
constexpr int kChunksPerThread = 4;     // enough to balance, few enough to keep chunks long
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  n_threads_ = n_threads;
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { worker_main(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks() {
  for (int64_t c; (c = next_chunk_.fetch_add(1, std::memory_order_relaxed)) < n_chunks_;) {
    const int64_t b = c * chunk_;
    (*fn_)(b, std::min(n_, b + chunk_));
  }
}

void ThreadPool::worker_main() {
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
    if (open_gen_.load() == g) run_chunks();
    if (n_active_.fetch_sub(1) == 1) n_active_.notify_one();
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t per_chunk =
      std::max(grain, (n + n_threads_ * kChunksPerThread - 1) / (n_threads_ * kChunksPerThread));
  const int64_t n_chunks = (n + per_chunk - 1) / per_chunk;
  if (n_threads_ == 1 || n_chunks == 1) {
    fn(0, n);
    return;
  }
  fn_ = &fn;
  n_ = n;
  chunk_ = per_chunk;
  n_chunks_ = n_chunks;
  next_chunk_.store(0, std::memory_order_relaxed);
  const uint64_t g = generation_.load() + 1;
  open_gen_.store(g);
  generation_.store(g, std::memory_order_release);
  generation_.notify_all();
  run_chunks();
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
