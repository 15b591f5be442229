// KvCacheManager: the facade over the paged KV cache and the single owner of its state.
// It ties the block pool (metadata) to the KV storage (memory) and the prefix cache (policy),
// and keeps one block table per sequence. Callers (engine, scheduler) see block tables as
// read-only values and never touch pool internals. Not thread-safe: only the engine loop calls
// it.
//
// Prefix caching (docs/design-prefix-cache.md): a sequence added with add_sequence_from_prefix()
// starts with the longest cached prefix of its tokens; commit(seq, tokens) registers each block
// as it fills (prompt or generated tokens); free_sequence() leaves registered blocks cached and
// evictable; fork() shares every block; reserve() copies a shared or cached block before any
// write into it (copy-on-write). With NoPrefixCache (the default) none of this hits.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "kv/block_pool.h"
#include "kv/block_table.h"
#include "kv/kv_storage.h"
#include "prefix/prefix_cache.h"

namespace kvserve {

using SeqId = int64_t;

// Engine-wide prefix-cache counters and block occupancy.
struct KvCacheStats {
  int64_t n_prefix_queries = 0;  // add_sequence_from_prefix() calls
  int64_t n_query_tokens = 0;    // tokens passed to those calls
  int64_t n_hit_tokens = 0;      // of those, tokens served from cache
  int64_t n_evictions = 0;       // cached blocks whose memory was reused
  int64_t n_cow_copies = 0;      // blocks copied before a write (copy-on-write)
  int n_blocks_used = 0;         // ref_count > 0
  int n_blocks_cached = 0;       // ref_count == 0 with a key: evictable
  int n_blocks_empty = 0;        // ref_count == 0, no key
  double hit_rate() const {
    return n_query_tokens > 0 ? static_cast<double>(n_hit_tokens) / n_query_tokens : 0.0;
  }
};

class KvCacheManager {
 public:
  // Creates storage for n_blocks blocks of `layout`. prefix: null means NoPrefixCache.
  static Result<std::unique_ptr<KvCacheManager>> create(const KvLayout& layout, int n_blocks,
                                                        std::unique_ptr<PrefixCache> prefix = {});

  const KvLayout& layout() const { return storage_->layout(); }
  int block_size() const { return layout().block_size; }
  const BlockPool& pool() const { return pool_; }
  KvStorage& storage() { return *storage_; }
  const KvStorage& storage() const { return *storage_; }
  PrefixCache& prefix_cache() { return *prefix_; }

  // Registers an empty sequence. invalid_argument if the id is in use.
  Status add_sequence(SeqId seq);
  // Registers seq with the longest cached prefix of `tokens` in namespace `salt` ("" = public),
  // at block granularity and never the whole of tokens: at most (tokens.size() - 1) / block_size
  // blocks, so the last token is always computed (for its logits). Then reserves blocks for all
  // of tokens. Returns the number of cached tokens (table(seq).n_tokens). Transactional: on
  // invalid_argument (id in use, empty tokens) or out_of_memory nothing changes.
  Result<int> add_sequence_from_prefix(SeqId seq, std::span<const int32_t> tokens,
                                       const std::string& salt = "");
  // Registers child as a copy of parent sharing every block (reference counts + 1). Writes to
  // a shared block copy it first (see reserve). invalid_argument if parent is unknown or child
  // exists.
  Status fork(SeqId parent, SeqId child);
  bool has_sequence(SeqId seq) const { return seqs_.count(seq) != 0; }
  // Blocks needed to grow seq to n_tokens tokens (0 if it already has room); excludes copies.
  int blocks_needed(SeqId seq, int n_tokens) const;
  // Ensures seq's table covers positions [0, n_tokens) and that every block holding positions
  // [table.n_tokens, n_tokens) is private and unkeyed: shared (ref > 1) or cached blocks there are
  // copied to fresh blocks first. Transactional: on out_of_memory nothing changes. Blocks are
  // allocated on demand, never ahead of need.
  Status reserve(SeqId seq, int n_tokens);
  // Records that K/V of positions [0, n_tokens) are written. n_tokens <= reserved capacity.
  void commit(SeqId seq, int n_tokens);
  // As commit(seq, tokens.size()), and registers every newly full block with the prefix cache.
  // tokens: the sequence's ids for positions [0, tokens.size()).
  void commit(SeqId seq, std::span<const int32_t> tokens);
  // Releases every block of seq at once (last block first, so a sequence's tail is evicted
  // before its head) and forgets it. No-op for unknown ids.
  void free_sequence(SeqId seq);

  const BlockTable& table(SeqId seq) const;
  int n_sequences() const { return static_cast<int>(seqs_.size()); }
  int n_blocks_used_peak() const { return peak_used_; }
  void reset_peak() { peak_used_ = pool_.n_blocks_used(); }
  KvCacheStats stats() const;
  // Pool state and one line per sequence: "seq 3: 37 tokens, blocks [4 9 2]".
  std::string dump() const;

 private:
  struct SeqState {
    BlockTable table;
    std::string salt;
    std::vector<BlockKey> keys;  // keys of full blocks [0, keys.size())
  };

  KvCacheManager(std::unique_ptr<KvStorage> storage, std::unique_ptr<PrefixCache> prefix);
  SeqState& state(SeqId seq);
  const SeqState& state(SeqId seq) const;
  // Logical blocks of s that a write of positions [table.n_tokens, n_tokens) must copy first.
  std::vector<int> blocks_to_copy(const SeqState& s, int n_tokens) const;
  void register_full_blocks(SeqState& s, std::span<const int32_t> tokens);
  void note_peak();

  std::unique_ptr<KvStorage> storage_;
  std::unique_ptr<PrefixCache> prefix_;
  BlockPool pool_;
  std::unordered_map<SeqId, SeqState> seqs_;
  int peak_used_ = 0;
  int64_t n_prefix_queries_ = 0, n_query_tokens_ = 0, n_hit_tokens_ = 0, n_cow_copies_ = 0;
};

}  // namespace kvserve
