#include "kv/kv_policy_window.h"

#include <algorithm>

#include "kv/kv_cache_manager.h"

namespace kvserve {

Status WindowKvPolicy::enforce(SeqId, BlockTable& table, int n_pos, KvBlockOps& ops) {
  // Queries from position n_pos on see [0, sink) and [n_pos - window + 1, ...).
  const int bs = ops.block_size();
  const int first_kept = window_first_block(window_, n_pos, bs);
  const int first_free = window_sink_blocks(window_, bs);
  for (int b = first_free; b < std::min(first_kept, table.n_blocks()); ++b) {
    BlockId& id = table.blocks[b];
    if (id == kNoBlock) continue;
    ops.release(id);
    id = kNoBlock;
    ++n_released_;
  }
  return Status::ok();
}

void WindowKvPolicy::add_stats(KvCacheStats& st) const {
  st.n_window_released += n_released_;
}

}  // namespace kvserve
