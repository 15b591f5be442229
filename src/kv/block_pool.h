// BlockPool: the metadata of the paged KV cache — block ids, reference counts and the free list.
// It owns no tensor memory (KvStorage does), so its behaviour is testable with no model and
// exact block ids.
//
// Free blocks sit in an intrusive doubly-linked queue: allocation takes from the front, a
// released block goes to the back, so the least recently freed block is reused first (the order
// the prefix cache's LRU eviction builds on).
//
// Allocation is transactional: allocate(n) either returns n blocks or returns out_of_memory and
// changes nothing. Not thread-safe: the engine loop is the single owner.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace kvserve {

using BlockId = int32_t;
constexpr BlockId kNoBlock = -1;

class BlockPool {
 public:
  explicit BlockPool(int n_blocks);

  int n_blocks_total() const { return static_cast<int>(ref_count_.size()); }
  int n_blocks_free() const { return n_free_; }
  int n_blocks_used() const { return n_blocks_total() - n_free_; }
  bool can_allocate(int n) const { return n >= 0 && n <= n_free_; }

  // n blocks with reference count 1, in free-queue order.
  Result<std::vector<BlockId>> allocate(int n);
  // Adds a reference to a block in use (sharing).
  void ref(BlockId id);
  // Drops one reference; at zero the block goes to the back of the free queue.
  void release(BlockId id);
  void release(const std::vector<BlockId>& ids);
  int ref_count(BlockId id) const;

  // Free-queue order, front first (for tests and dumps).
  std::vector<BlockId> free_queue() const;
  // One line per state: "blocks total=8 used=3 free=5" plus a map, e.g. "[1 1 2 . . . . .]".
  std::string dump() const;

 private:
  void unlink(BlockId id);
  void push_back(BlockId id);

  std::vector<int32_t> ref_count_;  // [n_blocks]
  std::vector<BlockId> prev_, next_;  // [n_blocks] free-queue links; kNoBlock at the ends
  BlockId head_ = kNoBlock, tail_ = kNoBlock;
  int n_free_ = 0;
};

}  // namespace kvserve
