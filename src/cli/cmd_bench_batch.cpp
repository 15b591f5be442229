// kvserve bench batch: decode step time with B sequences in lockstep, the forward pass alone
// (src/bench/batch.h); --ops adds a table of each op's ms per step.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench/batch.h"
#include "cli/common.h"
#include "core/cpu_features.h"

namespace kvserve::cli {

namespace {

struct BenchBatchFlags {
  BenchModelFlags model;
  std::string batches = "1,4,16";
  KvTypeFlags kv_types;
  bench::BatchOptions options;  // the rest
  bool json = false;
};

void print_progress(const bench::BatchOptions& o, const bench::BatchReport& r) {
  if (r.rows.empty()) {
    std::printf("model %s, context %d..%d tokens, %d timed steps\n", r.model.c_str(), o.context,
                o.context + o.warmup + o.steps, o.steps);
    std::printf("%7s %10s %12s %10s\n", "batch", "step ms", "tokens/s", "vs 1");
    return;
  }
  const bench::BatchRow& row = r.rows.back();
  const auto one = std::find_if(r.rows.begin(), r.rows.end(), [](auto& x) { return x.batch == 1; });
  if (one != r.rows.end())
    std::printf("%7d %10.2f %12.1f %9.2fx\n", row.batch, row.step_ms, row.tokens_per_s,
                row.tokens_per_s / one->tokens_per_s);
  else
    std::printf("%7d %10.2f %12.1f %10s\n", row.batch, row.step_ms, row.tokens_per_s, "-");
  std::fflush(stdout);
}

// ms per step of each op, one column per batch size; "other" is the step's remainder (each
// layer's set-up, the embedding lookup).
void print_ops(const bench::BatchReport& r) {
  std::printf("\nms per step by op\n%10s", "op");
  for (const bench::BatchRow& row : r.rows)
    std::printf(" %9s", ("B=" + std::to_string(row.batch)).c_str());
  std::printf("\n");
  for (int o = 0; o <= kNumOps; ++o) {
    std::printf("%10s", bench::op_label(o));
    for (const bench::BatchRow& row : r.rows) std::printf(" %9.3f", bench::op_ms(row, o));
    std::printf("\n");
  }
}

void print_json(const bench::BatchOptions& o, const bench::BatchReport& r) {
  nlohmann::json j;
  j["bench"] = "batch";
  j["cpu"] = cpu_level_name(cpu_level());
  j["model"] = r.model;
  j["context"] = o.context;
  j["steps"] = o.steps;
  for (const bench::BatchRow& row : r.rows) {
    nlohmann::json jr = {
        {"batch", row.batch}, {"step_ms", row.step_ms}, {"tokens_per_s", row.tokens_per_s}};
    if (o.ops) {
      for (int op = 0; op <= kNumOps; ++op)
        jr["ops_ms"][bench::op_label(op)] = bench::op_ms(row, op);
    }
    j["results"].push_back(jr);
  }
  std::printf("%s\n", j.dump().c_str());
}

int run_batch(const BenchBatchFlags& f) {
  bench::BatchOptions o = f.options;
  auto batches = parse_positive_ints(f.batches, "--batch");
  if (!batches) return report(batches.status());
  o.batches = *batches;
  if (Status st = bench::check_batch_options(o); !st.is_ok()) return report(st);
  auto t = kv_types_from_flags(f.kv_types);
  if (!t) return report(t.status());
  o.kv_type = t->k;
  o.load_model = bench_model_loader(f.model);
  auto r = bench::run_batch(o, [&](const bench::BatchReport& p) { print_progress(o, p); });
  if (!r) return report(r.status());
  if (o.ops) print_ops(*r);
  if (f.json) print_json(o, *r);
  return 0;
}

}  // namespace

void register_bench_batch(CLI::App* bench, int* rc) {
  auto f = std::make_shared<BenchBatchFlags>();
  bench::BatchOptions& o = f->options;
  CLI::App* cmd = bench->add_subcommand(
      "batch", "decode step time with B sequences in lockstep (the forward pass alone)");
  add_bench_model_flags(*cmd, f->model);
  cmd->add_option("--batch", f->batches, "sequences per step, comma-separated")
      ->capture_default_str();
  cmd->add_option("--context", o.context, "prompt tokens per sequence")->capture_default_str();
  cmd->add_option("--steps", o.steps, "timed decode steps")->capture_default_str();
  cmd->add_option("--warmup", o.warmup, "untimed decode steps first")->capture_default_str();
  add_kv_type_flags(*cmd, f->kv_types, /*k_and_v_apart=*/false);
  add_threads_option(*cmd, o.n_threads);
  cmd->add_flag("--ops", o.ops, "also time each op of the forward pass (ms per step)");
  cmd->add_flag("--json", f->json, "also print the results as one JSON object");
  cmd->callback([f, rc] { *rc = run_batch(*f); });
}

}  // namespace kvserve::cli
