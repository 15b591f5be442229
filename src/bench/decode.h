// Decode benchmark (`kvserve bench decode`): prefill and decode speed at several contexts, with
// the paged KV cache and with use_kv_cache = false recomputation, against the machine's measured
// read bandwidth.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "kv/kv_type.h"

namespace kvserve::bench {

struct DecodeOptions {
  std::vector<std::string> model_paths;  // measured one after the other
  std::string tokenizer_path;
  std::vector<int> contexts = {128, 512, 2048};
  int n_gen = 32;           // decode tokens per run with the cache
  int n_nocache_steps = 3;  // decode steps per run without it
  bool skip_nocache = false;
  KvType kv_type = KvType::kF16;  // K and V
  int block_size = kDefaultBlockSize;
  int n_threads = 0;   // 0: one per core
  int repeat = 1;      // measured runs per point (mean)
  bool warmup = true;  // one unmeasured run first
};

struct DecodeRow {
  std::string model;  // the file name
  int ctx = 0;
  bool cache = false;
  double prefill_tps = 0, decode_tps = 0, ms_per_token = 0;
  double bytes_per_token = 0;  // weights + KV read by one decode step (cached mode)
};

struct DecodeReport {
  int threads = 0;
  double read_bytes_per_s = 0;  // measured memory read bandwidth
  std::vector<DecodeRow> rows;  // per model: cached contexts, then uncached ones
};

// Bytes/s one row's decode steps read, and that as a fraction of the read bandwidth (0 for a
// row without the cache, whose reads are not modelled).
double decode_bytes_per_s(const DecodeRow& r);
double roofline_fraction(const DecodeRow& r, double read_bytes_per_s);

// Per-token decode time at the largest context over that at the smallest, per cache mode.
struct DecodeGrowth {
  bool cache;
  int lo_ctx, hi_ctx;
  double ratio;
};
std::vector<DecodeGrowth> decode_growth(const DecodeReport& r);

// Called once the bandwidth is measured (no rows yet) and after each row.
using DecodeProgress = std::function<void(const DecodeReport&)>;

// Each point: a warm-up run, then `repeat` runs on the same engine (its KV pages and buffers
// already touched, as llama-bench measures), each on a fresh random prompt with the prefix
// cache off; tokens/s are the mean over the runs.
Result<DecodeReport> run_decode(const DecodeOptions& o, const DecodeProgress& progress = {});

}  // namespace kvserve::bench
