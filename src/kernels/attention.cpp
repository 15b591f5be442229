#include "kernels/attention.h"

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "kernels/quant.h"

namespace kvserve::kernels {

namespace {

struct Task {
  int seq;  // index into seqs
  int i;    // query index within the chunk
  int g;    // kv head
};

// Scratch reused across calls on the same thread.
struct Scratch {
  std::vector<float> scores;  // [n_gqa][n_ctx]
  std::vector<float> tile;    // [block_size][head_dim]
};
thread_local Scratch t_scratch;

// Rows [0, n) of a [block_size][head_dim] tile as f32: the tile itself when already f32.
const float* tile_f32(const uint8_t* tile, DType type, int n, int head_dim,
                      std::vector<float>& buf) {
  if (type == DType::kF32) return reinterpret_cast<const float*>(tile);
  buf.resize(static_cast<size_t>(n) * head_dim);
  dequantize_row(type, tile, buf.data(), static_cast<int64_t>(n) * head_dim);
  return buf.data();
}

void attend_one(const float* q, const AttentionSeq& s, int i, int g, const KvStorage& kv, int layer,
                int n_head, float scale, float* out) {
  const KvLayout& L = kv.layout();
  const int hd = L.head_dim, bs = L.block_size, n_gqa = n_head / L.n_head_kv;
  const int n_ctx = s.pos0 + i + 1;
  const int row = s.row0 + i;
  Scratch& sc = t_scratch;
  sc.scores.resize(static_cast<size_t>(n_gqa) * n_ctx);
  const float* qrow = q + (static_cast<size_t>(row) * n_head + g * n_gqa) * hd;  // [n_gqa][hd]

  for (int t0 = 0; t0 < n_ctx; t0 += bs) {
    const int n = std::min(bs, n_ctx - t0);
    const float* k =
        tile_f32(kv.k_tile(layer, s.table->blocks[t0 / bs], g), L.type, n, hd, sc.tile);
    for (int h = 0; h < n_gqa; ++h) {
      float* sr = sc.scores.data() + static_cast<size_t>(h) * n_ctx + t0;
      for (int t = 0; t < n; ++t) sr[t] = dot_f32(qrow + h * hd, k + t * hd, hd) * scale;
    }
  }
  float* orow = out + (static_cast<size_t>(row) * n_head + g * n_gqa) * hd;
  for (int h = 0; h < n_gqa; ++h) {
    softmax(sc.scores.data() + static_cast<size_t>(h) * n_ctx, n_ctx);
    std::fill(orow + h * hd, orow + (h + 1) * hd, 0.0f);
  }
  for (int t0 = 0; t0 < n_ctx; t0 += bs) {
    const int n = std::min(bs, n_ctx - t0);
    const float* v =
        tile_f32(kv.v_tile(layer, s.table->blocks[t0 / bs], g), L.type, n, hd, sc.tile);
    for (int h = 0; h < n_gqa; ++h) {
      const float* p = sc.scores.data() + static_cast<size_t>(h) * n_ctx + t0;
      for (int t = 0; t < n; ++t) axpy_f32(p[t], v + t * hd, orow + h * hd, hd);
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
  auto work = [&](int ith, int nth) {
    for (int64_t t = ith; t < n_tasks; t += nth) {
      const Task& k = tasks[t];
      attend_one(q, seqs[k.seq], k.i, k.g, kv, layer, n_head, scale, out);
    }
  };
  if (n_tasks == 1) {
    work(0, 1);
  } else {
    pool.run(work);
  }
}

}  // namespace kvserve::kernels
