#include "kernels/attention.h"

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "kernels/attention_impl.h"

namespace kvserve::kernels {

namespace {

struct Task {
  int seq;  // index into seqs
  int i;    // query index within the chunk
  int g;    // kv head
};

thread_local std::vector<float> t_scores;  // [n_gqa][n_ctx], reused across calls

void attend_one(const AttnTileFns& fns, const float* q, const AttentionSeq& s, int i, int g,
                const KvStorage& kv, int layer, int n_head, float scale, float* out) {
  const KvLayout& L = kv.layout();
  const int hd = L.head_dim, bs = L.block_size, n_gqa = n_head / L.n_head_kv;
  const int n_ctx = s.pos0 + i + 1;
  const int row = s.row0 + i;
  std::vector<float>& scores = t_scores;
  scores.resize(static_cast<size_t>(n_gqa) * n_ctx);
  // The n_gqa query heads that share kv head g: [n_gqa][hd].
  const float* qrow = q + (static_cast<size_t>(row) * n_head + g * n_gqa) * hd;
  float* orow = out + (static_cast<size_t>(row) * n_head + g * n_gqa) * hd;

  for (int t0 = 0; t0 < n_ctx; t0 += bs) {
    const int n = std::min(bs, n_ctx - t0);
    const uint8_t* k = kv.k_tile(layer, s.table->blocks[t0 / bs], g);
    for (int h = 0; h < n_gqa; ++h) {
      fns.scores(qrow + h * hd, k, L.type, n, hd, scale, scores.data() + static_cast<size_t>(h) * n_ctx + t0);
    }
  }
  for (int h = 0; h < n_gqa; ++h) {
    softmax(scores.data() + static_cast<size_t>(h) * n_ctx, n_ctx);
    std::fill(orow + h * hd, orow + (h + 1) * hd, 0.0f);
  }
  for (int t0 = 0; t0 < n_ctx; t0 += bs) {
    const int n = std::min(bs, n_ctx - t0);
    const uint8_t* v = kv.v_tile(layer, s.table->blocks[t0 / bs], g);
    for (int h = 0; h < n_gqa; ++h) {
      fns.accum(scores.data() + static_cast<size_t>(h) * n_ctx + t0, v, L.type, n, hd, orow + h * hd);
    }
  }
}

}  // namespace

void attention_paged(const float* q, const std::vector<AttentionSeq>& seqs, const KvStorage& kv,
                     int layer, int n_head, float scale, float* out, ThreadPool& pool) {
  std::vector<Task> tasks;
  const int n_kv = kv.layout().n_head_kv;
  for (int s = 0; s < static_cast<int>(seqs.size()); ++s) {
    for (int i = 0; i < seqs[s].n_q; ++i) {
      for (int g = 0; g < n_kv; ++g) tasks.push_back({s, i, g});
    }
  }
  // Causal queries grow in cost along the chunk, so tasks are dealt out round-robin rather
  // than in contiguous ranges.
  const int64_t n_tasks = static_cast<int64_t>(tasks.size());
  const AttnTileFns& fns = attn_tile_fns(cpu_level(), kv.layout().head_dim);
  auto work = [&](int ith, int nth) {
    for (int64_t t = ith; t < n_tasks; t += nth) {
      const Task& k = tasks[t];
      attend_one(fns, q, seqs[k.seq], k.i, k.g, kv, layer, n_head, scale, out);
    }
  };
  if (n_tasks == 1) {
    work(0, 1);
  } else {
    pool.run(work);
  }
}

}  // namespace kvserve::kernels
