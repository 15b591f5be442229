// kvserve bench batch: the forward pass alone, B sequences decoding in lockstep (one token each
// per step, as a full continuous batch does), for several B. No scheduler, sampler or server:
// the step time of the engine itself, and the aggregate tokens/s against B = 1. Each sequence
// first prefills --context random tokens; then --steps decode steps are timed (after --warmup
// untimed ones), so the contexts grow from --context to --context + warmup + steps. --ops also
// times each op of the timed steps (engine/op_times.h): where a step's time goes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "engine/batch.h"
#include "engine/generator.h"
#include "engine/model_runner.h"
#include "engine/op_times.h"
#include "engine/sampler.h"

namespace kvserve::cli {

namespace {

struct BenchBatchFlags {
  BenchModelFlags model;
  std::string batches = "1,4,16";
  int context = 32;
  int steps = 40;
  int warmup = 5;
  std::string kv_type = "f16";
  int n_threads = 0;
  bool json = false;
  bool ops = false;
};

struct BatchRow {
  int batch;
  double step_ms;
  double tokens_per_s;
  OpTimes ops;  // the timed steps' ops (with --ops)
};

Result<BatchRow> measure_batch(const Model& m, const BenchBatchFlags& f, KvType kv_type, int b) {
  const int n_ctx = f.context + f.warmup + f.steps + 1;
  EngineOptions eo;
  eo.kv_type_k = eo.kv_type_v = kv_type;
  eo.n_threads = f.n_threads;
  eo.n_ctx = n_ctx;
  eo.prefix_cache = false;
  eo.kv_blocks = b * ((n_ctx + eo.block_size - 1) / eo.block_size + 1);
  KV_ASSIGN_OR_RETURN(auto kv, make_kv_cache(m, eo, n_ctx, b));
  ThreadPool pool(f.n_threads);
  ModelRunner runner(m, kv->storage(), pool);
  // tokens[s]: a random prompt, then the greedy tokens as they come.
  std::vector<std::vector<int32_t>> tokens(b);
  Rng rng(4242);
  std::vector<float> logits;
  const size_t n_vocab = m.config.n_vocab;
  for (int s = 0; s < b; ++s) {
    for (int i = 0; i < f.context; ++i)
      tokens[s].push_back(3 + static_cast<int32_t>(rng.next() % (m.config.n_vocab - 3)));
    KV_RETURN_IF_ERROR(kv->add_sequence(s));
    KV_RETURN_IF_ERROR(kv->reserve(s, f.context));
    Batch one;
    one.add(&kv->table(s), 0, tokens[s].data(), f.context);
    runner.forward(one, logits);
    kv->commit(s, f.context);
    tokens[s].push_back(argmax(logits.data(), static_cast<int>(n_vocab)));
  }
  double timed_ms = 0;
  OpTimes ops;
  for (int step = 0; step < f.warmup + f.steps; ++step) {
    runner.set_op_times(f.ops && step >= f.warmup ? &ops : nullptr);
    Batch batch;
    for (int s = 0; s < b; ++s) {
      const int pos = static_cast<int>(tokens[s].size()) - 1;
      KV_RETURN_IF_ERROR(kv->reserve(s, pos + 1));
      batch.add(&kv->table(s), pos, tokens[s].data() + pos, 1);
    }
    const auto t0 = std::chrono::steady_clock::now();
    runner.forward(batch, logits);
    const auto t1 = std::chrono::steady_clock::now();
    if (step >= f.warmup) timed_ms += std::chrono::duration<double, std::milli>(t1 - t0).count();
    for (int s = 0; s < b; ++s) {
      kv->commit(s, static_cast<int>(tokens[s].size()));
      tokens[s].push_back(argmax(logits.data() + s * n_vocab, static_cast<int>(n_vocab)));
    }
  }
  BatchRow r;
  r.batch = b;
  r.step_ms = timed_ms / f.steps;
  r.tokens_per_s = b * 1000.0 / r.step_ms;
  r.ops = ops;
  return r;
}

// Column o of the op table: an op's name, or "other" for o == kNumOps (see op_ms).
const char* op_label(int o) {
  return o < kNumOps ? op_name(static_cast<Op>(o)) : "other";
}

// Op o's ms per timed step; o == kNumOps: the step's time outside every op.
double op_ms(const BatchRow& r, int o) {
  if (r.ops.forwards == 0) return 0;
  double sum = 0;
  for (double s : r.ops.seconds) sum += s;
  const double s =
      o < kNumOps ? r.ops.seconds[o] : std::max(0.0, r.step_ms / 1000 * r.ops.forwards - sum);
  return s * 1000 / r.ops.forwards;
}

int run_batch(const BenchBatchFlags& f) {
  auto batches = parse_positive_ints(f.batches, "--batch");
  if (!batches) return report(batches.status());
  if (f.context < 1 || f.steps < 1 || f.warmup < 0)
    return report(invalid_argument("need --context >= 1, --steps >= 1, --warmup >= 0"));
  auto kv_type = parse_kv_type_flag("--kv-type", f.kv_type);
  if (!kv_type) return report(kv_type.status());
  auto path = bench_model_path(f.model);
  if (!path) return report(path.status());
  LoadOptions lo;
  lo.tokenizer_path = f.model.tokenizer_path;
  auto m = load_model(*path, lo);
  if (!m) return report(m.status());
  const std::string name = std::filesystem::path(*path).filename().string();
  std::printf("model %s, context %d..%d tokens, %d timed steps\n", name.c_str(), f.context,
              f.context + f.warmup + f.steps, f.steps);
  std::printf("%7s %10s %12s %10s\n", "batch", "step ms", "tokens/s", "vs 1");
  std::vector<BatchRow> rows;
  for (int b : *batches) {
    auto r = measure_batch(**m, f, *kv_type, b);
    if (!r) return report(r.status());
    rows.push_back(*r);
    const auto one = std::find_if(rows.begin(), rows.end(), [](auto& x) { return x.batch == 1; });
    if (one != rows.end())
      std::printf("%7d %10.2f %12.1f %9.2fx\n", b, r->step_ms, r->tokens_per_s,
                  r->tokens_per_s / one->tokens_per_s);
    else
      std::printf("%7d %10.2f %12.1f %10s\n", b, r->step_ms, r->tokens_per_s, "-");
    std::fflush(stdout);
  }
  if (f.ops) {
    // ms per step of each op, one column per batch size; "other" is the step's remainder
    // (each layer's set-up, the embedding lookup).
    std::printf("\nms per step by op\n%10s", "op");
    for (const BatchRow& r : rows) std::printf(" %9s", ("B=" + std::to_string(r.batch)).c_str());
    std::printf("\n");
    for (int o = 0; o <= kNumOps; ++o) {
      std::printf("%10s", op_label(o));
      for (const BatchRow& r : rows) std::printf(" %9.3f", op_ms(r, o));
      std::printf("\n");
    }
  }
  if (f.json) {
    nlohmann::json j;
    j["bench"] = "batch";
    j["cpu"] = cpu_level_name(cpu_level());
    j["model"] = name;
    j["context"] = f.context;
    j["steps"] = f.steps;
    for (const BatchRow& r : rows) {
      nlohmann::json row = {
          {"batch", r.batch}, {"step_ms", r.step_ms}, {"tokens_per_s", r.tokens_per_s}};
      if (f.ops) {
        for (int o = 0; o <= kNumOps; ++o) row["ops_ms"][op_label(o)] = op_ms(r, o);
      }
      j["results"].push_back(row);
    }
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace

void register_bench_batch(CLI::App* bench, int* rc) {
  auto f = std::make_shared<BenchBatchFlags>();
  CLI::App* cmd = bench->add_subcommand(
      "batch", "decode step time with B sequences in lockstep (the forward pass alone)");
  add_bench_model_flags(*cmd, f->model);
  cmd->add_option("--batch", f->batches, "sequences per step, comma-separated")
      ->capture_default_str();
  cmd->add_option("--context", f->context, "prompt tokens per sequence")->capture_default_str();
  cmd->add_option("--steps", f->steps, "timed decode steps")->capture_default_str();
  cmd->add_option("--warmup", f->warmup, "untimed decode steps first")->capture_default_str();
  cmd->add_option("--kv-type", f->kv_type, "KV element type")->capture_default_str();
  add_threads_option(*cmd, f->n_threads);
  cmd->add_flag("--ops", f->ops, "also time each op of the forward pass (ms per step)");
  cmd->add_flag("--json", f->json, "also print the results as one JSON object");
  cmd->callback([f, rc] { *rc = run_batch(*f); });
}

}  // namespace kvserve::cli
