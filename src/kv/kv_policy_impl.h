// KvPolicyImpl: the runtime side of a KvPolicy (kv/kv_policy.h holds the configuration value).
// One implementation per policy, each in its own file and owning its own per-sequence state:
//   FullKvPolicy         (kv_policy_full.h)    keeps everything; no state.
//   WindowKvPolicy       (kv_policy_window.h)  releases blocks outside the sinks and the window.
//   HeavyHitterKvPolicy  (kv_policy_h2o.h)     H2O: per-sequence attention scores, evicts rows.
// KvCacheManager holds one, made by make_kv_policy(), and calls its hooks as sequences are
// added, forked, grown, committed, swapped and freed; it never switches on the policy's type.
//
// Scope: an implementation governs the layers that share one block table, which today is every
// layer. Hybrid models (some layers windowed, some full, as in Gemma 3) will get one policy per
// layer group, each group with its own tables, so nothing here assumes it sees all layers: a
// policy speaks only about the table it is handed and the sequence ids it was told about.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "core/status.h"
#include "kv/block_table.h"
#include "kv/kv_policy.h"
#include "kv/kv_storage.h"

namespace kvserve {

using SeqId = int64_t;
struct KvCacheStats;

// What a policy may do to the cache while enforcing itself on one sequence's table. Implemented
// by KvCacheManager, which keeps the pool, the storage and the counters consistent.
class KvBlockOps {
 public:
  virtual int block_size() const = 0;
  // True when block id may be rewritten in place: one reference and no prefix-cache key.
  virtual bool is_private(BlockId id) const = 0;
  // Replaces table.blocks[b] for each b in `logical` (ascending, distinct) by a fresh copy of
  // its contents (copy-on-write), dropping the table's reference to the original. All or
  // nothing: out_of_memory changes nothing.
  virtual Status copy_on_write(BlockTable& table, std::span<const int> logical) = 0;
  // Drops the table's reference to id (at ref 0 the storage forgets uncached contents).
  virtual void release(BlockId id) = 0;
  // Copies one token's K/V rows, every layer, between slots (the storage must allow it:
  // KvLayout::can_copy_tokens()).
  virtual void copy_token(BlockId src, int src_slot, BlockId dst, int dst_slot) = 0;

 protected:
  ~KvBlockOps() = default;
};

// A policy's state for one sequence, detached for swap preemption (opaque to the manager).
struct KvPolicySeqState {
  virtual ~KvPolicySeqState() = default;
};

class KvPolicyImpl {
 public:
  virtual ~KvPolicyImpl() = default;

  // The configuration this implements (kv_policy_bounded(), kv_policy_name()... read it).
  virtual const KvPolicy& config() const = 0;
  // ok, or unsupported when the storage cannot carry the policy out (H2O needs token copies).
  virtual Status check_layout(const KvLayout& layout) const { return Status::ok(); }
  // Under a window, prefix matching needs only the blocks the window (and sinks) can see:
  // the window to match with, or nullptr to need every block.
  virtual const WindowKv* match_window() const { return nullptr; }
  // False once the policy has moved rows of seq so its slots are no longer its positions
  // (nothing more of it may be registered with the prefix cache).
  virtual bool slots_are_positions(SeqId seq) const { return true; }

  // Per-sequence hooks. add: seq starts with n_pos positions in as many slots and table
  // capacity `capacity` slots (0 for an empty sequence). fork: child copies parent's state.
  // grow: the table now has `capacity` slots. commit: slots [0, n_slots) now hold positions,
  // the slots past old_slots holding old_n_pos, old_n_pos + 1, ... in order (n_slots <
  // old_slots: slots rewound). free: seq is gone (no-op for a sequence never added).
  virtual void add(SeqId seq, int n_pos, int capacity) {}
  virtual void fork(SeqId parent, SeqId child) {}
  virtual void grow(SeqId seq, int capacity) {}
  virtual void commit(SeqId seq, int old_slots, int n_slots, int old_n_pos) {}
  virtual void free(SeqId seq) {}
  // Swap preemption: detach removes and returns seq's state (nullptr when there is none);
  // attach gives it back to seq, as it was.
  virtual std::unique_ptr<KvPolicySeqState> detach(SeqId seq) { return nullptr; }
  virtual void attach(SeqId seq, std::unique_ptr<KvPolicySeqState> state) {}

  // Per-slot attention accumulated for seq ([capacity] floats the attention kernel adds to),
  // or nullptr when the policy does not score. Valid until the next grow or enforce.
  virtual float* attention_scores(SeqId seq) { return nullptr; }
  // Applies the policy to seq after a commit: table holds its slots, n_pos its positions
  // computed. May release blocks (entries become kNoBlock), or move rows and shrink the table.
  // Fails only with out_of_memory (a copy-on-write), then nothing changes.
  virtual Status enforce(SeqId seq, BlockTable& table, int n_pos, KvBlockOps& ops) = 0;
  // Adds the policy's engine-wide counters (blocks released, tokens evicted) to st.
  virtual void add_stats(KvCacheStats& st) const {}
};

// The implementation of config (which must be valid: validate_kv_policy).
std::unique_ptr<KvPolicyImpl> make_kv_policy(const KvPolicy& config);

}  // namespace kvserve
