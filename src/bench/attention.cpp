#include "bench/attention.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "core/thread_pool.h"
#include "engine/generator.h"
#include "kernels/attention.h"
#include "kv/block_table.h"
#include "kv/kv_storage.h"
#include "model/synth.h"

namespace kvserve::bench {

namespace {

// K/V of n sequences with contexts ctxs, random normal values, in blocks at shuffled places
// (or in order); tables[s] maps sequence s.
Result<std::unique_ptr<KvStorage>> fill_kv(const ModelConfig& cfg, const KvLayout& L,
                                           const std::vector<int>& ctxs, bool ordered,
                                           std::mt19937& rng, std::vector<BlockTable>& tables) {
  const int n_seq = static_cast<int>(ctxs.size()), bs = L.block_size;
  std::vector<int> n_blocks(n_seq);
  for (int s = 0; s < n_seq; ++s) n_blocks[s] = blocks_for_tokens(ctxs[s], bs);
  const int total = std::accumulate(n_blocks.begin(), n_blocks.end(), 0);
  KV_ASSIGN_OR_RETURN(auto kv, KvStorage::create(L, total, KvCommit::kAtStart));
  std::vector<BlockId> ids(total);
  std::iota(ids.begin(), ids.end(), 0);
  if (!ordered) std::shuffle(ids.begin(), ids.end(), rng);
  tables.assign(n_seq, {});
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
  return kv;
}

Result<AttentionRow> measure(const ModelConfig& cfg, const AttentionOptions& o, int n_seq, int ctx,
                             ThreadPool& pool) {
  std::mt19937 rng(1);
  const std::vector<int> ctxs = contexts_of(n_seq, ctx, o.mixed);
  EngineOptions eo;
  eo.block_size = o.block_size;
  eo.kv_type_k = eo.kv_type_v = o.kv_type;
  const KvLayout L = kv_layout_for(cfg, eo);
  std::vector<BlockTable> tables;
  KV_ASSIGN_OR_RETURN(auto kv, fill_kv(cfg, L, ctxs, o.ordered, rng, tables));
  std::vector<kernels::AttentionSeq> seqs;
  for (int s = 0; s < n_seq; ++s) seqs.push_back({&tables[s], ctxs[s] - 1, 1, s});
  // q, out: [n_seq][n_head][head_dim]
  std::normal_distribution<float> nd;
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
  for (int r = 0; r < o.repeat; ++r) {
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

}  // namespace

std::vector<int> contexts_of(int n, int ctx, bool mixed) {
  std::vector<int> c(n, ctx);
  if (!mixed) return c;
  for (int s = 0; s < n; ++s) c[s] = std::max(8, 2 * ctx * (n - s) / (n + 1));
  return c;
}

Result<AttentionReport> run_attention(const AttentionOptions& o,
                                      const AttentionProgress& progress) {
  if (o.block_size < 1 || o.repeat < 1)
    return invalid_argument("need --block-size >= 1 and --repeat >= 1");
  KV_ASSIGN_OR_RETURN(const ModelConfig cfg, synth_preset(o.preset));
  ThreadPool pool(o.n_threads);
  AttentionReport report;
  report.n_layer = cfg.n_layer;
  report.n_head = cfg.n_head;
  report.n_head_kv = cfg.n_head_kv;
  report.head_dim = cfg.head_dim;
  report.threads = pool.n_threads();
  if (progress) progress(report);
  for (int ctx : o.contexts) {
    for (int n : o.seqs) {
      KV_ASSIGN_OR_RETURN(AttentionRow r, measure(cfg, o, n, ctx, pool));
      report.rows.push_back(r);
      if (progress) progress(report);
    }
  }
  return report;
}

}  // namespace kvserve::bench
