// KvCacheManager: the facade over the paged KV cache and the single owner of its state.
// It ties the block pool (metadata) to the KV storage (memory) and the prefix cache (policy),
// and keeps one block table per sequence. Callers (engine, scheduler) see block tables as
// read-only values and ask questions (n_blocks_available(), occupancy(), prefix_caching()...)
// instead of reaching into the pool or the prefix cache. Not thread-safe: only the engine loop
// calls it.
//
// Prefix caching (docs/design-prefix-cache.md): a sequence added with add_sequence_from_prefix()
// starts with the longest cached prefix of its tokens; commit_and_register(seq, tokens)
// registers each block as it fills (prompt or generated tokens); free_sequence() leaves
// registered blocks cached and evictable; fork() shares every block; reserve() copies a shared
// or cached block before any write into it (copy-on-write). With NoPrefixCache (the default)
// none of this hits.
//
// Bounded memory (kv/kv_policy.h for the configuration, kv/kv_policy_impl.h for the
// implementations, docs/design-kv-policies.md): after each commit the engine calls
// enforce_policy(seq), which the policy carries out. WindowKv releases blocks wholly outside
// the sinks and the window (their table entries become kNoBlock); HeavyHitterKv evicts tokens
// down to `keep` by moving kept rows into the evicted slots, so a sequence's cache slots stop
// being its positions: table.n_tokens counts slots, n_positions() counts tokens computed.
// Prefix matching with a window needs only the blocks the window (and sinks) can see.
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
#include "kv/kv_policy.h"
#include "kv/kv_policy_impl.h"
#include "kv/kv_storage.h"
#include "prefix/prefix_cache.h"

namespace kvserve {

// One sequence's cache state, owned by KvCacheManager (and by SwappedKv while swapped out).
// The policy's own per-sequence state (H2O scores) lives in the policy.
struct KvSeqState {
  BlockTable table;
  std::string salt;
  std::vector<BlockKey> keys;  // keys of full blocks [0, keys.size())
  int n_pos = 0;               // positions computed
};

// A preempted sequence's KV copied to host memory (swap preemption): everything needed to put it
// back exactly as it was. Opaque to callers except for its size. Move-only.
struct SwappedKv {
  size_t bytes() const { return data.size(); }
  int n_blocks() const;  // blocks swap_in() needs

 private:
  friend class KvCacheManager;
  std::vector<uint8_t> data;  // [blocks of state.table not kNoBlock][bytes_per_block]
  KvSeqState state;           // as it was; its block ids are stale
  std::unique_ptr<KvPolicySeqState> policy_state;  // the policy's, or nullptr
};

// Engine-wide prefix-cache counters and block occupancy.
struct KvCacheStats {
  int64_t n_prefix_queries = 0;   // add_sequence_from_prefix() calls
  int64_t n_query_tokens = 0;     // tokens passed to those calls
  int64_t n_hit_tokens = 0;       // of those, tokens served from cache
  int64_t n_evictions = 0;        // cached blocks whose memory was reused
  int64_t n_cow_copies = 0;       // blocks copied before a write (copy-on-write)
  int64_t n_window_released = 0;  // blocks released for leaving the attention window
  int64_t n_h2o_evicted = 0;      // tokens evicted by H2O
  int n_blocks_used = 0;          // ref_count > 0
  int n_blocks_cached = 0;        // ref_count == 0 with a key: evictable
  int n_blocks_empty = 0;         // ref_count == 0, no key (truly free)
  double hit_rate() const {
    return n_query_tokens > 0 ? static_cast<double>(n_hit_tokens) / n_query_tokens : 0.0;
  }
};

// Block occupancy at one moment. used + cached + free == total; allocation can take
// cached + free (cached blocks are evicted as they are taken).
struct KvOccupancy {
  int total = 0;
  int used = 0;    // ref_count > 0: in some sequence's table
  int cached = 0;  // ref_count == 0 with a prefix-cache key: evictable
  int free = 0;    // ref_count == 0, no key: holds nothing
  int available() const { return cached + free; }
};

class KvCacheManager {
 public:
  // Creates storage for n_blocks blocks of `layout`. prefix: null means NoPrefixCache.
  // policy: how each sequence's cache is bounded (validated here).
  static Result<std::unique_ptr<KvCacheManager>> create(const KvLayout& layout, int n_blocks,
                                                        std::unique_ptr<PrefixCache> prefix = {},
                                                        const KvPolicy& policy = FullKv{},
                                                        KvCommit commit = KvCommit::kOnWrite);

  const KvLayout& layout() const { return storage_->layout(); }
  int block_size() const { return layout().block_size; }
  // The K/V memory. Mutable because the model runner writes K/V into it (and attention reads
  // it) through the block tables handed out here; the manager owns which blocks hold what.
  KvStorage& storage() { return *storage_; }
  const KvStorage& storage() const { return *storage_; }
  // The policy's configuration (kv_policy_bounded(), kv_policy_chunk()... read it).
  const KvPolicy& policy() const { return policy_->config(); }

