// Per-ISA inner loops of the paged attention kernel. They work on runs of K or V rows
// (n consecutive token rows of one tile, kv_row_stride(type) bytes apart, formats in
// kv/kv_type.h) for the n_gqa query heads that share one kv head, so each row is loaded and
// dequantized in registers once per group: no full-precision copy of the cache is made.
// Per-row scales are folded into the score (K) and the probability (V).
// Determinism: the score of a position does not depend on how a run of positions is cut, and
// V rows are accumulated in ascending t. Internal to kernels/attention.cpp and its tests.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/cpu_features.h"
#include "kv/kv_type.h"

namespace kvserve::kernels {

// Memory the caller will read a few runs later: a tile function prefetches it a little at a
// time as it reads its own rows, so the fetches overlap the arithmetic instead of stalling in a
// burst of more misses than the core can track. A hint only: results never depend on it.
struct AttnPrefetch {
  const uint8_t* p = nullptr;  // nullptr: nothing
  size_t bytes = 0;
};

// Prefetches all of pf at once, where there is time for a burst: ahead of a thread's first run,
// and in the scalar loops.
inline void prefetch_now(AttnPrefetch pf) {
  for (size_t i = 0; pf.p != nullptr && i < pf.bytes; i += 64) __builtin_prefetch(pf.p + i);
}

struct AttnTileFns {
  // s[h * s_stride + t] = scale * dot(q[h], K[t]) for h in [0, n_gqa), t in [0, n).
  // q: [n_gqa][hd] f32. k: the first row of the run (K layout of `type`); k_header: the
  // tile's header for q4 K (per-channel scales and mins), else unused.
  void (*scores)(const float* q, int n_gqa, const uint8_t* k, const uint8_t* k_header, KvType type,
                 int n, int hd, float scale, float* s, int s_stride, AttnPrefetch pf);
  // out[h][e] += sum over t in [0, n), ascending, of p[h * p_stride + t] * V[t][e].
  // v: the first row of the run (V layout of `type`).
  void (*accum)(const float* p, int p_stride, int n_gqa, const uint8_t* v, KvType type, int n,
                int hd, float* out, AttnPrefetch pf);
  // x[i] = exp(x[i] - m) for i in [0, n); returns the sum of the results (fixed order).
  float (*exp_sum)(float* x, int n, float m);
  // The largest of x[0, n), n >= 1 (a maximum: exact whatever the order).
  float (*max)(const float* x, int n);
};

// The fastest tile functions usable for head_dim on this CPU (capped at `level`). The choice
// depends only on (level, hd), so every call for one model takes the same path.
const AttnTileFns& attn_tile_fns(CpuLevel level, int hd);

const AttnTileFns& attn_tile_fns_scalar();
const AttnTileFns* attn_tile_fns_avx2();    // needs hd % 8 == 0
const AttnTileFns* attn_tile_fns_avx512();  // needs hd % 16 == 0

}  // namespace kvserve::kernels
