// Prefix-cache benchmark (`kvserve bench prefix`): time to first token of N requests that share
// a system prompt of S tokens, each with its own user suffix of U tokens, with the prefix cache
// off and on (same run, same prompts). TTFT is the prefill of the prompt up to the first
// token's logits, including the prefix-cache lookup. Statistics cover requests 2..N (request 1
// fills the cache).
//
// hit_rate          tokens served from cache / prompt tokens, over all N requests
// hit_rate_optimum  (N - 1) * floor(S / B) * B / (N * (S + U)): the fraction of prompt tokens
//                   that lie in full blocks of the shared prompt that an earlier request
//                   already computed (the first request can hit nothing; the block straddling
//                   the shared/suffix boundary differs per request).
#pragma once

#include <string>
#include <vector>

#include "bench/common.h"
#include "engine/generator.h"

namespace kvserve::bench {

struct PrefixOptions {
  ModelLoader load_model;
  EngineOptions engine;  // block size, KV type, threads, hash; prefix_cache is set per pass
  int n_shared = 1024;
  int n_suffix = 64;
  int n_requests = 16;
  int kv_blocks = 0;  // 0: room for two requests (old suffixes evicted, the shared prompt kept)
};

// One pass over the requests, the prefix cache off or on.
struct PrefixPass {
  std::vector<double> ttft_ms;  // [n_requests]
  std::vector<int> cached;      // [n_requests] prompt tokens served from the cache
  KvCacheStats stats;
  double ttft_p50 = 0, ttft_p95 = 0;  // over requests 2..N
};

struct PrefixReport {
  std::string model;  // file name
  int kv_blocks = 0;  // the pool's size
  PrefixPass off, on;
  double hit_rate = 0, hit_rate_optimum = 0;  // of the pass with the cache on
  double p50_reduction() const { return off.ttft_p50 > 0 ? 1 - on.ttft_p50 / off.ttft_p50 : 0; }
};

// invalid_argument unless n_shared >= 0, n_suffix >= 1 and n_requests >= 2.
Result<PrefixReport> run_prefix(const PrefixOptions& o);

// The p-th percentile (nearest rank) of v; 0 when empty.
double percentile_nearest_rank(std::vector<double> v, double p);

}  // namespace kvserve::bench
