// kvserve bench prefix: time to first token of N requests that share a system prompt of S
// tokens, each with its own user suffix of U tokens, with the prefix cache off and on (same
// run, same prompts). TTFT is the prefill of the prompt up to the first token's logits,
// including the prefix-cache lookup. Statistics cover requests 2..N (request 1 fills the cache).
//
// hit_rate          tokens served from cache / prompt tokens, over all N requests
// hit_rate_optimum  (N - 1) * floor(S / B) * B / (N * (S + U)): the fraction of prompt tokens
//                   that lie in full blocks of the shared prompt that an earlier request
//                   already computed (the first request can hit nothing; the block straddling
//                   the shared/suffix boundary differs per request).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/common.h"
#include "core/cpu_features.h"
#include "engine/sampler.h"

namespace kvserve::cli {

namespace {

struct BenchPrefixFlags {
  BenchModelFlags model;
  PrefixFlags prefix;  // --hash is used; --prefix-cache is ignored (both are measured)
  int n_shared = 1024;
  int n_suffix = 64;
  int n_requests = 16;
  int block_size = 16;
  int kv_blocks = 0;
  std::string kv_type = "f16";
  int n_threads = 0;
  bool json = false;
};

struct Pass {
  std::vector<double> ttft_ms;  // [n_requests]
  std::vector<int> cached;      // [n_requests]
  KvCacheStats stats;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * v.size()));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

std::vector<std::vector<int32_t>> make_prompts(const BenchPrefixFlags& f, int n_vocab) {
  Rng rng(2024);
  auto tok = [&] { return 3 + static_cast<int32_t>(rng.next() % (n_vocab - 3)); };
  std::vector<int32_t> shared;
  for (int i = 0; i < f.n_shared; ++i) shared.push_back(tok());
  std::vector<std::vector<int32_t>> prompts;
  for (int r = 0; r < f.n_requests; ++r) {
    std::vector<int32_t> p = shared;
    for (int i = 0; i < f.n_suffix; ++i) p.push_back(tok());
    prompts.push_back(std::move(p));
  }
  return prompts;
}

Result<Pass> run_pass(const Model& m, const BenchPrefixFlags& f, EngineOptions eo, bool on,
                      const std::vector<std::vector<int32_t>>& prompts) {
  eo.prefix_cache = on;
  KV_ASSIGN_OR_RETURN(auto gen, Generator::create(m, eo));
  Pass pass;
  for (const auto& prompt : prompts) {
    GenerateRequest req;
    req.prompt = prompt;
    req.n_predict = 1;
    req.ignore_eos = true;
    req.sampling.temperature = 0;
    KV_ASSIGN_OR_RETURN(GenerateResult r, gen->generate(req));
    pass.ttft_ms.push_back(r.prefill_ms);
    pass.cached.push_back(r.n_cached_tokens);
  }
  pass.stats = gen->kv().stats();
  return pass;
}

int run_prefix(const BenchPrefixFlags& f) {
  if (f.n_shared < 0 || f.n_suffix < 1 || f.n_requests < 2) {
    return report(invalid_argument("need --shared >= 0, --suffix >= 1 and --requests >= 2"));
  }
  EngineOptions eo;
  eo.block_size = f.block_size;
  eo.n_threads = f.n_threads;
  auto kv_type = parse_kv_type_flag("--kv-type", f.kv_type);
  if (!kv_type) return report(kv_type.status());
  eo.kv_type_k = eo.kv_type_v = *kv_type;
  if (Status st = apply_prefix_flags(f.prefix, eo); !st.is_ok()) return report(st);
  const int n_prompt = f.n_shared + f.n_suffix;
  eo.n_ctx = n_prompt + 1;
  // Default pool: room for two requests, so old suffix blocks get evicted (LRU) while the
  // shared prompt, touched by every request, stays cached.
  eo.kv_blocks = f.kv_blocks > 0 ? f.kv_blocks : 2 * blocks_for_tokens(n_prompt + 1, f.block_size);

  auto path = bench_model_path(f.model);
  if (!path) return report(path.status());
  LoadOptions lo;
  lo.tokenizer_path = f.model.tokenizer_path;
  auto m = load_model(*path, lo);
  if (!m) return report(m.status());
  const auto prompts = make_prompts(f, (*m)->config.n_vocab);

  auto off = run_pass(**m, f, eo, false, prompts);
  if (!off) return report(off.status());
  auto on = run_pass(**m, f, eo, true, prompts);
  if (!on) return report(on.status());

  auto tail = [](const std::vector<double>& v) {
    return std::vector<double>(v.begin() + 1, v.end());
  };
  const double p50_off = percentile(tail(off->ttft_ms), 50),
               p95_off = percentile(tail(off->ttft_ms), 95);
  const double p50_on = percentile(tail(on->ttft_ms), 50),
               p95_on = percentile(tail(on->ttft_ms), 95);
  const int bs = f.block_size;
  const double optimum = static_cast<double>(f.n_requests - 1) * (f.n_shared / bs) * bs /
                         (static_cast<double>(f.n_requests) * n_prompt);
  const double hit_rate = on->stats.hit_rate();
  const std::string name = std::filesystem::path(*path).filename().string();
  const int threads =
      f.n_threads > 0 ? f.n_threads : static_cast<int>(std::thread::hardware_concurrency());

  if (f.json) {
    nlohmann::json j;
    j["bench"] = "prefix";
    j["model"] = name;
    j["threads"] = threads;
    j["cpu"] = cpu_level_name(cpu_level());
    j["shared"] = f.n_shared;
    j["suffix"] = f.n_suffix;
    j["requests"] = f.n_requests;
    j["block_size"] = bs;
    j["kv_type"] = f.kv_type;
    j["kv_blocks"] = eo.kv_blocks;
    j["hash"] = hash_kind_name(eo.hash);
    j["ttft_ms_off"] = off->ttft_ms;
    j["ttft_ms_on"] = on->ttft_ms;
    j["cached_tokens_on"] = on->cached;
    j["ttft_p50_ms_off"] = p50_off;
    j["ttft_p95_ms_off"] = p95_off;
    j["ttft_p50_ms_on"] = p50_on;
    j["ttft_p95_ms_on"] = p95_on;
    j["ttft_p50_reduction"] = p50_off > 0 ? 1 - p50_on / p50_off : 0;
    j["hit_rate"] = hit_rate;
    j["hit_rate_optimum"] = optimum;
    j["evictions"] = on->stats.n_evictions;
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("model %s, %d requests of %d shared + %d own tokens, block size %d, %d threads\n",
              name.c_str(), f.n_requests, f.n_shared, f.n_suffix, bs, threads);
  std::printf("%-14s %12s %12s %10s\n", "prefix cache", "TTFT p50 ms", "TTFT p95 ms", "hit rate");
  std::printf("%-14s %12.2f %12.2f %10.4f\n", "off", p50_off, p95_off, off->stats.hit_rate());
  std::printf("%-14s %12.2f %12.2f %10.4f\n", "on", p50_on, p95_on, hit_rate);
  std::printf(
      "TTFT p50 (requests 2..%d) down %.1f%%; hit rate %.4f of optimum %.4f; %lld evictions\n",
      f.n_requests, p50_off > 0 ? 100.0 * (1 - p50_on / p50_off) : 0.0, hit_rate, optimum,
      static_cast<long long>(on->stats.n_evictions));
  return 0;
}

}  // namespace

void register_bench_prefix(CLI::App* bench, int* rc) {
  auto f = std::make_shared<BenchPrefixFlags>();
  CLI::App* sub =
      bench->add_subcommand("prefix", "TTFT of requests sharing a prompt, prefix cache off vs on");
  add_bench_model_flags(*sub, f->model);
  sub->add_option("--hash", f->prefix.hash, "prefix-cache key hash: xxh3 or sha256")
      ->capture_default_str();
  sub->add_option("--shared", f->n_shared, "tokens of the shared system prompt")
      ->capture_default_str();
  sub->add_option("--suffix", f->n_suffix, "tokens of each request's own suffix")
      ->capture_default_str();
  sub->add_option("--requests", f->n_requests, "number of requests")->capture_default_str();
  sub->add_option("--block-size", f->block_size, "tokens per block")->capture_default_str();
  sub->add_option("--kv-blocks", f->kv_blocks,
                  "KV pool size in blocks (default: two requests' worth)");
  sub->add_option("--kv-type", f->kv_type, "KV element type")->capture_default_str();
  add_threads_option(*sub, f->n_threads);
  sub->add_flag("--json", f->json, "print one JSON object");
  sub->callback([f, rc] { *rc = run_prefix(*f); });
}

}  // namespace kvserve::cli
