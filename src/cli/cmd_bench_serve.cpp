// kvserve bench serve: the batching engine under concurrent load, driven in-process (no HTTP):
// output tokens/s, time to first token and inter-token latency (p50/p99) at several client
// counts, continuous batching against the static baseline in the same run. Output lengths are
// mixed (uniform in [--gen-min, --gen-max], the same draws for both schedulers).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cli/common.h"
#include "core/cpu_features.h"
#include "engine/engine_loop.h"
#include "model/synth.h"

namespace kvserve::cli {

namespace {

struct BenchServeFlags {
  ModelFlags model;
  std::string preset = "smollm-135m";
  std::string dtype = "q8_0";
  std::string clients = "1,4,16,64";
  std::string schedulers = "continuous,static";
  int requests_per_client = 2;
  int prompt_len = 64;
  int gen_min = 16, gen_max = 128;
  int max_batch_tokens = 512;
  int n_threads = 0;
  std::string kv_type = "f16";
  std::string preemption = "recompute";  // recompute, swap or both: compared in one run
  int kv_blocks = 0;                     // > 0: a cache this small (forces preemption)
  bool json = false;
};

struct RunResult {
  std::string scheduler;
  std::string preemption;
  int clients = 0;
  int64_t tokens = 0;
  double seconds = 0, tps = 0;
  double ttft_p50 = 0, ttft_p99 = 0, itl_p50 = 0, itl_p99 = 0;  // ms
  int64_t preemptions = 0, swapped = 0;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

Result<std::string> bench_model_path(const BenchServeFlags& f) {
  if (!f.model.model_path.empty()) return f.model.model_path;
  auto dt = dtype_from_name(f.dtype);
  if (!dt) return invalid_argument("bad --dtype '" + f.dtype + "'");
  KV_ASSIGN_OR_RETURN(std::string dir, cache_dir());
  const std::string path = dir + "/synth-" + f.preset + "-" + dtype_name(*dt) + "-s0.gguf";
  if (std::filesystem::exists(path)) return path;
  std::fprintf(stderr, "kvserve bench: writing synth model %s\n", path.c_str());
  SynthOptions so;
  so.preset = f.preset;
  so.dtype = *dt;
  so.out_path = path + ".tmp";
  KV_RETURN_IF_ERROR(write_synth_model(so));
  std::error_code ec;
  std::filesystem::rename(so.out_path, path, ec);
  if (ec) return io_error("cannot rename " + so.out_path + ": " + ec.message());
  return path;
}

Result<RunResult> run_load(const Model& m, const BenchServeFlags& f, SchedulerKind kind,
                           int n_clients, KvType kv_type, PreemptionMode preemption) {
  EngineLoopOptions o;
  o.engine.kv_type_k = o.engine.kv_type_v = kv_type;
  o.engine.n_threads = f.n_threads;
  o.engine.n_ctx = f.prompt_len + f.gen_max + 8;
  o.engine.kv_blocks =
      f.kv_blocks > 0 ? f.kv_blocks : blocks_for_tokens(o.engine.n_ctx, 16) * n_clients + 8;
  o.sched.preemption = preemption;
  o.sched.kind = kind;
  o.sched.max_seqs = n_clients;
  o.sched.max_batch_tokens = f.max_batch_tokens;
  o.max_queue = n_clients * f.requests_per_client;
  KV_ASSIGN_OR_RETURN(auto engine, EngineLoop::create(m, o));

  std::mutex mu;
  std::vector<double> ttft, itl;
  std::atomic<int64_t> n_tokens{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < n_clients; ++c) {
    threads.emplace_back([&, c] {
      Rng rng(1000 + c);  // same prompts and lengths for every scheduler
      std::vector<double> my_ttft, my_itl;
      for (int r = 0; r < f.requests_per_client; ++r) {
        auto req = std::make_shared<Request>();
        SeqSpec s;
        for (int i = 0; i < f.prompt_len; ++i) {
          s.prompt.push_back(3 + static_cast<int32_t>(rng.next() % (m.config.n_vocab - 3)));
        }
        s.max_tokens = f.gen_min + static_cast<int>(rng.next() % (f.gen_max - f.gen_min + 1));
        s.ignore_eos = true;
        req->seqs.push_back(s);
        const auto start = Clock::now();
        if (!engine->submit(req).is_ok()) continue;
        auto last = start;
        bool first = true, done = false;
        while (!done) {
          for (const SeqEvent& e : req->channel->wait(std::chrono::milliseconds(100))) {
            const auto now = Clock::now();
            if (!e.tokens.empty()) {
              const double ms = std::chrono::duration<double, std::milli>(now - last).count();
              (first ? my_ttft : my_itl).push_back(ms);
              first = false;
              last = now;
              n_tokens += static_cast<int64_t>(e.tokens.size());
            }
            done |= e.finished;
          }
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      ttft.insert(ttft.end(), my_ttft.begin(), my_ttft.end());
      itl.insert(itl.end(), my_itl.begin(), my_itl.end());
    });
  }
  for (auto& t : threads) t.join();
  RunResult r;
  r.scheduler = kind == SchedulerKind::kStatic ? "static" : "continuous";
  r.preemption = preemption == PreemptionMode::kSwap ? "swap" : "recompute";
  r.clients = n_clients;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.tokens = n_tokens.load();
  r.tps = r.tokens / r.seconds;
  r.ttft_p50 = percentile(ttft, 0.5);
  r.ttft_p99 = percentile(ttft, 0.99);
  r.itl_p50 = percentile(itl, 0.5);
  r.itl_p99 = percentile(itl, 0.99);
  r.preemptions = engine->stats().preemptions_total.load();
  r.swapped = engine->stats().swapped_out_total.load();
  return r;
}

int run_bench_serve(const BenchServeFlags& f) {
  auto parsed = parse_positive_ints(f.clients, "--clients");
  if (!parsed) return report(parsed.status());
  const std::vector<int> clients = *parsed;
  if (f.gen_min < 1 || f.gen_max < f.gen_min || f.prompt_len < 1 || f.requests_per_client < 1) {
    return report(
        invalid_argument("need 1 <= --gen-min <= --gen-max, --prompt-len >= 1, "
                         "--requests-per-client >= 1"));
  }
  auto kv_type = kv_type_from_name(f.kv_type);
  if (!kv_type)
    return report(invalid_argument("bad --kv-type '" + f.kv_type + "' (" + kv_type_list() + ")"));
  auto path = bench_model_path(f);
  if (!path) return report(path.status());
  LoadOptions lo;
  lo.tokenizer_path = f.model.tokenizer_path;
  auto m = load_model(*path, lo);
  if (!m) return report(m.status());

  std::vector<SchedulerKind> kinds;
  if (f.schedulers.find("continuous") != std::string::npos)
    kinds.push_back(SchedulerKind::kContinuous);
  if (f.schedulers.find("static") != std::string::npos) kinds.push_back(SchedulerKind::kStatic);
  std::printf("model %s, prompt %d tokens, output %d..%d tokens, %d requests per client\n",
              std::filesystem::path(*path).filename().c_str(), f.prompt_len, f.gen_min, f.gen_max,
              f.requests_per_client);
  std::vector<PreemptionMode> modes;
  if (f.preemption.find("recompute") != std::string::npos)
    modes.push_back(PreemptionMode::kRecompute);
  if (f.preemption.find("swap") != std::string::npos) modes.push_back(PreemptionMode::kSwap);
  if (modes.empty())
    return report(invalid_argument("--preemption must list recompute and/or swap"));
  std::printf("%-11s %-9s %7s %9s %11s %10s %10s %9s %9s %7s %7s\n", "scheduler", "preempt",
              "clients", "tokens", "tokens/s", "ttft p50", "ttft p99", "itl p50", "itl p99",
              "preempt", "swapped");
  std::vector<RunResult> rows;
  for (PreemptionMode mode : modes) {
    for (SchedulerKind k : kinds) {
      for (int c : clients) {
        auto r = run_load(**m, f, k, c, *kv_type, mode);
        if (!r) return report(r.status());
        rows.push_back(*r);
        std::printf("%-11s %-9s %7d %9lld %11.1f %8.1fms %8.1fms %7.1fms %7.1fms %7lld %7lld\n",
                    r->scheduler.c_str(), r->preemption.c_str(), c,
                    static_cast<long long>(r->tokens), r->tps, r->ttft_p50, r->ttft_p99, r->itl_p50,
                    r->itl_p99, static_cast<long long>(r->preemptions),
                    static_cast<long long>(r->swapped));
        std::fflush(stdout);
      }
    }
  }
  auto find = [&](const std::string& s, int c, const char* mode = nullptr) -> const RunResult* {
    for (const auto& r : rows) {
      if (r.scheduler == s && r.clients == c && (!mode || r.preemption == mode)) return &r;
    }
    return nullptr;
  };
  const RunResult* one = find("continuous", 1);
  for (int c : clients) {
    const RunResult* cont = find("continuous", c);
    const RunResult* stat = find("static", c);
    if (cont && one && c > 1) {
      std::printf("continuous, %d clients vs 1: %.2fx tokens/s\n", c, cont->tps / one->tps);
    }
    if (cont && stat) {
      std::printf("continuous vs static, %d clients: %.2fx tokens/s\n", c, cont->tps / stat->tps);
    }
    const RunResult* swap = find("continuous", c, "swap");
    const RunResult* recompute = find("continuous", c, "recompute");
    if (swap && recompute) {
      std::printf("swap vs recompute preemption, %d clients: %.2fx tokens/s\n", c,
                  swap->tps / recompute->tps);
    }
  }
  if (f.json) {
    nlohmann::json j;
    j["bench"] = "serve";
    j["cpu"] = cpu_level_name(cpu_level());
    j["model"] = std::filesystem::path(*path).filename().string();
    for (const auto& r : rows) {
      j["results"].push_back({{"scheduler", r.scheduler},
                              {"preemption", r.preemption},
                              {"swapped", r.swapped},
                              {"clients", r.clients},
                              {"tokens", r.tokens},
                              {"seconds", r.seconds},
                              {"tokens_per_s", r.tps},
                              {"ttft_ms_p50", r.ttft_p50},
                              {"ttft_ms_p99", r.ttft_p99},
                              {"itl_ms_p50", r.itl_p50},
                              {"itl_ms_p99", r.itl_p99},
                              {"preemptions", r.preemptions}});
    }
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace

void register_bench_serve(CLI::App* bench, int* rc) {
  auto f = std::make_shared<BenchServeFlags>();
  CLI::App* cmd = bench->add_subcommand(
      "serve", "throughput and latency under concurrent load, continuous vs static batching");
  add_model_flags(*cmd, f->model);
  cmd->add_option("--preset", f->preset, "synth preset (when no -m)")->capture_default_str();
  cmd->add_option("--dtype", f->dtype, "synth weight type")->capture_default_str();
  cmd->add_option("--clients", f->clients, "concurrent clients, comma-separated")
      ->capture_default_str();
  cmd->add_option("--schedulers", f->schedulers, "continuous, static or both")
      ->capture_default_str();
  cmd->add_option("--requests-per-client", f->requests_per_client, "requests each client sends")
      ->capture_default_str();
  cmd->add_option("--prompt-len", f->prompt_len, "prompt tokens")->capture_default_str();
  cmd->add_option("--gen-min", f->gen_min, "shortest output")->capture_default_str();
  cmd->add_option("--gen-max", f->gen_max, "longest output")->capture_default_str();
  cmd->add_option("--max-batch-tokens", f->max_batch_tokens, "tokens per forward pass")
      ->capture_default_str();
  cmd->add_option("--kv-type", f->kv_type, "KV element type")->capture_default_str();
  cmd->add_option("--preemption", f->preemption, "recompute, swap, or both (compared)")
      ->capture_default_str();
  cmd->add_option("--kv-blocks", f->kv_blocks, "KV cache blocks (small values force preemption)");
  cmd->add_option("-t,--threads", f->n_threads, "threads (default: one per core)");
  cmd->add_flag("--json", f->json, "also print the results as one JSON object");
  cmd->callback([f, rc] { *rc = run_bench_serve(*f); });
}

}  // namespace kvserve::cli
