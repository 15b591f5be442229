#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/attention_impl.h"

namespace kvserve::kernels {

namespace {

// Contexts are cut into partitions of this many positions; each (query, kv head, partition) is
// one task, and partitions are merged in order afterwards. The cut depends only on the context
// length, never on the thread count, so results are the same however the work is spread.
constexpr int kPartition = 256;

struct Task {
  int seq;   // index into seqs
  int i;     // query index within the chunk
  int g;     // kv head
  int part;  // partition index
};

// Per-task partial results: m (max score) and l (sum of exp) per query head, and the
// unnormalised output o = sum exp(s - m) * v.
struct Partials {
  std::vector<float> m, l;  // [n_tasks][n_gqa]
  std::vector<float> o;     // [n_tasks][n_gqa][hd]
};

thread_local std::vector<float> t_scores;  // [n_gqa][kPartition]

void attend_partition(const AttnTileFns& fns, const float* q, const AttentionSeq& s, const Task& k,
                      const KvStorage& kv, int layer, int n_head, float scale, float* m_out,
                      float* l_out, float* o_out) {
  const KvLayout& L = kv.layout();
  const int hd = L.head_dim, bs = L.block_size, n_gqa = n_head / L.n_head_kv;
  const int n_ctx = s.pos0 + k.i + 1;
  const int t_begin = k.part * kPartition, t_end = std::min(n_ctx, t_begin + kPartition);
  const int n = t_end - t_begin;
  const size_t row_bytes = static_cast<size_t>(hd) * (L.type == DType::kF32 ? 4 : 2);
  std::vector<float>& sc = t_scores;
  sc.resize(static_cast<size_t>(n_gqa) * kPartition);
  // The n_gqa query heads that share kv head g: [n_gqa][hd].
  const float* qg = q + (static_cast<size_t>(s.row0 + k.i) * n_head + k.g * n_gqa) * hd;

  // Runs of consecutive positions that lie in one block. Each block's tile is a short separate
  // run of memory, so the next one is prefetched while this one is read.
  auto for_runs = [&](auto&& tile_of, auto&& fn) {
    for (int t = t_begin; t < t_end;) {
      const int off = t % bs, len = std::min(bs - off, t_end - t);
      if (t + len < t_end) {
        const uint8_t* next = tile_of(s.table->blocks[(t + len) / bs]);
        const size_t n_next = static_cast<size_t>(std::min(bs, t_end - t - len)) * row_bytes;
        for (size_t i = 0; i < n_next; i += 64) __builtin_prefetch(next + i);
      }
      fn(s.table->blocks[t / bs], off, t - t_begin, len);
      t += len;
    }
  };
  auto k_tile = [&](BlockId b) { return kv.k_tile(layer, b, k.g); };
  auto v_tile = [&](BlockId b) { return kv.v_tile(layer, b, k.g); };
  for_runs(k_tile, [&](BlockId b, int off, int at, int len) {
    fns.scores(qg, n_gqa, k_tile(b) + off * row_bytes, L.type, len, hd, scale, sc.data() + at,
               kPartition);
  });
  for (int h = 0; h < n_gqa; ++h) {
    float* sh = sc.data() + static_cast<size_t>(h) * kPartition;
    const float m = *std::max_element(sh, sh + n);
    m_out[h] = m;
    l_out[h] = fns.exp_sum(sh, n, m);
  }
  std::fill(o_out, o_out + static_cast<size_t>(n_gqa) * hd, 0.0f);
  for_runs(v_tile, [&](BlockId b, int off, int at, int len) {
    fns.accum(sc.data() + at, kPartition, n_gqa, v_tile(b) + off * row_bytes, L.type, len, hd,
              o_out);
  });
}

}  // namespace

void attention_paged(const float* q, const std::vector<AttentionSeq>& seqs, const KvStorage& kv,
                     int layer, int n_head, float scale, float* out, ThreadPool& pool) {
  const KvLayout& L = kv.layout();
  const int n_kv = L.n_head_kv, hd = L.head_dim, n_gqa = n_head / n_kv;
  std::vector<Task> tasks;
  for (int s = 0; s < static_cast<int>(seqs.size()); ++s) {
    for (int i = 0; i < seqs[s].n_q; ++i) {
      const int n_parts = (seqs[s].pos0 + i + 1 + kPartition - 1) / kPartition;
      for (int g = 0; g < n_kv; ++g) {
        for (int p = 0; p < n_parts; ++p) tasks.push_back({s, i, g, p});
      }
    }
  }
  const AttnTileFns& fns = attn_tile_fns(cpu_level(), hd);
  // The calling thread's buffers; workers reach them through this reference (a thread_local
  // named inside the lambda would be each worker's own).
  thread_local Partials t_part;
  Partials& part = t_part;
  const size_t n_tasks = tasks.size();
  part.m.resize(n_tasks * n_gqa);
  part.l.resize(n_tasks * n_gqa);
  part.o.resize(n_tasks * n_gqa * hd);

  // Tasks differ in cost (causal rows, the last partition is partial): one task per chunk.
  pool.parallel_for(static_cast<int64_t>(n_tasks), 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const Task& k = tasks[t];
      attend_partition(fns, q, seqs[k.seq], k, kv, layer, n_head, scale, &part.m[t * n_gqa],
                       &part.l[t * n_gqa], &part.o[t * n_gqa * hd]);
    }
  });

  // Merge the partitions of each (query, kv head), in partition order:
  // out = sum_p o_p e^(m_p - M) / sum_p l_p e^(m_p - M).
  for (size_t t0 = 0; t0 < n_tasks;) {
    size_t t1 = t0 + 1;
    while (t1 < n_tasks && tasks[t1].part != 0) ++t1;
    const Task& k = tasks[t0];
    const AttentionSeq& s = seqs[k.seq];
    float* og = out + (static_cast<size_t>(s.row0 + k.i) * n_head + k.g * n_gqa) * hd;
    for (int h = 0; h < n_gqa; ++h) {
      float mx = -std::numeric_limits<float>::infinity();
      for (size_t t = t0; t < t1; ++t) mx = std::max(mx, part.m[t * n_gqa + h]);
      float denom = 0;
      float* oh = og + static_cast<size_t>(h) * hd;
      std::fill(oh, oh + hd, 0.0f);
      for (size_t t = t0; t < t1; ++t) {
        const float w = std::exp(part.m[t * n_gqa + h] - mx);
        denom += part.l[t * n_gqa + h] * w;
        const float* o = &part.o[(t * n_gqa + h) * hd];
        for (int e = 0; e < hd; ++e) oh[e] += o[e] * w;
      }
      const float inv = 1.0f / denom;
      for (int e = 0; e < hd; ++e) oh[e] *= inv;
    }
    t0 = t1;
  }
}

}  // namespace kvserve::kernels
