#include "core/membw.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <atomic>

namespace kvserve {

namespace {

// Sum of 64-bit words with 8 independent accumulators, so the loop is bound by loads; the
// compiler vectorizes it at the baseline ISA, which is enough to saturate memory.
uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t a[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) a[j] += p[i + j];
  }
  for (; i < n; ++i) a[0] += p[i];
  uint64_t s = 0;
  for (uint64_t x : a) s += x;
  return s;
}

}  // namespace

double measure_read_bandwidth(ThreadPool& pool, size_t bytes, int reps) {
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 0;
  const size_t n_words = bytes / sizeof(uint64_t);
  uint64_t* words = static_cast<uint64_t*>(mem);
  pool.parallel_for(static_cast<int64_t>(n_words), 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) words[i] = static_cast<uint64_t>(i);
  });
  double best = 0;
  volatile uint64_t sink = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    std::atomic<uint64_t> total{0};
    pool.parallel_for(static_cast<int64_t>(n_words), 1 << 20, [&](int64_t b, int64_t e) {
      total += sum_words(words + b, static_cast<size_t>(e - b));
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink = sink + total.load();
    best = std::max(best, static_cast<double>(bytes) / s);
  }
  munmap(mem, bytes);
  return best;
}

}  // namespace kvserve
