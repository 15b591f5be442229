// kvserve bench decode: prefill and decode speed at several contexts, with the paged KV cache
// and with --no-kv-cache recomputation, on synth presets or a given model.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "cli/common.h"
#include "core/aligned.h"
#include "core/cpu_features.h"
#include "core/membw.h"
#include "kernels/ops.h"
#include "kernels/ops_impl.h"
#include "kernels/quant.h"
#include "kv/kv_storage.h"

namespace kvserve::cli {

namespace {

struct BenchDecodeFlags {
  ModelFlags model;
  std::string presets = "smollm-135m";
  std::string dtype = "q8_0";
  std::string contexts = "128,512,2048";
  int n_gen = 32;
  int n_nocache_steps = 3;
  bool skip_nocache = false;
  std::string kv_type = "f16";
  int block_size = 16;
  int n_threads = 0;
  int repeat = 1;      // measured runs per point (mean)
  bool warmup = true;  // one unmeasured run first
  bool json = false;
};

struct Row {
  std::string model;
  int ctx;
  bool cache;
  double prefill_tps = 0, decode_tps = 0, ms_per_token = 0;
  double bytes_per_token = 0;  // weights + KV read by one decode step (cached mode)
};

// One (context, cache mode) point: a warm-up run, then --repeat runs on the same engine (its KV
// pages and buffers already touched, as llama-bench measures), each on a fresh random prompt with
// the prefix cache off; tokens/s are the mean over the runs.
Result<Row> measure(const Model& m, int ctx, bool cache, const BenchDecodeFlags& f,
                    KvType kv_type) {
  const int n_gen = cache ? f.n_gen : f.n_nocache_steps + 1;
  EngineOptions eo;
  eo.block_size = f.block_size;
  eo.kv_type_k = eo.kv_type_v = kv_type;
  eo.n_threads = f.n_threads;
  eo.n_ctx = ctx + n_gen + 1;
  eo.prefix_cache = false;
  KV_ASSIGN_OR_RETURN(auto gen, Generator::create(m, eo));
  Row row;
  row.ctx = ctx;
  row.cache = cache;
  const int runs = std::max(1, f.repeat) + (f.warmup ? 1 : 0);
  int n_measured = 0;
  for (int run = 0; run < runs; ++run) {
    GenerateRequest req;
    Rng rng(1234 + ctx + 7919 * run);
    for (int i = 0; i < ctx; ++i)
      req.prompt.push_back(3 + static_cast<int32_t>(rng.next() % (m.config.n_vocab - 3)));
    req.n_predict = n_gen;
    req.ignore_eos = true;
    req.use_kv_cache = cache;
    KV_ASSIGN_OR_RETURN(GenerateResult r, gen->generate(req));
    if (f.warmup && run == 0) continue;
    const double ms_tok = r.n_decode_steps ? r.decode_ms / r.n_decode_steps : 0;
    row.prefill_tps += ctx * 1000.0 / r.prefill_ms;
    row.decode_tps += ms_tok > 0 ? 1000.0 / ms_tok : 0;
    row.ms_per_token += ms_tok;
    ++n_measured;
  }
  row.prefill_tps /= n_measured;
  row.decode_tps /= n_measured;
  row.ms_per_token /= n_measured;
  // A decode step reads every weight once and the K/V of every cached position (the mean
  // context over the measured steps).
  const double mean_ctx = ctx + n_gen / 2.0;
  row.bytes_per_token = static_cast<double>(m.weight_bytes()) +
                        (cache ? gen->kv().layout().bytes_per_token() * mean_ctx : 0.0);
  return row;
}

int run_decode(const BenchDecodeFlags& f) {
  auto contexts = parse_positive_ints(f.contexts, "--contexts");
  if (!contexts) return report(contexts.status());
  auto kv_type = parse_kv_type_flag("--kv-type", f.kv_type);
  if (!kv_type) return report(kv_type.status());
  std::vector<std::string> paths;
  if (!f.model.model_path.empty()) {
    paths.push_back(f.model.model_path);
  } else {
    auto dt = dtype_from_name(f.dtype);
    if (!dt) return report(invalid_argument("bad --dtype '" + f.dtype + "'"));
    for (const auto& p : split_list(f.presets)) {
      auto path = synth_preset_path(p, *dt);
      if (!path) return report(path.status());
      paths.push_back(*path);
    }
  }
  const int threads =
      f.n_threads > 0 ? f.n_threads : static_cast<int>(std::thread::hardware_concurrency());
  double bw = 0;
  {
    ThreadPool pool(threads);
    bw = measure_read_bandwidth(pool);
  }
  std::printf("memory read bandwidth (measured, %d threads): %.1f GB/s\n", threads, bw / 1e9);
  std::vector<Row> rows;
  std::printf("%-36s %7s %9s %14s %13s %12s %10s %10s\n", "model", "context", "kv cache",
              "prefill tok/s", "decode tok/s", "ms/token", "GB/s", "roofline");
  for (const auto& path : paths) {
    LoadOptions lo;
    lo.tokenizer_path = f.model.tokenizer_path;
    auto m = load_model(path, lo);
    if (!m) return report(m.status());
    const std::string name = std::filesystem::path(path).filename().string();
    for (bool cache : {true, false}) {
      if (!cache && f.skip_nocache) continue;
      for (int ctx : *contexts) {
        auto r = measure(**m, ctx, cache, f, *kv_type);
        if (!r) return report(r.status());
        r->model = name;
        rows.push_back(*r);
        if (cache) {
          const double achieved = r->bytes_per_token * r->decode_tps;
          std::printf("%-36s %7d %9s %14.1f %13.2f %12.2f %10.1f %9.0f%%\n", name.c_str(), ctx,
                      "paged", r->prefill_tps, r->decode_tps, r->ms_per_token, achieved / 1e9,
                      bw > 0 ? 100.0 * achieved / bw : 0.0);
        } else {
          std::printf("%-36s %7d %9s %14.1f %13.2f %12.2f %10s %10s\n", name.c_str(), ctx, "none",
                      r->prefill_tps, r->decode_tps, r->ms_per_token, "-", "-");
        }
        std::fflush(stdout);
      }
    }
  }
  // Growth of the per-token decode time from the smallest to the largest context.
  for (bool cache : {true, false}) {
    const Row *lo = nullptr, *hi = nullptr;
    for (const Row& r : rows) {
      if (r.cache != cache) continue;
      if (!lo || r.ctx < lo->ctx) lo = &r;
      if (!hi || r.ctx > hi->ctx) hi = &r;
    }
    if (lo && hi && lo != hi && lo->ms_per_token > 0) {
      std::printf("decode ms/token at %d vs %d context, %s: %.2fx\n", hi->ctx, lo->ctx,
                  cache ? "paged KV cache" : "no KV cache", hi->ms_per_token / lo->ms_per_token);
    }
  }
  if (f.json) {
    nlohmann::json j;
    j["bench"] = "decode";
    j["threads"] = threads;
    j["cpu"] = cpu_level_name(cpu_level());
    j["kv_type"] = f.kv_type;
    j["block_size"] = f.block_size;
    j["memory_read_gb_s"] = bw / 1e9;
    for (const Row& r : rows) {
      j["results"].push_back(
          {{"model", r.model},
           {"context", r.ctx},
           {"kv_cache", r.cache},
           {"prefill_tokens_per_s", r.prefill_tps},
           {"decode_tokens_per_s", r.decode_tps},
           {"decode_ms_per_token", r.ms_per_token},
           {"decode_bytes_per_token", r.bytes_per_token},
           {"decode_gb_s", r.cache ? r.bytes_per_token * r.decode_tps / 1e9 : 0.0},
           {"roofline_fraction", r.cache && bw > 0 ? r.bytes_per_token * r.decode_tps / bw : 0.0}});
    }
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

// kvserve bench kernels: one matmul shape at a time, outside the model, so a kernel change can
// be measured (and compared across ISA levels) without the rest of the forward pass.
struct BenchKernelFlags {
  std::string shapes = "576x576,192x576,1536x576,576x1536,49152x576";  // rows x cols
  std::string dtypes = "q8_0,f16";
  std::string tokens = "1,16,64,512";
  std::string level;  // empty: active level
  int n_threads = 0;
  double min_ms = 200;  // time per (shape, dtype, tokens) point
  bool prepack = true;  // weights laid out once, as load_model does
  bool json = false;
};

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int run_kernels(const BenchKernelFlags& f) {
  auto toks = parse_positive_ints(f.tokens, "--tokens");
  if (!toks) return report(toks.status());
  const kernels::KernelTable* k = &kernels::active_kernels();
  if (!f.level.empty()) {
    CpuLevel lv = CpuLevel::kScalar;
    if (f.level == "avx2")
      lv = CpuLevel::kAvx2;
    else if (f.level == "avx512")
      lv = CpuLevel::kAvx512;
    else if (f.level != "scalar")
      return report(invalid_argument("bad --level '" + f.level + "'"));
    k = kernels::kernel_table(lv);
    if (!k) return report(invalid_argument("--level " + f.level + " is not available here"));
  }
  const int threads =
      f.n_threads > 0 ? f.n_threads : static_cast<int>(std::thread::hardware_concurrency());
  ThreadPool pool(threads);
  std::printf("level %s, %d threads\n", cpu_level_name(k->level), threads);
  std::printf("%-6s %7s %6s %6s %11s %10s %9s %12s\n", "dtype", "rows", "cols", "tokens", "us/call",
              "GMAC/s", "w GB/s", "cpu us/call");
  nlohmann::json out = nlohmann::json::array();
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const auto& dts : split_list(f.dtypes)) {
    auto dt = dtype_from_name(dts);
    if (!dt || !kernels::can_quantize(*dt)) return report(invalid_argument("bad dtype " + dts));
    for (const auto& shape : split_list(f.shapes)) {
      const auto xpos = shape.find('x');
      if (xpos == std::string::npos) return report(invalid_argument("bad shape " + shape));
      const int64_t rows = std::stoll(shape.substr(0, xpos)),
                    cols = std::stoll(shape.substr(xpos + 1));
      const size_t rb = row_bytes(*dt, cols);
      std::vector<uint8_t> wdata(rb * rows);
      std::vector<float> src(static_cast<size_t>(cols));
      for (int64_t r = 0; r < rows; ++r) {
        for (float& v : src) v = u(rng);
        kernels::quantize_row(*dt, src.data(), wdata.data() + r * rb, cols);
      }
      TensorView w;
      w.name = "w";
      w.type = *dt;
      w.n_dims = 2;
      w.ne[0] = cols;
      w.ne[1] = rows;
      w.data = wdata.data();
      w.n_bytes = wdata.size();
      const std::shared_ptr<void> packed = f.prepack ? kernels::prepack_with(*k, w) : nullptr;
      for (int nt : *toks) {
        AlignedFloats x(static_cast<size_t>(nt) * cols);  // as the engine's activations
        std::vector<float> y(static_cast<size_t>(nt) * rows);
        for (float& v : x) v = u(rng);
        kernels::matmul_with(*k, w, x.data(), nt, y.data(), pool);  // warm up
        std::vector<double> times;
        double cpu = 0;
        const auto start = std::chrono::steady_clock::now();
        for (;;) {
          const double c0 = thread_cpu_s();
          const auto t0 = std::chrono::steady_clock::now();
          kernels::matmul_with(*k, w, x.data(), nt, y.data(), pool);
          const auto t1 = std::chrono::steady_clock::now();
          cpu += thread_cpu_s() - c0;
          times.push_back(std::chrono::duration<double>(t1 - t0).count());
          if (std::chrono::duration<double, std::milli>(t1 - start).count() > f.min_ms &&
              times.size() >= 3)
            break;
        }
        std::sort(times.begin(), times.end());
        const double med = times[times.size() / 2];
        const double macs = static_cast<double>(rows) * cols * nt;
        std::printf("%-6s %7lld %6lld %6d %11.1f %10.1f %9.1f %12.1f\n", dts.c_str(),
                    static_cast<long long>(rows), static_cast<long long>(cols), nt, med * 1e6,
                    macs / med / 1e9, wdata.size() / med / 1e9, cpu / times.size() * 1e6);
        std::fflush(stdout);
        out.push_back({{"dtype", dts},
                       {"rows", rows},
                       {"cols", cols},
                       {"tokens", nt},
                       {"us_per_call", med * 1e6},
                       {"gmac_s", macs / med / 1e9},
                       {"weight_gb_s", wdata.size() / med / 1e9}});
      }
    }
  }
  if (f.json) {
    nlohmann::json j;
    j["bench"] = "kernels";
    j["threads"] = threads;
    j["cpu"] = cpu_level_name(k->level);
    j["results"] = out;
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace

void register_bench(CLI::App& app, int* rc) {
  CLI::App* bench = app.add_subcommand("bench", "benchmarks");
  bench->require_subcommand(1);
  auto f = std::make_shared<BenchDecodeFlags>();
  CLI::App* dec =
      bench->add_subcommand("decode", "prefill and decode speed vs context, cache on/off");
  add_model_flags(*dec, f->model);
  dec->add_option("--preset", f->presets, "synth presets, comma-separated (when no -m)")
      ->capture_default_str();
  dec->add_option("--dtype", f->dtype, "synth weight type")->capture_default_str();
  dec->add_option("--contexts", f->contexts, "context lengths")->capture_default_str();
  dec->add_option("--gen", f->n_gen, "decode tokens per run with the cache")->capture_default_str();
  dec->add_option("--nocache-steps", f->n_nocache_steps, "decode steps per run without the cache")
      ->capture_default_str();
  dec->add_flag("--skip-nocache", f->skip_nocache, "measure only the paged cache");
  dec->add_option("--kv-type", f->kv_type, "KV element type")->capture_default_str();
  dec->add_option("--block-size", f->block_size, "tokens per block")->capture_default_str();
  add_threads_option(*dec, f->n_threads);
  dec->add_option("--repeat", f->repeat, "measured runs per point (tokens/s are their mean)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  dec->add_flag("!--no-warmup", f->warmup, "measure the first run too (cold pages and caches)");
  dec->add_flag("--json", f->json, "also print the results as one JSON object");
  dec->callback([f, rc] { *rc = run_decode(*f); });
  auto kf = std::make_shared<BenchKernelFlags>();
  CLI::App* kb = bench->add_subcommand("kernels", "matmul speed per shape, type and token count");
  kb->add_option("--shapes", kf->shapes, "ROWSxCOLS list")->capture_default_str();
  kb->add_option("--dtypes", kf->dtypes, "weight types")->capture_default_str();
  kb->add_option("--tokens", kf->tokens, "token counts (rows of x)")->capture_default_str();
  kb->add_option("--level", kf->level, "scalar, avx2 or avx512 (default: this CPU's best)");
  add_threads_option(*kb, kf->n_threads);
  kb->add_option("--min-ms", kf->min_ms, "time per point")->capture_default_str();
  kb->add_flag("!--no-prepack", kf->prepack,
               "lay out q8_0 / q4_0 weights on every call instead of once, as at load");
  kb->add_flag("--json", kf->json, "also print the results as one JSON object");
  kb->callback([kf, rc] { *rc = run_kernels(*kf); });
  register_bench_serve(bench, rc);
  register_bench_prefix(bench, rc);
  register_bench_kv_quality(bench, rc);
  register_bench_batch(bench, rc);
  register_bench_attention(bench, rc);
}

}  // namespace kvserve::cli
