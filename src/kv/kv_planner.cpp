#include "kv/kv_planner.h"

#include <cmath>

#include "kv/kv_storage.h"

namespace kvserve {

namespace {
KvLayout layout_of(const KvPlanInput& in) {
  KvLayout l;
  l.n_layer = in.n_layer;
  l.n_head_kv = in.n_head_kv;
  l.head_dim = in.head_dim;
  l.block_size = in.block_size > 0 ? in.block_size : 1;
  l.k_type = in.kv_type_k;
  l.v_type = in.kv_type_v;
  return l;
}
}  // namespace

Status check_kv_plan(const KvPlanInput& in) { return layout_of(in).check(); }

KvPlan plan_kv(const KvPlanInput& in) {
  KvPlan p;
  const KvLayout l = layout_of(in);
  const double heads = static_cast<double>(in.n_layer) * in.n_head_kv;
  p.bytes_per_token_k = heads * static_cast<double>(l.k_tile_bytes()) / l.block_size;
  p.bytes_per_token_v = heads * static_cast<double>(l.v_tile_bytes()) / l.block_size;
  p.bytes_per_token = l.bytes_per_token();
  p.bytes_per_request = p.bytes_per_token * static_cast<double>(in.ctx);
  const int64_t bs = l.block_size;
  const int64_t paged_tokens = (in.ctx + bs - 1) / bs * bs;
  p.bytes_per_request_paged = p.bytes_per_token * static_cast<double>(paged_tokens);
  p.bytes_total = p.bytes_per_request * static_cast<double>(in.batch);
  if (in.memory > 0) {
    p.memory_for_kv = static_cast<double>(in.memory) - static_cast<double>(in.weight_bytes);
    p.requests_fit = p.memory_for_kv <= 0 || p.bytes_per_request_paged <= 0
                         ? 0
                         : static_cast<int64_t>(std::floor(p.memory_for_kv / p.bytes_per_request_paged));
  }
  return p;
}

}  // namespace kvserve
