// Kernel benchmark (`kvserve bench kernels`): one matmul shape at a time, outside the model, so a
// kernel change can be measured (and compared across ISA levels) without the rest of the
// forward pass.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/status.h"

namespace kvserve::bench {

struct KernelsOptions {
  std::vector<std::string> shapes = {"576x576", "192x576", "1536x576", "576x1536",
                                     "49152x576"};    // ROWSxCOLS
  std::vector<std::string> dtypes = {"q8_0", "f16"};  // weight types
  std::vector<int> tokens = {1, 16, 64, 512};         // rows of x
  std::string level;  // scalar, avx2 or avx512; empty: the active level
  int n_threads = 0;
  double min_ms = 200;  // time per (dtype, shape, tokens) point
  bool prepack = true;  // weights laid out once, as load_model does
};

struct KernelsRow {
  std::string dtype;
  int64_t rows = 0, cols = 0;
  int tokens = 0;
  double us_per_call = 0;  // median
  double gmac_s = 0;
  double weight_gb_s = 0;      // weight bytes / median time
  double cpu_us_per_call = 0;  // calling thread's CPU time, mean
};

struct KernelsReport {
  std::string level;  // the level measured
  int threads = 0;
  std::vector<KernelsRow> rows;
};

// Called once the level and pool are set up (no rows yet) and after each row.
using KernelsProgress = std::function<void(const KernelsReport&)>;

// invalid_argument for an unknown or unavailable level, a dtype that cannot be quantized to,
// or a shape that is not ROWSxCOLS.
Result<KernelsReport> run_kernels(const KernelsOptions& o, const KernelsProgress& progress = {});

}  // namespace kvserve::bench
