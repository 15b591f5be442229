// HeavyHitterKvPolicy: H2O. Each sequence keeps at most `keep` tokens: the `recent` newest plus
// those with the most attention accumulated so far (the attention kernel adds each query's
// weights to attention_scores()). enforce() evicts the lowest-scored others by moving kept rows
// into the evicted slots, so a sequence's slots stop being its positions (slot_pos records
// which position each slot holds). The per-sequence scores and slot map live here only.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "kv/kv_policy_impl.h"

namespace kvserve {

class HeavyHitterKvPolicy final : public KvPolicyImpl {
 public:
  explicit HeavyHitterKvPolicy(const HeavyHitterKv& h) : h2o_(h), config_(h) {}

  const KvPolicy& config() const override { return config_; }
  // Moving single tokens' rows needs rows that stand alone (not q4 K).
  Status check_layout(const KvLayout& layout) const override;
  bool slots_are_positions(SeqId seq) const override;

  void add(SeqId seq, int n_pos, int capacity) override;
  void fork(SeqId parent, SeqId child) override;
  void grow(SeqId seq, int capacity) override;
  void commit(SeqId seq, int old_slots, int n_slots, int old_n_pos) override;
  void free(SeqId seq) override { seqs_.erase(seq); }
  std::unique_ptr<KvPolicySeqState> detach(SeqId seq) override;
  void attach(SeqId seq, std::unique_ptr<KvPolicySeqState> state) override;

  float* attention_scores(SeqId seq) override { return at(seq).score.data(); }
  Status enforce(SeqId seq, BlockTable& table, int n_pos, KvBlockOps& ops) override;
  void add_stats(KvCacheStats& st) const override;

  // Sequences with state here (tests: state leaves with its sequence).
  int n_sequences() const { return static_cast<int>(seqs_.size()); }
  // Position held by each slot of seq ([n_slots]).
  const std::vector<int>& slot_positions(SeqId seq) const { return at(seq).slot_pos; }

 private:
  struct Seq : KvPolicySeqState {
    std::vector<float> score;   // [capacity] accumulated attention per slot
    std::vector<int> slot_pos;  // [n_slots] position held by each slot
    bool compacted = false;     // rows have moved: slots are no longer positions
  };

  Seq& at(SeqId seq);
  const Seq& at(SeqId seq) const;
  // Marks the n_evict lowest-scored slots among [0, n) outside the recent window (older first
  // on ties): victim[n], returns how many were marked.
  int pick_victims(const Seq& s, int n, int n_pos, std::vector<char>& victim) const;
  // Copies the blocks holding `holes` that are shared or cached, so they can be rewritten.
  static Status make_private(BlockTable& table, const std::vector<int>& holes, KvBlockOps& ops);

  HeavyHitterKv h2o_;
  KvPolicy config_;
  std::unordered_map<SeqId, Seq> seqs_;
  int64_t n_evicted_ = 0;  // tokens evicted, engine-wide
};

}  // namespace kvserve
