// Per-ISA inner loops of the paged attention kernel: one K or V tile ([n][head_dim], the
// storage type) against f32 queries. Internal to kernels/attention.cpp and its tests.
#pragma once

#include <cstdint>

#include "core/cpu_features.h"
#include "core/dtype.h"

namespace kvserve::kernels {

struct AttnTileFns {
  // scores[t] = scale * dot(q, K[t]) for t in [0, n)
  void (*scores)(const float* q, const uint8_t* k, DType type, int n, int hd, float scale,
                 float* scores);
  // out[e] += sum over t in [0, n) of p[t] * V[t][e], t ascending for every e
  void (*accum)(const float* p, const uint8_t* v, DType type, int n, int hd, float* out);
};

// The fastest tile functions usable for head_dim on this CPU (capped at `level`). The choice
// depends only on (level, hd), so every call for one model takes the same path.
const AttnTileFns& attn_tile_fns(CpuLevel level, int hd);

const AttnTileFns& attn_tile_fns_scalar();
const AttnTileFns* attn_tile_fns_avx2();    // needs hd % 8 == 0
const AttnTileFns* attn_tile_fns_avx512();  // needs hd % 16 == 0

}  // namespace kvserve::kernels
