// Shared set-up of the attention tests: random K/V written into a paged cache.
#pragma once

#include <random>
#include <vector>

#include "kv/block_table.h"
#include "kv/kv_storage.h"

namespace kvserve::test {

// K and V as the reference sees them: [n_ctx][kv_dim] each.
struct RandomKv {
  std::vector<float> k, v;
};

// Draws K, then V, uniform in [-1, 1) from rng and writes every position of layer 0 through
// `table` into `kv`.
inline RandomKv write_random_kv(KvStorage& kv, const BlockTable& table, int n_ctx, int kv_dim,
                                int block_size, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1, 1);
  RandomKv r;
  r.k.resize(static_cast<size_t>(n_ctx) * kv_dim);
  r.v.resize(r.k.size());
  for (auto& x : r.k) x = u(rng);
  for (auto& x : r.v) x = u(rng);
  for (int t = 0; t < n_ctx; ++t) {
    kv.write_token(0, table.block_for(t, block_size), t % block_size,
                   r.k.data() + static_cast<size_t>(t) * kv_dim,
                   r.v.data() + static_cast<size_t>(t) * kv_dim);
  }
  return r;
}

}  // namespace kvserve::test
