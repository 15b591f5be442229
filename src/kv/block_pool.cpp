#include "kv/block_pool.h"

#include <algorithm>
#include <sstream>

#include "core/assert.h"

namespace kvserve {

BlockPool::BlockPool(int n_blocks)
    : ref_count_(n_blocks, 0),
      prev_(n_blocks, kNoBlock),
      next_(n_blocks, kNoBlock),
      meta_(n_blocks) {
  KV_ASSERT(n_blocks >= 0);
  for (BlockId id = 0; id < n_blocks; ++id) push_back(id);
}

void BlockPool::unlink(BlockId id) {
  const BlockId p = prev_[id], n = next_[id];
  (p == kNoBlock ? head_ : next_[p]) = n;
  (n == kNoBlock ? tail_ : prev_[n]) = p;
  prev_[id] = next_[id] = kNoBlock;
  --n_queued_;
  if (meta_[id].key) --n_cached_;
}

void BlockPool::push_back(BlockId id) {
  prev_[id] = tail_;
  next_[id] = kNoBlock;
  (tail_ == kNoBlock ? head_ : next_[tail_]) = id;
  tail_ = id;
  ++n_queued_;
  if (meta_[id].key) ++n_cached_;
}

void BlockPool::evict(BlockId id) {
  Meta& m = meta_[id];
  if (recording_) events_.push_back(BlockRemoved{*m.key, KvTier::kPool});
  by_key_.erase(*m.key);
  m = Meta{};
  ++n_evictions_;
}

Result<std::vector<BlockId>> BlockPool::allocate(int n) {
  if (!can_allocate(n)) {
    return out_of_memory("KV cache full: need " + std::to_string(n) + " blocks, " +
                         std::to_string(n_queued_) + " of " + std::to_string(n_blocks_total()) +
                         " free");
  }
  std::vector<BlockId> ids;
  ids.reserve(n);
  for (int i = 0; i < n; ++i) {
    const BlockId id = head_;
    unlink(id);
    KV_ASSERT(ref_count_[id] == 0);
    if (meta_[id].key) evict(id);
    ref_count_[id] = 1;
    ids.push_back(id);
  }
  return ids;
}

void BlockPool::ref(BlockId id) {
  KV_ASSERT(id >= 0 && id < n_blocks_total());
  if (ref_count_[id] == 0) {
    KV_ASSERT(meta_[id].key.has_value());  // only a cached block can come back from the queue
    unlink(id);
  }
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

bool BlockPool::set_key(BlockId id, const BlockKey& key, const std::optional<BlockKey>& parent,
                        std::span<const int32_t> tokens) {
  KV_ASSERT(id >= 0 && id < n_blocks_total() && ref_count_[id] > 0);
  if (meta_[id].key || by_key_.count(key)) return false;
  by_key_.emplace(key, id);
  meta_[id] = Meta{key, parent, std::vector<int32_t>(tokens.begin(), tokens.end())};
  if (recording_) events_.push_back(BlockStored{key, parent, meta_[id].tokens, KvTier::kPool});
  return true;
}

std::optional<BlockId> BlockPool::find(const BlockKey& key) const {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return std::nullopt;
  return it->second;
}

bool BlockPool::verify(BlockId id, const std::optional<BlockKey>& parent,
                       std::span<const int32_t> tokens) const {
  const Meta& m = meta_[id];
  return m.key && m.parent == parent &&
         std::equal(m.tokens.begin(), m.tokens.end(), tokens.begin(), tokens.end());
}

void BlockPool::drop_key(BlockId id) {
  KV_ASSERT(id >= 0 && id < n_blocks_total());
  if (!meta_[id].key) return;
  KV_ASSERT(ref_count_[id] > 0);  // cached blocks lose their key only by eviction
  if (recording_) events_.push_back(BlockRemoved{*meta_[id].key, KvTier::kPool});
  by_key_.erase(*meta_[id].key);
  meta_[id] = Meta{};
}

void BlockPool::drop_all_keys() {
  for (Meta& m : meta_) m = Meta{};
  by_key_.clear();
  n_cached_ = 0;
  if (recording_) events_.push_back(AllBlocksCleared{KvTier::kPool});
}

std::vector<KvEvent> BlockPool::take_events() {
  std::vector<KvEvent> out;
  out.swap(events_);
  return out;
}

std::vector<BlockId> BlockPool::free_queue() const {
  std::vector<BlockId> out;
  for (BlockId id = head_; id != kNoBlock; id = next_[id]) out.push_back(id);
  return out;
}

std::string BlockPool::dump() const {
  std::ostringstream os;
  os << "blocks total=" << n_blocks_total() << " used=" << n_blocks_used()
     << " free=" << n_blocks_available();
  if (n_cached_ > 0) os << " cached=" << n_cached_;
  os << "\nrefs [";
  for (int i = 0; i < n_blocks_total(); ++i) {
    if (i) os << ' ';
    if (ref_count_[i] > 0) {
      os << ref_count_[i];
    } else {
      os << (meta_[i].key ? 'c' : '.');
    }
  }
  os << "]";
  for (int i = 0; i < n_blocks_total(); ++i) {
    if (!meta_[i].key) continue;
    os << "\n  block " << i << " key " << meta_[i].key->short_hex() << " parent "
       << (meta_[i].parent ? meta_[i].parent->short_hex() : std::string("-")) << ' '
       << (ref_count_[i] > 0 ? "used" : "cached");
  }
  return os.str();
}

}  // namespace kvserve
