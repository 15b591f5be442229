#include "kv/kv_policy_h2o.h"

#include <algorithm>

#include "core/assert.h"
#include "kv/kv_cache_manager.h"

namespace kvserve {

Status HeavyHitterKvPolicy::check_layout(const KvLayout& layout) const {
  if (!layout.can_copy_tokens()) {
    return unsupported(
        "H2O eviction cannot be combined with q4 K (quantized per channel over a block); use "
        "--kv-type-k q8, fp8 or a float type");
  }
  return Status::ok();
}

HeavyHitterKvPolicy::Seq& HeavyHitterKvPolicy::at(SeqId seq) {
  auto it = seqs_.find(seq);
  KV_ASSERT(it != seqs_.end());
  return it->second;
}

const HeavyHitterKvPolicy::Seq& HeavyHitterKvPolicy::at(SeqId seq) const {
  auto it = seqs_.find(seq);
  KV_ASSERT(it != seqs_.end());
  return it->second;
}

bool HeavyHitterKvPolicy::slots_are_positions(SeqId seq) const {
  return !at(seq).compacted;
}

void HeavyHitterKvPolicy::add(SeqId seq, int n_pos, int capacity) {
  Seq s;
  s.slot_pos.resize(n_pos);
  for (int i = 0; i < n_pos; ++i) s.slot_pos[i] = i;
  s.score.assign(capacity, 0.0f);
  seqs_[seq] = std::move(s);
}

void HeavyHitterKvPolicy::fork(SeqId parent, SeqId child) {
  Seq copy = at(parent);
  seqs_[child] = std::move(copy);
}

void HeavyHitterKvPolicy::grow(SeqId seq, int capacity) {
  at(seq).score.resize(capacity, 0.0f);
}

void HeavyHitterKvPolicy::commit(SeqId seq, int old_slots, int n_slots, int old_n_pos) {
  Seq& s = at(seq);
  s.slot_pos.resize(std::max(n_slots, 0));
  for (int i = old_slots; i < n_slots; ++i) s.slot_pos[i] = old_n_pos + (i - old_slots);
  // Slots rewound (a rejected commit range) keep no score.
  for (int i = n_slots; i < old_slots; ++i) s.score[i] = 0.0f;
}

std::unique_ptr<KvPolicySeqState> HeavyHitterKvPolicy::detach(SeqId seq) {
  auto out = std::make_unique<Seq>(std::move(at(seq)));
  seqs_.erase(seq);
  return out;
}

void HeavyHitterKvPolicy::attach(SeqId seq, std::unique_ptr<KvPolicySeqState> state) {
  auto* s = dynamic_cast<Seq*>(state.get());
  KV_ASSERT(s != nullptr);
  seqs_[seq] = std::move(*s);
}

int HeavyHitterKvPolicy::pick_victims(const Seq& s, int n, int n_pos,
                                      std::vector<char>& victim) const {
  const int recent_from = n_pos - h2o_.recent;
  std::vector<int> cand;
  for (int i = 0; i < n; ++i) {
    if (s.slot_pos[i] < recent_from) cand.push_back(i);
  }
  const int n_evict = std::min(n - h2o_.keep, static_cast<int>(cand.size()));
  if (n_evict <= 0) return 0;
  auto lower = [&](int a, int b) {
    return s.score[a] != s.score[b] ? s.score[a] < s.score[b] : s.slot_pos[a] < s.slot_pos[b];
  };
  std::partial_sort(cand.begin(), cand.begin() + n_evict, cand.end(), lower);
  victim.assign(n, 0);
  for (int i = 0; i < n_evict; ++i) victim[cand[i]] = 1;
  return n_evict;
}

Status HeavyHitterKvPolicy::make_private(BlockTable& table, const std::vector<int>& holes,
                                         KvBlockOps& ops) {
  std::vector<int> to_copy;  // holes ascend, so their blocks do too
  for (int hole : holes) {
    const int b = hole / ops.block_size();
    if (!ops.is_private(table.blocks[b]) && (to_copy.empty() || to_copy.back() != b)) {
      to_copy.push_back(b);
    }
  }
  return to_copy.empty() ? Status::ok() : ops.copy_on_write(table, to_copy);
}

Status HeavyHitterKvPolicy::enforce(SeqId seq, BlockTable& table, int n_pos, KvBlockOps& ops) {
  Seq& s = at(seq);
  const int n = table.n_tokens;
  if (n <= h2o_.keep) return Status::ok();
  std::vector<char> victim;
  const int n_evict = pick_victims(s, n, n_pos, victim);
  if (n_evict <= 0) return Status::ok();
  // Holes below the new length are filled by the kept slots above it, in slot order.
  const int bs = ops.block_size(), new_n = n - n_evict;
  std::vector<int> holes, sources;
  for (int i = 0; i < new_n; ++i) {
    if (victim[i]) holes.push_back(i);
  }
  for (int i = new_n; i < n; ++i) {
    if (!victim[i]) sources.push_back(i);
  }
  KV_ASSERT(holes.size() == sources.size());
  // Blocks about to be rewritten must be private and unkeyed; a failed copy changes nothing.
  KV_RETURN_IF_ERROR(make_private(table, holes, ops));
  for (size_t i = 0; i < holes.size(); ++i) {
    const int dst = holes[i], src = sources[i];
    ops.copy_token(table.blocks[src / bs], src % bs, table.blocks[dst / bs], dst % bs);
    s.score[dst] = s.score[src];
    s.slot_pos[dst] = s.slot_pos[src];
  }
  for (int i = new_n; i < n; ++i) s.score[i] = 0.0f;
  s.slot_pos.resize(new_n);
  table.n_tokens = new_n;
  // Blocks past the new end are empty now: release them, tail first.
  while (table.n_blocks() > blocks_for_tokens(new_n, bs)) {
    ops.release(table.blocks.back());
    table.blocks.pop_back();
  }
  s.score.resize(static_cast<size_t>(table.n_blocks()) * bs);
  s.compacted = true;
  n_evicted_ += n_evict;
  return Status::ok();
}

void HeavyHitterKvPolicy::add_stats(KvCacheStats& st) const {
  st.n_h2o_evicted += n_evicted_;
}

}  // namespace kvserve
