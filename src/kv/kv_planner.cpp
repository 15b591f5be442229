#include "kv/kv_planner.h"

#include <cmath>

namespace kvserve {

KvPlan plan_kv(const KvPlanInput& in) {
  KvPlan p;
  const DTypeInfo& ti = dtype_info(in.kv_type);
  const double bytes_per_elem = static_cast<double>(ti.block_bytes) / ti.block_elems;
  p.bytes_per_token = 2.0 * in.n_layer * in.n_head_kv * in.head_dim * bytes_per_elem;
  p.bytes_per_request = p.bytes_per_token * static_cast<double>(in.ctx);
  const int64_t bs = in.block_size > 0 ? in.block_size : 1;
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
