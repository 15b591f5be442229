#include "core/histogram.h"

namespace kvserve {

Histogram::Histogram(std::vector<double> bounds) {
  s_.bounds = std::move(bounds);
  s_.buckets.assign(s_.bounds.size(), 0);
}

void Histogram::observe(double v) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < s_.bounds.size(); ++i) {
    if (v <= s_.bounds[i]) {
      ++s_.buckets[i];
      break;
    }
  }
  s_.sum += v;
  ++s_.count;
}

Histogram::Snapshot Histogram::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  Snapshot out = s_;
  for (size_t i = 1; i < out.buckets.size(); ++i) out.buckets[i] += out.buckets[i - 1];
  return out;
}

}  // namespace kvserve
