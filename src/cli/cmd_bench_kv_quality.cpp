// kvserve bench kv-quality: perplexity, KL and top-1 agreement of KV types and policies against
// f32 KV (src/bench/kv_quality.h).
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "bench/kv_quality.h"
#include "cli/common.h"

namespace kvserve::cli {

namespace {

struct QualityFlags {
  ModelFlags model;
  std::optional<int> block_size;  // unset: per config, default_block_size() of its types
  bench::QualityOptions options;  // the rest
  bool json = false;
};

std::string policy_name(const bench::QualityConfig& c) {
  return kv_policy_name(c.policy);
}

// Text mode: the run's header once the engines exist, then a note per scored segment.
void print_progress(const bench::QualityOptions& o, const bench::QualityReport& r, int done) {
  if (done == 0) {
    std::printf(
        "model %s, text %s: %lld positions scored in %d segment(s) of <= %d tokens%s, "
        "%d threads\n",
        r.model.c_str(), std::filesystem::path(o.text_path).filename().string().c_str(),
        static_cast<long long>(r.positions), r.n_segments, r.segment, r.bos ? " (BOS first)" : "",
        r.threads);
    std::printf("reference: f32 K and V, full KV, block size %d\n", r.ref_block_size);
    std::fflush(stdout);
  } else if (r.n_segments > 1) {
    std::fprintf(stderr, "kvserve: segment %d/%d scored\n", done, r.n_segments);
  }
}

void print_json(const bench::QualityOptions& o, const bench::QualityReport& r) {
  nlohmann::json j;
  j["bench"] = "kv-quality";
  j["model"] = r.model;
  j["text"] = o.text_path;
  j["threads"] = r.threads;
  j["segment"] = r.segment;
  j["segments"] = r.n_segments;
  j["bos"] = r.bos;
  j["positions"] = r.positions;
  j["window"] = r.window;
  j["reference"] = {{"k_type", "f32"},
                    {"v_type", "f32"},
                    {"policy", "full"},
                    {"block_size", r.ref_block_size},
                    {"perplexity", r.ref_ppl}};
  j["results"] = nlohmann::json::array();
  for (const bench::QualityRow& row : r.rows) {
    const bench::QualityConfig& c = row.config;
    j["results"].push_back({{"name", c.name},
                            {"k_type", kv_type_name(c.k)},
                            {"v_type", kv_type_name(c.v)},
                            {"policy", policy_name(c)},
                            {"block_size", c.block_size},
                            {"bytes_per_token", row.bytes_per_token},
                            {"bytes_per_token_vs_f16", row.vs_f16},
                            {"peak_kv_blocks_per_seq", row.peak_blocks},
                            {"peak_kv_bytes_per_seq", row.peak_bytes},
                            {"perplexity", row.ppl},
                            {"perplexity_change_pct", row.ppl_change},
                            {"mean_kl", row.kl},
                            {"top1_agreement", row.top1},
                            {"positions", row.positions},
                            {"ms_per_token", row.ms_per_token}});
  }
  std::printf("%s\n", j.dump().c_str());
}

void print_table(const bench::QualityReport& r) {
  std::printf("reference perplexity %.4f\n", r.ref_ppl);
  std::printf("%-22s %-4s %-4s %-26s %5s %11s %6s %12s %10s %8s %10s %7s\n", "config", "K", "V",
              "policy", "block", "bytes/token", "x f16", "peak KV/seq", "perplexity", "vs f32",
              "mean KL", "top-1");
  for (const bench::QualityRow& row : r.rows) {
    const bench::QualityConfig& c = row.config;
    std::printf("%-22s %-4s %-4s %-26s %5d %11.1f %6.3f %12s %10.4f %+7.2f%% %10.3e %6.2f%%\n",
                c.name.c_str(), kv_type_name(c.k), kv_type_name(c.v), policy_name(c).c_str(),
                c.block_size, row.bytes_per_token, row.vs_f16, format_bytes(row.peak_bytes).c_str(),
                row.ppl, row.ppl_change, row.kl, 100.0 * row.top1);
  }
  std::printf(
      "bytes/token: K and V of all layers incl. scales; x f16: against f16 at block size %d; "
      "q4 configs use blocks of %d tokens (KIVI's group; q4 K is quantized per channel over a "
      "block) unless --block-size is given\n",
      kDefaultBlockSize, kQ4DefaultBlockSize);
}

int run_kv_quality(const QualityFlags& f) {
  bench::QualityOptions o = f.options;
  o.block_size = f.block_size.value_or(0);
  o.load_model = [&f] { return load_model_from_flags(f.model); };
  auto r = bench::run_kv_quality(o, [&](const bench::QualityReport& p, int done) {
    if (!f.json) print_progress(o, p, done);
  });
  if (!r) return report(r.status());
  if (f.json) {
    print_json(o, *r);
  } else {
    print_table(*r);
  }
  return 0;
}

}  // namespace

void register_bench_kv_quality(CLI::App* bench, int* rc) {
  auto f = std::make_shared<QualityFlags>();
  bench::QualityOptions& o = f->options;
  CLI::App* sub = bench->add_subcommand(
      "kv-quality", "perplexity, KL and top-1 agreement of KV types and policies vs f32 KV");
  sub->footer(
      "Each text segment is scored teacher-forced through the decode path, once with f32 K/V and\n"
      "full KV (the reference) and once per config.\n"
      "\n"
      "--configs: comma-separated configs; each is settings joined by ':'\n"
      "  TYPE        K and V type: f32, f16, bf16, q8, fp8, q4\n"
      "  k=TYPE      K type        v=TYPE      V type             (unset: f16)\n"
      "  window=W    sliding window of W positions\n"
      "  sink=S      with window: also keep the first S positions (attention sinks)\n"
      "  h2o=R       heavy-hitter eviction keeping R tokens\n"
      "  recent=N    with h2o: the newest N are always kept    (default R/4)\n"
      "  block=B     tokens per block (default: --block-size, else 32 with q4, else 16)\n"
      "  e.g. --configs f16,q8,q4,k=q8:v=q4,window=128,sink=4:window=124,q8:h2o=128\n"
      "Default: f32,f16,bf16,q8,fp8,q4,k=q8:v=q4,window=W,sink=4:window=W-4,h2o=W with\n"
      "W = --window (default segment / 4). Segments longer than the context need --ctx (the\n"
      "reference keeps every position).");
  add_model_flags(*sub, f->model);
  sub->add_option("--text", o.text_path, "text file to score (UTF-8)")
      ->required()
      ->type_name("FILE");
  sub->add_option("--configs", o.configs, "KV configs to compare (see below)");
  sub->add_option("--segment", o.segment,
                  "tokens per scored sequence, BOS included (default: min(context, 512))");
  sub->add_option("--max-tokens", o.max_tokens,
                  "score at most this many text tokens (default: all)");
  sub->add_option("--window", o.window, "W of the default policy configs (default: segment/4)");
  add_block_size_flag(*sub, f->block_size);
  sub->add_option("-c,--ctx", o.n_ctx, "context limit (default: the model's)");
  add_threads_option(*sub, o.n_threads);
  sub->add_flag("--json", f->json, "print one JSON object");
  sub->callback([f, rc] { *rc = run_kv_quality(*f); });
}

}  // namespace kvserve::cli
