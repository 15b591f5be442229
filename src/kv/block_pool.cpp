#include "kv/block_pool.h"

#include <sstream>

#include "core/assert.h"

namespace kvserve {

BlockPool::BlockPool(int n_blocks)
    : ref_count_(n_blocks, 0), prev_(n_blocks, kNoBlock), next_(n_blocks, kNoBlock) {
  KV_ASSERT(n_blocks >= 0);
  for (BlockId id = 0; id < n_blocks; ++id) push_back(id);
}

void BlockPool::unlink(BlockId id) {
  const BlockId p = prev_[id], n = next_[id];
  (p == kNoBlock ? head_ : next_[p]) = n;
  (n == kNoBlock ? tail_ : prev_[n]) = p;
  prev_[id] = next_[id] = kNoBlock;
  --n_free_;
}

void BlockPool::push_back(BlockId id) {
  prev_[id] = tail_;
  next_[id] = kNoBlock;
  (tail_ == kNoBlock ? head_ : next_[tail_]) = id;
  tail_ = id;
  ++n_free_;
}

Result<std::vector<BlockId>> BlockPool::allocate(int n) {
  if (!can_allocate(n)) {
    return out_of_memory("KV cache full: need " + std::to_string(n) + " blocks, " +
                         std::to_string(n_free_) + " of " + std::to_string(n_blocks_total()) +
                         " free");
  }
  std::vector<BlockId> ids;
  ids.reserve(n);
  for (int i = 0; i < n; ++i) {
    const BlockId id = head_;
    unlink(id);
    KV_ASSERT(ref_count_[id] == 0);
    ref_count_[id] = 1;
    ids.push_back(id);
  }
  return ids;
}

void BlockPool::ref(BlockId id) {
  KV_ASSERT(id >= 0 && id < n_blocks_total() && ref_count_[id] > 0);
  ++ref_count_[id];
}

void BlockPool::release(BlockId id) {
  KV_ASSERT(id >= 0 && id < n_blocks_total() && ref_count_[id] > 0);
  if (--ref_count_[id] == 0) push_back(id);
}

void BlockPool::release(const std::vector<BlockId>& ids) {
  for (BlockId id : ids) release(id);
}

int BlockPool::ref_count(BlockId id) const {
  KV_ASSERT(id >= 0 && id < n_blocks_total());
  return ref_count_[id];
}

std::vector<BlockId> BlockPool::free_queue() const {
  std::vector<BlockId> out;
  for (BlockId id = head_; id != kNoBlock; id = next_[id]) out.push_back(id);
  return out;
}

std::string BlockPool::dump() const {
  std::ostringstream os;
  os << "blocks total=" << n_blocks_total() << " used=" << n_blocks_used()
     << " free=" << n_blocks_free() << "\nrefs [";
  for (int i = 0; i < n_blocks_total(); ++i) {
    if (i) os << ' ';
    if (ref_count_[i] == 0) {
      os << '.';
    } else {
      os << ref_count_[i];
    }
  }
  os << "]";
  return os.str();
}

}  // namespace kvserve