  // --- questions for callers (instead of the pool and prefix cache themselves) ---
  // True when completed blocks get content keys, so sequences can share a prompt's blocks
  // (the cache answers a key for a probe; NoPrefixCache never does).
  bool prefix_caching() const { return prefix_->key_for(std::nullopt, {}, "").has_value(); }
  // The prefix cache's name ("off", "xxh3", "sha256").
  const char* prefix_cache_name() const { return prefix_->name(); }
  int n_blocks_total() const { return pool_.n_blocks_total(); }
  // Blocks allocation can hand out now: truly free plus cached-evictable.
  int n_blocks_available() const { return pool_.n_blocks_available(); }
  int n_blocks_used() const { return pool_.n_blocks_used(); }
  KvOccupancy occupancy() const;
  // KV events (kv/kv_events.h): recorded by the pool while on; the engine drains them each step.
  void set_event_recording(bool on) { pool_.set_recording(on); }
  std::vector<KvEvent> take_events() { return pool_.take_events(); }
  // Forgets every cached block (an AllBlocksCleared event): later requests match nothing that
  // was computed before. Blocks in use keep their K/V; only their keys go.
  void reset_prefix_cache() { pool_.drop_all_keys(); }
  // The prefix cache itself, for tests that install hooks (e.g. forced key collisions).
  PrefixCache& prefix_cache_for_testing() { return *prefix_; }
  // Read-only pool, for tests and dumps (block ids, reference counts, the free queue); the
  // engine asks occupancy() and the counts above instead.
  const BlockPool& pool() const { return pool_; }

  // Registers an empty sequence. invalid_argument if the id is in use.
  Status add_sequence(SeqId seq);
  // Registers seq with the longest cached prefix of `tokens` in namespace `salt` ("" = public),
  // at block granularity and never the whole of tokens: at most (tokens.size() - 1) / block_size
  // blocks, so the last token is always computed (for its logits). Then reserves blocks for all
  // of tokens (not under a bounded policy: the engine reserves per chunk). Returns the number of
  // cached tokens (table(seq).n_tokens). Transactional: on invalid_argument (id in use, empty
  // tokens) or out_of_memory nothing changes.
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
  // Records that K/V of positions [0, n_pos) are written, in the slots after the last commit
  // (slot = position until H2O evicts). The slots must be reserved. Registers nothing with the
  // prefix cache (n_pos < the positions computed rewinds them).
  void commit(SeqId seq, int n_pos);
  // As commit(seq, tokens.size()), and registers every newly full block with the prefix cache
  // (while slots are positions). tokens: the sequence's ids for positions [0, tokens.size()).
  void commit_and_register(SeqId seq, std::span<const int32_t> tokens);
  // Applies the policy after a commit: WindowKv releases blocks no later query can see;
  // HeavyHitterKv evicts the lowest-scored tokens beyond `keep` (outside the recent window).
  // Fails only with out_of_memory when a shared block must be copied before H2O rewrites it;
  // then nothing changes.
  Status enforce_policy(SeqId seq);
  // Positions computed for seq (== table(seq).n_tokens unless H2O has evicted tokens).
  int n_positions(SeqId seq) const { return state(seq).n_pos; }
  // H2O: per-slot attention accumulated over layers, heads and queries ([capacity] floats; the
  // attention kernel adds to it). nullptr under other policies. Valid until the next reserve.
  float* attention_scores(SeqId seq);
  // Swap preemption. can_swap(): the storage can export its blocks (KvLayout::
  // can_export_blocks()). swap_out copies seq's K/V (and the policy's state of it) to host
  // memory and frees the sequence; swap_in registers seq again from it, with fresh private
  // blocks holding the same bytes (all-or-nothing: out_of_memory changes nothing and leaves
  // `swapped` intact).
  bool can_swap() const { return layout().can_export_blocks(); }
  Result<SwappedKv> swap_out(SeqId seq);
  Status swap_in(SeqId seq, SwappedKv& swapped);
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
  using SeqState = KvSeqState;

  class PolicyOps;  // KvBlockOps over this manager, for the policy's enforce()

  KvCacheManager(std::unique_ptr<KvStorage> storage, std::unique_ptr<PrefixCache> prefix,
                 std::unique_ptr<KvPolicyImpl> policy);
  SeqState& state(SeqId seq);
  const SeqState& state(SeqId seq) const;
  // Logical blocks of s that a write of positions [table.n_tokens, n_tokens) must copy first.
  std::vector<int> blocks_to_copy(const SeqState& s, int n_tokens) const;
  void register_full_blocks(SeqState& s, std::span<const int32_t> tokens);
  void note_peak();
  // pool_.release() plus the storage's hook for blocks that became free.
  void release_block(BlockId id);
  // Registers a new sequence with the policy too (n_pos positions, table capacity in slots).
  void emplace_sequence(SeqId seq, SeqState s);

  std::unique_ptr<KvStorage> storage_;
  std::unique_ptr<PrefixCache> prefix_;
  std::unique_ptr<KvPolicyImpl> policy_;
  BlockPool pool_;
  std::unordered_map<SeqId, SeqState> seqs_;
  int peak_used_ = 0;
  int64_t n_prefix_queries_ = 0, n_query_tokens_ = 0, n_hit_tokens_ = 0, n_cow_copies_ = 0;
};

// Frees a sequence's blocks on every path out of a scope.
class SeqGuard {
 public:
  SeqGuard(KvCacheManager& kv, SeqId seq) : kv_(kv), seq_(seq) {}
  ~SeqGuard() { kv_.free_sequence(seq_); }
  SeqGuard(const SeqGuard&) = delete;
  SeqGuard& operator=(const SeqGuard&) = delete;

 private:
  KvCacheManager& kv_;
  SeqId seq_;
};

}  // namespace kvserve
