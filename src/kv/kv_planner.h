// Capacity planning: the KV memory a model, context and batch need, before any hardware is
// bought. bytes per token = layers x kv_heads x (K tile + V tile bytes) / block_size, with the
// exact tile sizes of the storage (kv/kv_type.h: scales and q4 headers included), x tokens x batch.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/status.h"
#include "kv/kv_type.h"

namespace kvserve {

struct KvPlanInput {
  int n_layer = 0, n_head_kv = 0, head_dim = 0;
  KvType kv_type_k = KvType::kF16;
  KvType kv_type_v = KvType::kF16;
  int64_t ctx = 4096;      // tokens per request
  int64_t batch = 1;       // concurrent requests
  int block_size = 16;     // paging granularity (and the q4 K quantization group)
  size_t memory = 0;       // memory available (0: no fit computed)
  size_t weight_bytes = 0; // subtracted from memory when known
};

struct KvPlan {
  double bytes_per_token = 0;    // K + V; double: q4 K headers amortise over the block
  double bytes_per_token_k = 0, bytes_per_token_v = 0;
  double bytes_per_request = 0;  // ctx tokens
  double bytes_per_request_paged = 0;  // rounded up to whole blocks
  double bytes_total = 0;        // batch requests
  double memory_for_kv = 0;      // memory - weights
  int64_t requests_fit = -1;     // requests of ctx tokens that fit (paged); -1 when no memory given
};

KvPlan plan_kv(const KvPlanInput& in);
// ok, or the reason the storage would refuse in's shape and types (see KvLayout::check).
Status check_kv_plan(const KvPlanInput& in);

}  // namespace kvserve
