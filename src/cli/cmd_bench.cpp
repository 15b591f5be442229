// kvserve bench, and its decode and kernels benchmarks (src/bench/decode.h, kernels.h): flags in,
// the benchmark's report out as a text table and with --json as one JSON object.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench/decode.h"
#include "bench/kernels.h"
#include "cli/common.h"
#include "core/cpu_features.h"

namespace kvserve::cli {

namespace {

struct BenchDecodeFlags {
  BenchModelFlags model;  // --preset: a comma-separated list here
  std::string contexts = "128,512,2048";
  int n_gen = 32;
  int n_nocache_steps = 3;
  bool skip_nocache = false;
  KvTypeFlags kv_types;
  std::optional<int> block_size;
  int n_threads = 0;
  int repeat = 1;
  bool warmup = true;
  bool json = false;
};

// -m, else each preset's synth model.
Result<std::vector<std::string>> decode_model_paths(const BenchDecodeFlags& f) {
  if (!f.model.model_path.empty()) return std::vector<std::string>{f.model.model_path};
  auto dt = dtype_from_name(f.model.dtype);
  if (!dt) return invalid_argument("bad --dtype '" + f.model.dtype + "'");
  std::vector<std::string> paths;
  for (const auto& p : split_list(f.model.preset)) {
    KV_ASSIGN_OR_RETURN(std::string path, synth_preset_path(p, *dt));
    paths.push_back(path);
  }
  return paths;
}

Result<bench::DecodeOptions> decode_options(const BenchDecodeFlags& f) {
  bench::DecodeOptions o;
  KV_ASSIGN_OR_RETURN(o.contexts, parse_positive_ints(f.contexts, "--contexts"));
  KV_ASSIGN_OR_RETURN(const KvTypes t, kv_types_from_flags(f.kv_types));
  o.kv_type = t.k;
  o.block_size = block_size_or_default(f.block_size, t);
  KV_ASSIGN_OR_RETURN(o.model_paths, decode_model_paths(f));
  o.tokenizer_path = f.model.tokenizer_path;
  o.n_gen = f.n_gen;
  o.n_nocache_steps = f.n_nocache_steps;
  o.skip_nocache = f.skip_nocache;
  o.n_threads = f.n_threads;
  o.repeat = f.repeat;
  o.warmup = f.warmup;
  return o;
}

// The bandwidth line and the header first, then each row as it is measured.
void print_decode_progress(const bench::DecodeReport& r) {
  if (r.rows.empty()) {
    std::printf("memory read bandwidth (measured, %d threads): %.1f GB/s\n", r.threads,
                r.read_bytes_per_s / 1e9);
    std::printf("%-36s %7s %9s %14s %13s %12s %10s %10s\n", "model", "context", "kv cache",
                "prefill tok/s", "decode tok/s", "ms/token", "GB/s", "roofline");
    return;
  }
  const bench::DecodeRow& row = r.rows.back();
  if (row.cache) {
    std::printf("%-36s %7d %9s %14.1f %13.2f %12.2f %10.1f %9.0f%%\n", row.model.c_str(), row.ctx,
                "paged", row.prefill_tps, row.decode_tps, row.ms_per_token,
                bench::decode_bytes_per_s(row) / 1e9,
                100.0 * bench::roofline_fraction(row, r.read_bytes_per_s));
  } else {
    std::printf("%-36s %7d %9s %14.1f %13.2f %12.2f %10s %10s\n", row.model.c_str(), row.ctx,
                "none", row.prefill_tps, row.decode_tps, row.ms_per_token, "-", "-");
  }
  std::fflush(stdout);
}

void print_decode_json(const BenchDecodeFlags& f, const bench::DecodeOptions& o,
                       const bench::DecodeReport& r) {
  nlohmann::json j;
  j["bench"] = "decode";
  j["threads"] = r.threads;
  j["cpu"] = cpu_level_name(cpu_level());
  j["kv_type"] = f.kv_types.kv_type;
  j["block_size"] = o.block_size;
  j["memory_read_gb_s"] = r.read_bytes_per_s / 1e9;
  for (const bench::DecodeRow& row : r.rows) {
    j["results"].push_back(
        {{"model", row.model},
         {"context", row.ctx},
         {"kv_cache", row.cache},
         {"prefill_tokens_per_s", row.prefill_tps},
         {"decode_tokens_per_s", row.decode_tps},
         {"decode_ms_per_token", row.ms_per_token},
         {"decode_bytes_per_token", row.bytes_per_token},
         {"decode_gb_s", bench::decode_bytes_per_s(row) / 1e9},
         {"roofline_fraction", bench::roofline_fraction(row, r.read_bytes_per_s)}});
  }
  std::printf("%s\n", j.dump().c_str());
}

int run_decode(const BenchDecodeFlags& f) {
  auto o = decode_options(f);
  if (!o) return report(o.status());
  auto r = bench::run_decode(*o, print_decode_progress);
  if (!r) return report(r.status());
  // Growth of the per-token decode time from the smallest to the largest context.
  for (const bench::DecodeGrowth& g : bench::decode_growth(*r)) {
    std::printf("decode ms/token at %d vs %d context, %s: %.2fx\n", g.hi_ctx, g.lo_ctx,
                g.cache ? "paged KV cache" : "no KV cache", g.ratio);
  }
  if (f.json) print_decode_json(f, *o, *r);
  return 0;
}

struct BenchKernelFlags {
  std::string shapes = "576x576,192x576,1536x576,576x1536,49152x576";  // rows x cols
  std::string dtypes = "q8_0,f16";
  std::string tokens = "1,16,64,512";
  bench::KernelsOptions options;  // the rest
  bool json = false;
};

void print_kernels_progress(const bench::KernelsReport& r) {
  if (r.rows.empty()) {
    std::printf("level %s, %d threads\n", r.level.c_str(), r.threads);
    std::printf("%-6s %7s %6s %6s %11s %10s %9s %12s\n", "dtype", "rows", "cols", "tokens",
                "us/call", "GMAC/s", "w GB/s", "cpu us/call");
    return;
  }
  const bench::KernelsRow& row = r.rows.back();
  std::printf("%-6s %7lld %6lld %6d %11.1f %10.1f %9.1f %12.1f\n", row.dtype.c_str(),
              static_cast<long long>(row.rows), static_cast<long long>(row.cols), row.tokens,
              row.us_per_call, row.gmac_s, row.weight_gb_s, row.cpu_us_per_call);
  std::fflush(stdout);
}

int run_kernels(const BenchKernelFlags& f) {
  bench::KernelsOptions o = f.options;
  auto toks = parse_positive_ints(f.tokens, "--tokens");
  if (!toks) return report(toks.status());
  o.tokens = *toks;
  o.shapes = split_list(f.shapes);
  o.dtypes = split_list(f.dtypes);
  auto r = bench::run_kernels(o, print_kernels_progress);
  if (!r) return report(r.status());
  if (f.json) {
    nlohmann::json j;
    j["bench"] = "kernels";
    j["threads"] = r->threads;
    j["cpu"] = r->level;
    j["results"] = nlohmann::json::array();
    for (const bench::KernelsRow& row : r->rows) {
      j["results"].push_back({{"dtype", row.dtype},
                              {"rows", row.rows},
                              {"cols", row.cols},
                              {"tokens", row.tokens},
                              {"us_per_call", row.us_per_call},
                              {"gmac_s", row.gmac_s},
                              {"weight_gb_s", row.weight_gb_s}});
    }
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

void register_bench_decode(CLI::App* bench, int* rc) {
  auto f = std::make_shared<BenchDecodeFlags>();
  CLI::App* dec =
      bench->add_subcommand("decode", "prefill and decode speed vs context, cache on/off");
  add_bench_model_flags(*dec, f->model, "synth presets, comma-separated (when no -m)");
  dec->add_option("--contexts", f->contexts, "context lengths")->capture_default_str();
  dec->add_option("--gen", f->n_gen, "decode tokens per run with the cache")->capture_default_str();
  dec->add_option("--nocache-steps", f->n_nocache_steps, "decode steps per run without the cache")
      ->capture_default_str();
  dec->add_flag("--skip-nocache", f->skip_nocache, "measure only the paged cache");
  add_kv_type_flags(*dec, f->kv_types, /*k_and_v_apart=*/false);
  add_block_size_flag(*dec, f->block_size);
  add_threads_option(*dec, f->n_threads);
  dec->add_option("--repeat", f->repeat, "measured runs per point (tokens/s are their mean)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  dec->add_flag("!--no-warmup", f->warmup, "measure the first run too (cold pages and caches)");
  dec->add_flag("--json", f->json, "also print the results as one JSON object");
  dec->callback([f, rc] { *rc = run_decode(*f); });
}

void register_bench_kernels(CLI::App* bench, int* rc) {
  auto f = std::make_shared<BenchKernelFlags>();
  bench::KernelsOptions& o = f->options;
  CLI::App* kb = bench->add_subcommand("kernels", "matmul speed per shape, type and token count");
  kb->add_option("--shapes", f->shapes, "ROWSxCOLS list")->capture_default_str();
  kb->add_option("--dtypes", f->dtypes, "weight types")->capture_default_str();
  kb->add_option("--tokens", f->tokens, "token counts (rows of x)")->capture_default_str();
  kb->add_option("--level", o.level, "scalar, avx2 or avx512 (default: this CPU's best)");
  add_threads_option(*kb, o.n_threads);
  kb->add_option("--min-ms", o.min_ms, "time per point")->capture_default_str();
  kb->add_flag("!--no-prepack", o.prepack,
               "lay out q8_0 / q4_0 weights on every call instead of once, as at load");
  kb->add_flag("--json", f->json, "also print the results as one JSON object");
  kb->callback([f, rc] { *rc = run_kernels(*f); });
}

}  // namespace

void register_bench(CLI::App& app, int* rc) {
  CLI::App* bench = app.add_subcommand("bench", "benchmarks");
  bench->require_subcommand(1);
  register_bench_decode(bench, rc);
  register_bench_kernels(bench, rc);
  register_bench_serve(bench, rc);
  register_bench_prefix(bench, rc);
  register_bench_kv_quality(bench, rc);
  register_bench_batch(bench, rc);
  register_bench_attention(bench, rc);
}

}  // namespace kvserve::cli
