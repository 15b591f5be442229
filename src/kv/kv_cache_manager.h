// KvCacheManager: the facade over the paged KV cache and the single owner of its state.
// It ties the block pool (metadata) to the KV storage (memory) and keeps one block table per
// sequence. Callers (engine, scheduler) see block tables as read-only values and never touch
// pool internals. Not thread-safe: only the engine loop calls it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "core/status.h"
#include "kv/block_pool.h"
#include "kv/block_table.h"
#include "kv/kv_storage.h"

namespace kvserve {

using SeqId = int64_t;

class KvCacheManager {
 public:
  // Creates storage for n_blocks blocks of `layout`.
  static Result<std::unique_ptr<KvCacheManager>> create(const KvLayout& layout, int n_blocks);

  const KvLayout& layout() const { return storage_->layout(); }
  int block_size() const { return layout().block_size; }
  const BlockPool& pool() const { return pool_; }
  KvStorage& storage() { return *storage_; }
  const KvStorage& storage() const { return *storage_; }

  // Registers an empty sequence. invalid_argument if the id is in use.
  Status add_sequence(SeqId seq);
  bool has_sequence(SeqId seq) const { return tables_.count(seq) != 0; }
  // Blocks needed to grow seq to n_tokens tokens (0 if it already has room).
  int blocks_needed(SeqId seq, int n_tokens) const;
  // Ensures seq's table covers positions [0, n_tokens). Transactional: on out_of_memory nothing
  // changes. Blocks are allocated on demand, never ahead of need.
  Status reserve(SeqId seq, int n_tokens);
  // Records that K/V of positions [0, n_tokens) are written. n_tokens <= reserved capacity.
  void commit(SeqId seq, int n_tokens);
  // Releases every block of seq at once and forgets it. No-op for unknown ids.
  void free_sequence(SeqId seq);

  const BlockTable& table(SeqId seq) const;
  int n_sequences() const { return static_cast<int>(tables_.size()); }
  int n_blocks_used_peak() const { return peak_used_; }
  void reset_peak() { peak_used_ = pool_.n_blocks_used(); }
  // Pool state and one line per sequence: "seq 3: 37 tokens, blocks [4 9 2]".
  std::string dump() const;

 private:
  KvCacheManager(std::unique_ptr<KvStorage> storage);

  std::unique_ptr<KvStorage> storage_;
  BlockPool pool_;
  std::unordered_map<SeqId, BlockTable> tables_;
  int peak_used_ = 0;
};

}  // namespace kvserve
