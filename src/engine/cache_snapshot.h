// CacheSnapshot: the cache's state as one immutable value, built by the engine thread after
// every step and published for readers on other threads (dashboard, metrics, the router's
// probes), who take the latest and never query the engine (ARCHITECTURE: "a snapshot,
// published, not queried").
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/request.h"
#include "kv/kv_events.h"

namespace kvserve {

// One tier's blocks (the pool today; host, disk and remote tiers add theirs).
struct TierSnapshot {
  KvTier tier = KvTier::kPool;
  int blocks_total = 0;
  int blocks_used = 0;    // held by sequences
  int blocks_cached = 0;  // unreferenced, keyed: reusable by a prefix hit, evictable
  int blocks_free = 0;    // holding nothing
  size_t bytes_per_block = 0;
  int64_t query_tokens = 0;  // prompt tokens looked up in this tier
  int64_t hit_tokens = 0;    // of those, found
};

// One sequence the scheduler holds, running or waiting.
struct SeqSnapshot {
  int64_t id = 0;
  int index = 0;  // its choice index in its request
  bool running = false;
  int n_prompt = 0, n_known = 0, n_computed = 0;
  int n_cached = 0;  // prompt tokens served from the cache at first admission
  int n_preemptions = 0;
};

struct CacheSnapshot {
  int64_t step = 0;  // engine steps that had computed something when it was taken
  Clock::time_point taken{};
  std::vector<TierSnapshot> tiers;  // the pool first
  std::vector<SeqSnapshot> seqs;    // running (admission order), then waiting (queue order)
};

}  // namespace kvserve
