// kvserve bench attention: the paged attention kernel alone (src/bench/attention.h).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench/attention.h"
#include "cli/common.h"
#include "core/cpu_features.h"

namespace kvserve::cli {

namespace {

struct BenchAttentionFlags {
  std::string seqs = "1,16";
  std::string contexts = "320";
  KvTypeFlags kv_types;
  std::optional<int> block_size;
  bench::AttentionOptions options;  // the rest
  bool json = false;
};

Result<bench::AttentionOptions> attention_options(const BenchAttentionFlags& f) {
  bench::AttentionOptions o = f.options;
  KV_ASSIGN_OR_RETURN(o.seqs, parse_positive_ints(f.seqs, "--seqs"));
  KV_ASSIGN_OR_RETURN(o.contexts, parse_positive_ints(f.contexts, "--contexts"));
  KV_ASSIGN_OR_RETURN(const KvTypes t, kv_types_from_flags(f.kv_types));
  o.kv_type = t.k;
  o.block_size = block_size_or_default(f.block_size, t);
  return o;
}

void print_progress(const BenchAttentionFlags& f, const bench::AttentionOptions& o,
                    const bench::AttentionReport& r) {
  if (r.rows.empty()) {
    std::printf(
        "shape %s: %d layers, %d heads, %d kv heads of %d; K/V %s, blocks of %d%s, %d threads\n",
        o.preset.c_str(), r.n_layer, r.n_head, r.n_head_kv, r.head_dim, f.kv_types.kv_type.c_str(),
        o.block_size, o.ordered ? " in order" : " shuffled", r.threads);
    std::printf("%6s %9s %10s %10s %10s %8s\n", "seqs", "context", "ms/step", "min ms", "K/V MB",
                "GB/s");
    return;
  }
  const bench::AttentionRow& row = r.rows.back();
  std::printf("%6d %9d %10.3f %10.3f %10.1f %8.1f\n", row.seqs, row.context, row.ms, row.min_ms,
              row.mb, row.gb_per_s);
  std::fflush(stdout);
}

void print_json(const BenchAttentionFlags& f, const bench::AttentionOptions& o,
                const bench::AttentionReport& r) {
  nlohmann::json j;
  j["bench"] = "attention";
  j["cpu"] = cpu_level_name(cpu_level());
  j["threads"] = r.threads;
  j["preset"] = o.preset;
  j["kv_type"] = f.kv_types.kv_type;
  j["mixed"] = o.mixed;
  for (const bench::AttentionRow& row : r.rows)
    j["results"].push_back({{"seqs", row.seqs},
                            {"context", row.context},
                            {"ms_per_step", row.ms},
                            {"min_ms", row.min_ms},
                            {"kv_mb", row.mb},
                            {"gb_per_s", row.gb_per_s}});
  std::printf("%s\n", j.dump().c_str());
}

int run_attention(const BenchAttentionFlags& f) {
  auto o = attention_options(f);
  if (!o) return report(o.status());
  auto r = bench::run_attention(
      *o, [&](const bench::AttentionReport& progress) { print_progress(f, *o, progress); });
  if (!r) return report(r.status());
  if (f.json) print_json(f, *o, *r);
  return 0;
}

}  // namespace

void register_bench_attention(CLI::App* bench, int* rc) {
  auto f = std::make_shared<BenchAttentionFlags>();
  bench::AttentionOptions& o = f->options;
  CLI::App* cmd = bench->add_subcommand(
      "attention", "paged attention alone: one decode query per sequence, every layer");
  cmd->add_option("--preset", o.preset, "synth preset whose shape to use")->capture_default_str();
  cmd->add_option("--seqs", f->seqs, "sequences per step, comma-separated")->capture_default_str();
  cmd->add_option("--contexts", f->contexts, "tokens of context per sequence, comma-separated")
      ->capture_default_str();
  cmd->add_flag("--mixed", o.mixed,
                "contexts spread over [8, 2 x context], longest first (as admitted)");
  add_kv_type_flags(*cmd, f->kv_types, /*k_and_v_apart=*/false);
  add_block_size_flag(*cmd, f->block_size);
  cmd->add_flag("--ordered", o.ordered, "blocks of a sequence adjacent and in order");
  add_threads_option(*cmd, o.n_threads);
  cmd->add_option("--repeat", o.repeat, "timed steps per point (the median is reported)")
      ->capture_default_str();
  cmd->add_flag("--json", f->json, "also print the results as one JSON object");
  cmd->callback([f, rc] { *rc = run_attention(*f); });
}

}  // namespace kvserve::cli
