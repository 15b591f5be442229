// EngineStats: counters and latency histograms the engine thread writes and anyone reads
// (the server's /metrics, benchmarks). Gauges are refreshed after every step.
#pragma once

#include <atomic>
#include <cstdint>

#include "core/histogram.h"

namespace kvserve {

struct EngineStats {
  // Blocks: used (held by sequences), cached (evictable, keyed), free (neither).
  std::atomic<int> kv_blocks_total{0}, kv_blocks_used{0}, kv_blocks_free{0}, kv_blocks_cached{0};
  std::atomic<int> seqs_running{0}, seqs_waiting{0};
  std::atomic<int64_t> preemptions_total{0}, generated_tokens_total{0}, prompt_tokens_total{0};
  std::atomic<int64_t> swapped_out_total{0};  // preemptions that swapped K/V to host memory
  std::atomic<int64_t> swap_bytes{0};         // host memory holding swapped K/V now
  std::atomic<int64_t> requests_total{0}, steps_total{0};
  std::atomic<int64_t> batch_tokens_total{0};  // tokens through the forward pass (padding too)
  std::atomic<int64_t> prefix_cache_queries_total{0}, prefix_cache_hits_total{0};  // tokens
  Histogram time_to_first_token{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
  Histogram inter_token_latency{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}};
};

}  // namespace kvserve
