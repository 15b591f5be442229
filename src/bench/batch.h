// Batch benchmark (`kvserve bench batch`): the forward pass alone, B sequences decoding in
// lockstep (one token each per step, as a full continuous batch does), for several B. No
// scheduler, sampler or server: the step time of the engine itself, and the aggregate tokens/s.
// Each sequence first prefills `context` random tokens; then `steps` decode steps are timed
// (after `warmup` untimed ones), so the contexts grow from context to context + warmup + steps.
// With `ops`, each op of the timed steps is timed too (engine/op_times.h): where a step's time
// goes.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "bench/common.h"
#include "engine/op_times.h"
#include "kv/kv_type.h"

namespace kvserve::bench {

struct BatchOptions {
  ModelLoader load_model;
  std::vector<int> batches = {1, 4, 16};
  int context = 32;
  int steps = 40;
  int warmup = 5;
  KvType kv_type = KvType::kF16;  // K and V; blocks of default_block_size()
  int n_threads = 0;
  bool ops = false;
};

struct BatchRow {
  int batch = 0;
  double step_ms = 0;  // mean over the timed steps
  double tokens_per_s = 0;
  OpTimes ops;  // the timed steps' ops (with `ops`)
};

struct BatchReport {
  std::string model;  // file name
  std::vector<BatchRow> rows;
};

// invalid_argument unless context >= 1, steps >= 1, warmup >= 0.
Status check_batch_options(const BatchOptions& o);

// Called once the model is loaded (no rows yet) and after each row.
using BatchProgress = std::function<void(const BatchReport&)>;
Result<BatchReport> run_batch(const BatchOptions& o, const BatchProgress& progress = {});

// Column o of the op table: op o's name, or "other" for o == kNumOps.
const char* op_label(int o);
// Op o's ms per timed step; o == kNumOps: the step's time outside every op (each layer's
// set-up, the embedding lookup). 0 without op times.
double op_ms(const BatchRow& r, int o);

}  // namespace kvserve::bench
