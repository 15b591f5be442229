// Shared by the benchmarks in src/bench: how they get their model, and their thread count.
// Each benchmark is a library function taking an options struct and returning its report (or the
// first error); `kvserve bench ...` (src/cli/cmd_bench*.cpp) parses flags into the options and
// prints the report, as text and with --json as one JSON object (the benchmark's to_json).
#pragma once

#include <functional>
#include <memory>

#include "core/status.h"
#include "model/model.h"

namespace kvserve::bench {

// Loads the benchmark's model when the benchmark needs it, after its options are checked: which
// model (-m, a synth preset, the demo model) is the caller's choice, not the benchmark's.
using ModelLoader = std::function<Result<std::unique_ptr<Model>>()>;

// The threads a pool of n_threads has: n_threads, or one per core for 0.
int thread_count(int n_threads);

}  // namespace kvserve::bench
