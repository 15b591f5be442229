// kvserve bench attention: the paged attention kernel alone, outside the model: one decode query
// per sequence over every layer of a preset's shape, K/V in blocks at shuffled places as a
// long-running cache leaves them. Reports the time per step (all layers) and the K/V bytes read
// per second, so a change to attention can be measured without the matmuls around it, and its
// rate compared with the machine's read bandwidth (`bench decode` measures that).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cli/common.h"
#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "engine/generator.h"
#include "kernels/attention.h"
#include "kv/block_table.h"
#include "kv/kv_storage.h"
#include "model/synth.h"

namespace kvserve::cli {

namespace {

struct BenchAttentionFlags {
  std::string preset = "smollm-135m";  // the shape: layers, heads, kv heads, head size
  std::string seqs = "1,16";           // sequences per step
  std::string contexts = "320";        // tokens of context per sequence
  bool mixed = false;                  // contexts spread over [8, 2 * context], longest first
  std::string kv_type = "f16";
  int block_size = 16;
  bool ordered = false;  // each sequence's blocks adjacent and in order
  int n_threads = 0;
  int repeat = 20;
  bool json = false;
};

struct AttentionRow {
  int seqs;
  int context;      // the mean
  double ms;        // median step (every layer)
  double min_ms;    // fastest step
  double mb;        // K/V bytes read per step
  double gb_per_s;  // mb / ms
};

// The contexts of n sequences: all `ctx`, or (mixed) spread evenly over [8, 2 * ctx], longest
// first: a serving batch keeps its sequences in the order they were admitted, so the oldest,
// with the longest contexts, come first.
std::vector<int> contexts_of(int n, int ctx, bool mixed) {
  std::vector<int> c(n, ctx);
  if (!mixed) return c;
  for (int s = 0; s < n; ++s) c[s] = std::max(8, 2 * ctx * (n - s) / (n + 1));
  return c;
}

Result<AttentionRow> measure(const ModelConfig& cfg, const BenchAttentionFlags& f, KvType type,
                             int n_seq, int ctx, ThreadPool& pool) {
  std::mt19937 rng(1);
  const std::vector<int> ctxs = contexts_of(n_seq, ctx, f.mixed);
  EngineOptions eo;
  eo.block_size = f.block_size;
  eo.kv_type_k = eo.kv_type_v = type;
  const KvLayout L = kv_layout_for(cfg, eo);
  const int bs = f.block_size;
  std::vector<int> n_blocks(n_seq);
  for (int s = 0; s < n_seq; ++s) n_blocks[s] = blocks_for_tokens(ctxs[s], bs);
  const int total = std::accumulate(n_blocks.begin(), n_blocks.end(), 0);
  KV_ASSIGN_OR_RETURN(auto kv, KvStorage::create(L, total, KvCommit::kAtStart));
  std::vector<BlockId> ids(total);
  std::iota(ids.begin(), ids.end(), 0);
  if (!f.ordered) std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<BlockTable> tables(n_seq);
  std::normal_distribution<float> nd;
  std::vector<float> k(static_cast<size_t>(cfg.kv_dim())), v(k.size());
  for (int s = 0, next = 0; s < n_seq; ++s) {
    for (int b = 0; b < n_blocks[s]; ++b) tables[s].blocks.push_back(ids[next++]);
    tables[s].n_tokens = ctxs[s];
    for (int l = 0; l < cfg.n_layer; ++l) {
      for (int p = 0; p < ctxs[s]; ++p) {
        for (float& x : k) x = nd(rng);
        for (float& x : v) x = nd(rng);
        kv->write_token(l, tables[s].blocks[p / bs], p % bs, k.data(), v.data());
      }
    }
  }
  std::vector<kernels::AttentionSeq> seqs;
  for (int s = 0; s < n_seq; ++s) seqs.push_back({&tables[s], ctxs[s] - 1, 1, s});
  // q, out: [n_seq][n_head][head_dim]
  std::vector<float> q(static_cast<size_t>(n_seq) * cfg.q_dim()), out(q.size());
  for (float& x : q) x = nd(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(cfg.head_dim));
  auto step = [&] {
    for (int l = 0; l < cfg.n_layer; ++l)
      kernels::attention_paged(q.data(), nullptr, seqs, *kv, l, cfg.n_head, scale, {}, out.data(),
                               pool);
  };
  step();  // warm up
  std::vector<double> ms;
  for (int r = 0; r < f.repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  double bytes = 0;
  for (int c : ctxs) bytes += c * L.bytes_per_token();
  AttentionRow row;
  row.seqs = n_seq;
  row.context = static_cast<int>(std::accumulate(ctxs.begin(), ctxs.end(), 0LL) / n_seq);
  row.ms = ms[ms.size() / 2];
  row.min_ms = ms.front();
  row.mb = bytes / 1e6;
  row.gb_per_s = bytes / 1e6 / row.ms;
  return row;
}

int run_attention(const BenchAttentionFlags& f) {
  auto seq_counts = parse_positive_ints(f.seqs, "--seqs");
  if (!seq_counts) return report(seq_counts.status());
  auto contexts = parse_positive_ints(f.contexts, "--contexts");
  if (!contexts) return report(contexts.status());
  if (f.block_size < 1 || f.repeat < 1)
    return report(invalid_argument("need --block-size >= 1 and --repeat >= 1"));
  auto type = parse_kv_type_flag("--kv-type", f.kv_type);
  if (!type) return report(type.status());
  auto cfg = synth_preset(f.preset);
  if (!cfg) return report(cfg.status());
  ThreadPool pool(f.n_threads);
  std::printf(
      "shape %s: %d layers, %d heads, %d kv heads of %d; K/V %s, blocks of %d%s, %d threads\n",
      f.preset.c_str(), cfg->n_layer, cfg->n_head, cfg->n_head_kv, cfg->head_dim, f.kv_type.c_str(),
      f.block_size, f.ordered ? " in order" : " shuffled", pool.n_threads());
  std::printf("%6s %9s %10s %10s %10s %8s\n", "seqs", "context", "ms/step", "min ms", "K/V MB",
              "GB/s");
  std::vector<AttentionRow> rows;
  for (int ctx : *contexts) {
    for (int n : *seq_counts) {
      auto r = measure(*cfg, f, *type, n, ctx, pool);
      if (!r) return report(r.status());
      std::printf("%6d %9d %10.3f %10.3f %10.1f %8.1f\n", r->seqs, r->context, r->ms, r->min_ms,
                  r->mb, r->gb_per_s);
      std::fflush(stdout);
      rows.push_back(*r);
    }
  }
  if (f.json) {
    nlohmann::json j;
    j["bench"] = "attention";
    j["cpu"] = cpu_level_name(cpu_level());
    j["threads"] = pool.n_threads();
    j["preset"] = f.preset;
    j["kv_type"] = f.kv_type;
    j["mixed"] = f.mixed;
    for (const AttentionRow& r : rows)
      j["results"].push_back({{"seqs", r.seqs},
                              {"context", r.context},
                              {"ms_per_step", r.ms},
                              {"min_ms", r.min_ms},
                              {"kv_mb", r.mb},
                              {"gb_per_s", r.gb_per_s}});
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace

void register_bench_attention(CLI::App* bench, int* rc) {
  auto f = std::make_shared<BenchAttentionFlags>();
  CLI::App* cmd = bench->add_subcommand(
      "attention", "paged attention alone: one decode query per sequence, every layer");
  cmd->add_option("--preset", f->preset, "synth preset whose shape to use")->capture_default_str();
  cmd->add_option("--seqs", f->seqs, "sequences per step, comma-separated")->capture_default_str();
  cmd->add_option("--contexts", f->contexts, "tokens of context per sequence, comma-separated")
      ->capture_default_str();
  cmd->add_flag("--mixed", f->mixed,
                "contexts spread over [8, 2 x context], longest first (as admitted)");
  cmd->add_option("--kv-type", f->kv_type, "KV element type")->capture_default_str();
  cmd->add_option("--block-size", f->block_size, "tokens per block")->capture_default_str();
  cmd->add_flag("--ordered", f->ordered, "blocks of a sequence adjacent and in order");
  add_threads_option(*cmd, f->n_threads);
  cmd->add_option("--repeat", f->repeat, "timed steps per point (the median is reported)")
      ->capture_default_str();
  cmd->add_flag("--json", f->json, "also print the results as one JSON object");
  cmd->callback([f, rc] { *rc = run_attention(*f); });
}

}  // namespace kvserve::cli
