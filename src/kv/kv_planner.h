// Capacity planning: the KV memory a model, context and batch need, before any hardware is
// bought. bytes = 2 (K and V) x layers x kv_heads x head_dim x bytes per element x tokens x batch.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace kvserve {

struct KvPlanInput {
  int n_layer = 0, n_head_kv = 0, head_dim = 0;
  DType kv_type = DType::kF16;
  int64_t ctx = 4096;      // tokens per request
  int64_t batch = 1;       // concurrent requests
  int block_size = 16;     // paging granularity
  size_t memory = 0;       // memory available (0: no fit computed)
  size_t weight_bytes = 0; // subtracted from memory when known
};

struct KvPlan {
  double bytes_per_token = 0;    // double: 4-bit types have fractional bytes per element
  double bytes_per_request = 0;  // ctx tokens
  double bytes_per_request_paged = 0;  // rounded up to whole blocks
  double bytes_total = 0;        // batch requests
  double memory_for_kv = 0;      // memory - weights
  int64_t requests_fit = -1;     // requests of ctx tokens that fit (paged); -1 when no memory given
};

KvPlan plan_kv(const KvPlanInput& in);

}  // namespace kvserve
