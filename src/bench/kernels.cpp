// Uses the kernel tables of kernels/ops_impl.h, not only the public kernels/ops.h: --level runs
// a level other than the active one, and only the tables (which the kernel tests compare levels
// with) can do that; ops.h's matmul always runs the active level.
#include "bench/kernels.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <random>

#include "bench/common.h"
#include "core/aligned.h"
#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "kernels/ops.h"
#include "kernels/ops_impl.h"
#include "kernels/quant.h"

namespace kvserve::bench {

namespace {

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

Result<const kernels::KernelTable*> table_for(const std::string& level) {
  if (level.empty()) return &kernels::active_kernels();
  CpuLevel lv = CpuLevel::kScalar;
  if (level == "avx2")
    lv = CpuLevel::kAvx2;
  else if (level == "avx512")
    lv = CpuLevel::kAvx512;
  else if (level != "scalar")
    return invalid_argument("bad --level '" + level + "'");
  const kernels::KernelTable* k = kernels::kernel_table(lv);
  if (!k) return invalid_argument("--level " + level + " is not available here");
  return k;
}

// A rows x cols weight of type dt, random in [-1, 1), quantized row by row into `data`.
TensorView random_weight(DType dt, int64_t rows, int64_t cols, std::vector<uint8_t>& data,
                         std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const size_t rb = row_bytes(dt, cols);
  data.assign(rb * rows, 0);
  std::vector<float> src(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : src) v = u(rng);
    kernels::quantize_row(dt, src.data(), data.data() + r * rb, cols);
  }
  TensorView w;
  w.name = "w";
  w.type = dt;
  w.n_dims = 2;
  w.ne[0] = cols;
  w.ne[1] = rows;
  w.data = data.data();
  w.n_bytes = data.size();
  return w;
}

// One point: a warm-up call, then calls until min_ms passed (and at least 3).
KernelsRow time_matmul(const kernels::KernelTable& k, const TensorView& w, int nt,
                       const KernelsOptions& o, ThreadPool& pool, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t rows = w.ne[1], cols = w.ne[0];
  AlignedFloats x(static_cast<size_t>(nt) * cols);  // as the engine's activations
  std::vector<float> y(static_cast<size_t>(nt) * rows);
  for (float& v : x) v = u(rng);
  kernels::matmul_with(k, w, x.data(), nt, y.data(), pool);  // warm up
  std::vector<double> times;
  double cpu = 0;
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    const double c0 = thread_cpu_s();
    const auto t0 = std::chrono::steady_clock::now();
    kernels::matmul_with(k, w, x.data(), nt, y.data(), pool);
    const auto t1 = std::chrono::steady_clock::now();
    cpu += thread_cpu_s() - c0;
    times.push_back(std::chrono::duration<double>(t1 - t0).count());
    if (std::chrono::duration<double, std::milli>(t1 - start).count() > o.min_ms &&
        times.size() >= 3)
      break;
  }
  std::sort(times.begin(), times.end());
  const double med = times[times.size() / 2];
  const double macs = static_cast<double>(rows) * cols * nt;
  KernelsRow r;
  r.rows = rows;
  r.cols = cols;
  r.tokens = nt;
  r.us_per_call = med * 1e6;
  r.gmac_s = macs / med / 1e9;
  r.weight_gb_s = w.n_bytes / med / 1e9;
  r.cpu_us_per_call = cpu / times.size() * 1e6;
  return r;
}

}  // namespace

Result<KernelsReport> run_kernels(const KernelsOptions& o, const KernelsProgress& progress) {
  KV_ASSIGN_OR_RETURN(const kernels::KernelTable* k, table_for(o.level));
  KernelsReport report;
  report.threads = thread_count(o.n_threads);
  report.level = cpu_level_name(k->level);
  ThreadPool pool(report.threads);
  if (progress) progress(report);
  std::mt19937 rng(7);
  for (const auto& dts : o.dtypes) {
    auto dt = dtype_from_name(dts);
    if (!dt || !kernels::can_quantize(*dt)) return invalid_argument("bad dtype " + dts);
    for (const auto& shape : o.shapes) {
      const auto xpos = shape.find('x');
      if (xpos == std::string::npos) return invalid_argument("bad shape " + shape);
      const int64_t rows = std::stoll(shape.substr(0, xpos)),
                    cols = std::stoll(shape.substr(xpos + 1));
      std::vector<uint8_t> wdata;
      TensorView w = random_weight(*dt, rows, cols, wdata, rng);
      const std::shared_ptr<void> packed = o.prepack ? kernels::prepack_with(*k, w) : nullptr;
      for (int nt : o.tokens) {
        report.rows.push_back(time_matmul(*k, w, nt, o, pool, rng));
        report.rows.back().dtype = dts;
        if (progress) progress(report);
      }
    }
  }
  return report;
}

}  // namespace kvserve::bench
