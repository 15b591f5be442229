// kvserve bench serve: throughput and latency under concurrent load, continuous against static
// batching, in-process or over HTTP (src/bench/serve.h).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench/serve.h"
#include "cli/common.h"
#include "core/cpu_features.h"

namespace kvserve::cli {

namespace {

struct BenchServeFlags {
  BenchModelFlags model;
  std::string clients = "1,4,16,64";
  std::string schedulers = "continuous,static,static-shrink";
  std::string gen_dist = "uniform";  // or lognormal
  KvTypeFlags kv_types;
  std::string preemption = "recompute";  // recompute, swap or both: compared in one run
  bench::ServeOptions options;           // the rest
  bool json = false;
};

Result<bench::ServeOptions> serve_options(const BenchServeFlags& f) {
  bench::ServeOptions o = f.options;
  KV_ASSIGN_OR_RETURN(o.clients, parse_positive_ints(f.clients, "--clients"));
  o.lognormal = f.gen_dist == "lognormal";
  KV_RETURN_IF_ERROR(bench::check_serve_options(o));
  KV_ASSIGN_OR_RETURN(const KvTypes t, kv_types_from_flags(f.kv_types));
  o.kv_type = t.k;
  o.schedulers.clear();
  for (const std::string& name : split_list(f.schedulers)) {
    const auto k = scheduler_kind_from_name(name);
    if (!k)
      return invalid_argument("--schedulers: unknown scheduler '" + name +
                              "' (continuous, static, static-shrink)");
    o.schedulers.push_back(*k);
  }
  o.preemptions.clear();
  if (f.preemption.find("recompute") != std::string::npos)
    o.preemptions.push_back(PreemptionMode::kRecompute);
  if (f.preemption.find("swap") != std::string::npos)
    o.preemptions.push_back(PreemptionMode::kSwap);
  if (o.preemptions.empty())
    return invalid_argument("--preemption must list recompute and/or swap");
  o.load_model = bench_model_loader(f.model);
  return o;
}

void print_progress(const BenchServeFlags& f, const bench::ServeOptions& o,
                    const bench::ServeReport& r) {
  if (r.rows.empty()) {
    std::printf(
        "model %s, prompt %d tokens, output %d..%d tokens (%s), %d requests per client, %s\n",
        r.model.c_str(), o.prompt_len, o.gen_min, o.gen_max, f.gen_dist.c_str(),
        o.requests_per_client,
        o.http ? "over HTTP (streaming /v1/completions, loopback)" : "in-process");
    if (o.temperature > 0)
      std::printf("sampled: temperature %.2f, top_p %.2f\n", o.temperature, o.top_p);
    std::printf("%-13s %-9s %7s %9s %11s %10s %10s %10s %9s %9s %7s %7s\n", "scheduler", "preempt",
                "clients", "tokens", "tokens/s", "steady/s", "ttft p50", "ttft p99", "itl p50",
                "itl p99", "preempt", "swapped");
    return;
  }
  const bench::ServeRow& row = r.rows.back();
  std::printf("%-13s %-9s %7d %9lld %11.1f %10.1f %8.1fms %8.1fms %7.1fms %7.1fms %7lld %7lld\n",
              row.scheduler.c_str(), row.preemption.c_str(), row.clients,
              static_cast<long long>(row.tokens), row.tps, row.steady_tps, row.ttft_p50,
              row.ttft_p99, row.itl_p50, row.itl_p99, static_cast<long long>(row.preemptions),
              static_cast<long long>(row.swapped));
  std::fflush(stdout);
}

// Per client count: continuous against 1 client, against the static baselines, and swap
// against recompute preemption.
void print_comparisons(const bench::ServeOptions& o, const bench::ServeReport& r) {
  const bench::ServeRow* one = r.find("continuous", 1);
  for (int c : o.clients) {
    const bench::ServeRow* cont = r.find("continuous", c);
    if (cont && one && c > 1) {
      std::printf("continuous, %d clients vs 1: %.2fx tokens/s, %.2fx at full concurrency\n", c,
                  cont->tps / one->tps, cont->steady_tps / one->steady_tps);
    }
    for (const char* base : {"static", "static-shrink"}) {
      const bench::ServeRow* stat = r.find(base, c);
      if (cont && stat) {
        std::printf("continuous vs %s, %d clients: %.2fx tokens/s, %.2fx at full concurrency\n",
                    base, c, cont->tps / stat->tps, cont->steady_tps / stat->steady_tps);
      }
    }
    const bench::ServeRow* swap = r.find("continuous", c, "swap");
    const bench::ServeRow* recompute = r.find("continuous", c, "recompute");
    if (swap && recompute) {
      std::printf("swap vs recompute preemption, %d clients: %.2fx tokens/s\n", c,
                  swap->tps / recompute->tps);
    }
  }
}

void print_json(const bench::ServeOptions& o, const bench::ServeReport& r) {
  nlohmann::json j;
  j["bench"] = "serve";
  j["cpu"] = cpu_level_name(cpu_level());
  j["model"] = r.model;
  j["transport"] = o.http ? "http" : "in-process";
  j["temperature"] = o.temperature;
  j["top_p"] = o.top_p;
  for (const auto& row : r.rows) {
    j["results"].push_back({{"scheduler", row.scheduler},
                            {"preemption", row.preemption},
                            {"swapped", row.swapped},
                            {"clients", row.clients},
                            {"tokens", row.tokens},
                            {"seconds", row.seconds},
                            {"tokens_per_s", row.tps},
                            {"steady_tokens_per_s", row.steady_tps},
                            {"ttft_ms_p50", row.ttft_p50},
                            {"ttft_ms_p99", row.ttft_p99},
                            {"itl_ms_p50", row.itl_p50},
                            {"itl_ms_p99", row.itl_p99},
                            {"preemptions", row.preemptions}});
  }
  std::printf("%s\n", j.dump().c_str());
}

int run_bench_serve(const BenchServeFlags& f) {
  auto o = serve_options(f);
  if (!o) return report(o.status());
  auto r = bench::run_serve(*o, [&](const bench::ServeReport& p) { print_progress(f, *o, p); });
  if (!r) return report(r.status());
  print_comparisons(*o, *r);
  if (f.json) print_json(*o, *r);
  return 0;
}

}  // namespace

void register_bench_serve(CLI::App* bench, int* rc) {
  auto f = std::make_shared<BenchServeFlags>();
  bench::ServeOptions& o = f->options;
  CLI::App* cmd = bench->add_subcommand(
      "serve", "throughput and latency under concurrent load, continuous vs static batching");
  add_bench_model_flags(*cmd, f->model);
  cmd->add_option("--clients", f->clients, "concurrent clients, comma-separated")
      ->capture_default_str();
  cmd->add_option("--schedulers", f->schedulers,
                  "comma-separated: continuous, static (request-level batching: every row computes "
                  "until the batch's longest ends), static-shrink (finished rows leave)")
      ->capture_default_str();
  cmd->add_option("--requests-per-client", o.requests_per_client,
                  "requests per client: a run sends clients x this many, from one list")
      ->capture_default_str();
  cmd->add_option("--prompt-len", o.prompt_len, "prompt tokens")->capture_default_str();
  cmd->add_option("--gen-min", o.gen_min, "shortest output")->capture_default_str();
  cmd->add_option("--gen-max", o.gen_max, "longest output")->capture_default_str();
  cmd->add_option("--gen-dist", f->gen_dist,
                  "output lengths: uniform, or lognormal (long-tailed, like chat outputs)")
      ->capture_default_str()
      ->check(CLI::IsMember({"uniform", "lognormal"}));
  cmd->add_option("--temperature", o.temperature, "sampling temperature (0: greedy)")
      ->capture_default_str()
      ->check(CLI::Range(0.0f, 100.0f));
  cmd->add_option("--top-p", o.top_p, "nucleus sampling mass (1: off)")
      ->capture_default_str()
      ->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--max-batch-tokens", o.max_batch_tokens, "tokens per forward pass")
      ->capture_default_str();
  add_kv_type_flags(*cmd, f->kv_types, /*k_and_v_apart=*/false);
  cmd->add_option("--preemption", f->preemption, "recompute, swap, or both (compared)")
      ->capture_default_str();
  cmd->add_option("--kv-blocks", o.kv_blocks, "KV cache blocks (small values force preemption)");
  add_threads_option(*cmd, o.n_threads);
  cmd->add_flag("--http", o.http,
                "drive the real HTTP server on a loopback port with streaming requests "
                "(default: the engine in-process)");
  cmd->add_flag("--json", f->json, "also print the results as one JSON object");
  cmd->callback([f, rc] { *rc = run_bench_serve(*f); });
}

}  // namespace kvserve::cli
