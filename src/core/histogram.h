// Histogram: Prometheus-style cumulative buckets, safe to observe from one thread and read from
// any other. The engine records latencies into it; server/metrics renders it.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

namespace kvserve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);  // upper bounds, ascending
  void observe(double v);                          // any thread
  struct Snapshot {
    std::vector<double> bounds;     // [n] upper bounds (the +Inf bucket is `count`)
    std::vector<uint64_t> buckets;  // [n] cumulative counts
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;  // any thread

 private:
  mutable std::mutex mu_;
  Snapshot s_;  // guarded by mu_ (buckets kept non-cumulative)
};

}  // namespace kvserve
