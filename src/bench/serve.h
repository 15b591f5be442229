// Serving benchmark (`kvserve bench serve`): the batching engine under concurrent load: output
// tokens/s, time to first token and inter-token latency (p50/p99) at several client counts,
// continuous batching against the static baseline in the same run. Output lengths are mixed
// (uniform or long-tailed in [gen_min, gen_max], the same draws for every scheduler and
// transport); the clients share one list of requests. Besides the whole run's tokens/s,
// steady_tps is the rate until that list ran out: the throughput at that many concurrent
// streams, without the ramp-down at the end.
//
// Two transports share the workload, the engine options and the statistics: by default the
// clients talk to the EngineLoop in-process; with `http` they send streaming /v1/completions
// requests to the real HTTP server (server::HttpServer, as `kvserve serve`) on a free loopback
// port and time the server-sent events as they arrive.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bench/common.h"
#include "engine/scheduler.h"
#include "kv/kv_type.h"

namespace kvserve::bench {

struct ServeOptions {
  ModelLoader load_model;
  std::vector<int> clients = {1, 4, 16, 64};
  std::vector<SchedulerKind> schedulers = {SchedulerKind::kContinuous, SchedulerKind::kStatic,
                                           SchedulerKind::kStaticShrink};
  std::vector<PreemptionMode> preemptions = {PreemptionMode::kRecompute};  // compared in one run
  int requests_per_client = 2;  // a run sends clients x this many, from one list
  int prompt_len = 64;
  int gen_min = 16, gen_max = 128;
  bool lognormal = false;    // output lengths long-tailed, else uniform
  float temperature = 0.0f;  // 0: greedy; else sampled (the vocabulary softmax per token)
  float top_p = 1.0f;
  int max_batch_tokens = 512;
  int n_threads = 0;
  KvType kv_type = KvType::kF16;  // K and V; blocks of default_block_size()
  int kv_blocks = 0;              // > 0: a cache this small (forces preemption)
  bool http = false;              // drive the HTTP server over loopback
};

// One (preemption, scheduler, clients) run.
struct ServeRow {
  std::string scheduler;
  std::string preemption;  // "recompute" or "swap"
  int clients = 0;
  int64_t tokens = 0;
  double seconds = 0, tps = 0;
  double steady_tps = 0;                                        // while all clients had work
  double ttft_p50 = 0, ttft_p99 = 0, itl_p50 = 0, itl_p99 = 0;  // ms
  int64_t preemptions = 0, swapped = 0;
};

struct ServeReport {
  std::string model;           // file name
  std::vector<ServeRow> rows;  // per preemption mode, per scheduler, per client count
  // The row of that scheduler, client count and (when given) preemption mode; nullptr if none.
  const ServeRow* find(const std::string& scheduler, int clients,
                       const char* preemption = nullptr) const;
};

// invalid_argument unless 1 <= gen_min <= gen_max, prompt_len >= 1, requests_per_client >= 1.
Status check_serve_options(const ServeOptions& o);

// Called once the model is loaded (no rows yet) and after each row.
using ServeProgress = std::function<void(const ServeReport&)>;
Result<ServeReport> run_serve(const ServeOptions& o, const ServeProgress& progress = {});

}  // namespace kvserve::bench
