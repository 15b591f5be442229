// BlockTable: one sequence's map from logical block (token position / block_size) to physical
// block id. A value object: the cache manager hands out const references, the scheduler and the
// attention kernel read it; only the manager changes it.
#pragma once

#include <vector>

#include "kv/block_pool.h"

namespace kvserve {

struct BlockTable {
  std::vector<BlockId> blocks;  // [n_logical_blocks]
  int n_tokens = 0;             // tokens whose K/V are (or are being) written

  BlockId block_for(int pos, int block_size) const { return blocks[pos / block_size]; }
  int n_blocks() const { return static_cast<int>(blocks.size()); }
};

inline int blocks_for_tokens(int n_tokens, int block_size) {
  return (n_tokens + block_size - 1) / block_size;
}

}  // namespace kvserve
