// kvserve bench prefix: TTFT of requests sharing a prompt, the prefix cache off vs on
// (src/bench/prefix.h).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench/prefix.h"
#include "cli/common.h"
#include "core/cpu_features.h"

namespace kvserve::cli {

namespace {

struct BenchPrefixFlags {
  BenchModelFlags model;
  PrefixFlags prefix;  // --hash is used; --prefix-cache is ignored (both are measured)
  std::optional<int> block_size;
  KvTypeFlags kv_types;
  int n_threads = 0;
  bench::PrefixOptions options;  // the rest
  bool json = false;
};

Result<bench::PrefixOptions> prefix_options(const BenchPrefixFlags& f) {
  bench::PrefixOptions o = f.options;
  KV_ASSIGN_OR_RETURN(const KvTypes t, kv_types_from_flags(f.kv_types));
  o.engine.kv_type_k = o.engine.kv_type_v = t.k;
  o.engine.block_size = block_size_or_default(f.block_size, t);
  o.engine.n_threads = f.n_threads;
  KV_RETURN_IF_ERROR(apply_prefix_flags(f.prefix, o.engine));
  o.load_model = bench_model_loader(f.model);
  return o;
}

void print_json(const BenchPrefixFlags& f, const bench::PrefixOptions& o,
                const bench::PrefixReport& r) {
  nlohmann::json j;
  j["bench"] = "prefix";
  j["model"] = r.model;
  j["threads"] = bench::thread_count(f.n_threads);
  j["cpu"] = cpu_level_name(cpu_level());
  j["shared"] = o.n_shared;
  j["suffix"] = o.n_suffix;
  j["requests"] = o.n_requests;
  j["block_size"] = o.engine.block_size;
  j["kv_type"] = f.kv_types.kv_type;
  j["kv_blocks"] = r.kv_blocks;
  j["hash"] = hash_kind_name(o.engine.hash);
  j["ttft_ms_off"] = r.off.ttft_ms;
  j["ttft_ms_on"] = r.on.ttft_ms;
  j["cached_tokens_on"] = r.on.cached;
  j["ttft_p50_ms_off"] = r.off.ttft_p50;
  j["ttft_p95_ms_off"] = r.off.ttft_p95;
  j["ttft_p50_ms_on"] = r.on.ttft_p50;
  j["ttft_p95_ms_on"] = r.on.ttft_p95;
  j["ttft_p50_reduction"] = r.p50_reduction();
  j["hit_rate"] = r.hit_rate;
  j["hit_rate_optimum"] = r.hit_rate_optimum;
  j["evictions"] = r.on.stats.n_evictions;
  std::printf("%s\n", j.dump().c_str());
}

void print_text(const BenchPrefixFlags& f, const bench::PrefixOptions& o,
                const bench::PrefixReport& r) {
  std::printf("model %s, %d requests of %d shared + %d own tokens, block size %d, %d threads\n",
              r.model.c_str(), o.n_requests, o.n_shared, o.n_suffix, o.engine.block_size,
              bench::thread_count(f.n_threads));
  std::printf("%-14s %12s %12s %10s\n", "prefix cache", "TTFT p50 ms", "TTFT p95 ms", "hit rate");
  std::printf("%-14s %12.2f %12.2f %10.4f\n", "off", r.off.ttft_p50, r.off.ttft_p95,
              r.off.stats.hit_rate());
  std::printf("%-14s %12.2f %12.2f %10.4f\n", "on", r.on.ttft_p50, r.on.ttft_p95, r.hit_rate);
  std::printf(
      "TTFT p50 (requests 2..%d) down %.1f%%; hit rate %.4f of optimum %.4f; %lld evictions\n",
      o.n_requests, 100.0 * r.p50_reduction(), r.hit_rate, r.hit_rate_optimum,
      static_cast<long long>(r.on.stats.n_evictions));
}

int run_prefix(const BenchPrefixFlags& f) {
  auto o = prefix_options(f);
  if (!o) return report(o.status());
  auto r = bench::run_prefix(*o);
  if (!r) return report(r.status());
  if (f.json) {
    print_json(f, *o, *r);
  } else {
    print_text(f, *o, *r);
  }
  return 0;
}

}  // namespace

void register_bench_prefix(CLI::App* bench, int* rc) {
  auto f = std::make_shared<BenchPrefixFlags>();
  bench::PrefixOptions& o = f->options;
  CLI::App* sub =
      bench->add_subcommand("prefix", "TTFT of requests sharing a prompt, prefix cache off vs on");
  add_bench_model_flags(*sub, f->model);
  sub->add_option("--hash", f->prefix.hash, "prefix-cache key hash: xxh3 or sha256")
      ->capture_default_str();
  sub->add_option("--shared", o.n_shared, "tokens of the shared system prompt")
      ->capture_default_str();
  sub->add_option("--suffix", o.n_suffix, "tokens of each request's own suffix")
      ->capture_default_str();
  sub->add_option("--requests", o.n_requests, "number of requests")->capture_default_str();
  add_block_size_flag(*sub, f->block_size);
  sub->add_option("--kv-blocks", o.kv_blocks,
                  "KV pool size in blocks (default: two requests' worth)");
  add_kv_type_flags(*sub, f->kv_types, /*k_and_v_apart=*/false);
  add_threads_option(*sub, f->n_threads);
  sub->add_flag("--json", f->json, "print one JSON object");
  sub->callback([f, rc] { *rc = run_prefix(*f); });
}

}  // namespace kvserve::cli
