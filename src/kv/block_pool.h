// BlockPool: the metadata of the paged KV cache — block ids, reference counts, the free queue
// and the content-key map of the prefix cache. It owns no tensor memory (KvStorage does), so its
// behaviour is testable with no model and exact block ids.
//
// A block is in one of three states:
//   used    ref_count > 0, in one or more block tables;
//   cached  ref_count == 0 with a content key: in the free queue and in the key map, so a prefix
//           hit can take it back (ref 0 -> 1) until its memory is reused;
//   free    ref_count == 0, no key: in the free queue only.
// Cached and free blocks share one intrusive queue ordered by eviction priority: allocation takes
// from the front, a released block goes to the back (least recently released is reused first).
// Allocating a cached block evicts it at that moment (its key leaves the map). A block in use is
// never evicted.
//
// Allocation is transactional: allocate(n) either returns n blocks or returns out_of_memory and
// changes nothing. Not thread-safe: the engine loop is the single owner.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/hash.h"
#include "core/status.h"
#include "kv/kv_events.h"

namespace kvserve {

using BlockId = int32_t;
constexpr BlockId kNoBlock = -1;

// Content key of a full block (prefix/block_key.h computes it).
using BlockKey = Digest;

class BlockPool {
 public:
  explicit BlockPool(int n_blocks);

  int n_blocks_total() const { return static_cast<int>(ref_count_.size()); }
  // Blocks allocate() can hand out: truly free plus cached-evictable (the free queue).
  int n_blocks_available() const { return n_queued_; }
  // Of n_blocks_available(), those still holding a key (evictable prefix-cache content); the
  // truly free ones are n_blocks_available() - n_blocks_cached().
  int n_blocks_cached() const { return n_cached_; }
  int n_blocks_used() const { return n_blocks_total() - n_queued_; }
  bool can_allocate(int n) const { return n >= 0 && n <= n_queued_; }
  // Cached blocks evicted by allocate() since construction.
  int64_t n_evictions() const { return n_evictions_; }

  // n blocks with reference count 1, in free-queue order; cached ones among them are evicted.
  Result<std::vector<BlockId>> allocate(int n);
  // Adds a reference. A block in use is shared; a cached block (ref 0, keyed) leaves the free
  // queue and is in use again. Referencing a free block without a key is a bug.
  void ref(BlockId id);
  // Drops one reference; at zero the block goes to the back of the free queue (cached if keyed).
  void release(BlockId id);
  void release(const std::vector<BlockId>& ids);
  int ref_count(BlockId id) const;

  // --- content keys (prefix cache) ---
  // Gives block id (in use, full) the key, remembering its parent key and token ids so a hit can
  // be verified. Returns false, and changes nothing, if the key already names another block or
  // id already has a key (the first registration wins).
  bool set_key(BlockId id, const BlockKey& key, const std::optional<BlockKey>& parent,
               std::span<const int32_t> tokens);
  // The block holding key, if any (used or cached).
  std::optional<BlockId> find(const BlockKey& key) const;
  // True when block id was registered with exactly this parent key and these tokens (a hash
  // collision fails this check and must be treated as a miss).
  bool verify(BlockId id, const std::optional<BlockKey>& parent,
              std::span<const int32_t> tokens) const;
  bool has_key(BlockId id) const { return meta_[id].key.has_value(); }
  const std::optional<BlockKey>& key(BlockId id) const { return meta_[id].key; }
  // Removes id's key (e.g. before its content is overwritten). No-op without a key.
  void drop_key(BlockId id);
  // Removes every key, in use or cached (a prefix-cache reset): cached blocks become free.
  void drop_all_keys();

  // --- events (kv/kv_events.h) ---
  // While on, set_key records BlockStored, eviction and drop_key BlockRemoved, and
  // drop_all_keys AllBlocksCleared, in the order they happen. Off by default, so a pool nobody
  // drains does not grow a log.
  void set_recording(bool on) { recording_ = on; }
  // The events recorded since the last call, oldest first.
  std::vector<KvEvent> take_events();

  // Free-queue order, front first (for tests and dumps).
  std::vector<BlockId> free_queue() const;
  // "blocks total=8 used=3 free=5" (free: n_blocks_available(); + " cached=N" when some of
  // those are cached), then a map
  // "refs [1 1 2 c c . . .]" ('.' free, 'c' cached), then one line per keyed block.
  std::string dump() const;

 private:
  struct Meta {
    std::optional<BlockKey> key;
    std::optional<BlockKey> parent;
    std::vector<int32_t> tokens;  // [block_size] token ids, for hit verification
  };

  void unlink(BlockId id);
  void push_back(BlockId id);
  void evict(BlockId id);

  std::vector<int32_t> ref_count_;    // [n_blocks]
  std::vector<BlockId> prev_, next_;  // [n_blocks] free-queue links; kNoBlock at the ends
  std::vector<Meta> meta_;            // [n_blocks]
  std::unordered_map<BlockKey, BlockId, DigestHasher> by_key_;
  bool recording_ = false;
  std::vector<KvEvent> events_;  // since the last take_events(), when recording_
  BlockId head_ = kNoBlock, tail_ = kNoBlock;
  int n_queued_ = 0;
  int n_cached_ = 0;
  int64_t n_evictions_ = 0;
};

}  // namespace kvserve
