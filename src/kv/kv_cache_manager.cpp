#include "kv/kv_cache_manager.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "core/assert.h"

namespace kvserve {

// The cache as the policy may change it: each operation keeps pool, storage and the
// copy-on-write counter consistent, as the manager's own paths do.
class KvCacheManager::PolicyOps final : public KvBlockOps {
 public:
  explicit PolicyOps(KvCacheManager& m) : m_(m) {}
  int block_size() const override { return m_.block_size(); }
  bool is_private(BlockId id) const override {
    return m_.pool_.ref_count(id) <= 1 && !m_.pool_.has_key(id);
  }
  Status copy_on_write(BlockTable& table, std::span<const int> logical) override {
    auto ids = m_.pool_.allocate(static_cast<int>(logical.size()));
    if (!ids) return ids.status();
    for (size_t c = 0; c < logical.size(); ++c) {
      BlockId& id = table.blocks[logical[c]];
      m_.storage_->copy_block(id, (*ids)[c]);
      m_.release_block(id);
      id = (*ids)[c];
      ++m_.n_cow_copies_;
    }
    return Status::ok();
  }
  void release(BlockId id) override { m_.release_block(id); }
  void copy_token(BlockId src, int src_slot, BlockId dst, int dst_slot) override {
    m_.storage_->copy_token(src, src_slot, dst, dst_slot);
  }

 private:
  KvCacheManager& m_;
};

Result<std::unique_ptr<KvCacheManager>> KvCacheManager::create(const KvLayout& layout, int n_blocks,
                                                               std::unique_ptr<PrefixCache> prefix,
                                                               const KvPolicy& policy,
                                                               KvCommit commit) {
  KV_RETURN_IF_ERROR(validate_kv_policy(policy));
  auto impl = make_kv_policy(policy);
  KV_RETURN_IF_ERROR(impl->check_layout(layout));
  KV_ASSIGN_OR_RETURN(auto storage, KvStorage::create(layout, n_blocks, commit));
  if (!prefix) prefix = std::make_unique<NoPrefixCache>();
  return std::unique_ptr<KvCacheManager>(
      new KvCacheManager(std::move(storage), std::move(prefix), std::move(impl)));
}

KvCacheManager::KvCacheManager(std::unique_ptr<KvStorage> storage,
                               std::unique_ptr<PrefixCache> prefix,
                               std::unique_ptr<KvPolicyImpl> policy)
    : storage_(std::move(storage)),
      prefix_(std::move(prefix)),
      policy_(std::move(policy)),
      pool_(storage_->n_blocks()) {}

KvCacheManager::SeqState& KvCacheManager::state(SeqId seq) {
  auto it = seqs_.find(seq);
  KV_ASSERT(it != seqs_.end());
  return it->second;
}

const KvCacheManager::SeqState& KvCacheManager::state(SeqId seq) const {
  auto it = seqs_.find(seq);
  KV_ASSERT(it != seqs_.end());
  return it->second;
}

void KvCacheManager::release_block(BlockId id) {
  pool_.release(id);
  // The last reference gone, the block's contents are dead unless cached under a key.
  if (pool_.ref_count(id) == 0) storage_->on_block_freed(id);
}

void KvCacheManager::note_peak() {
  peak_used_ = std::max(peak_used_, pool_.n_blocks_used());
}

void KvCacheManager::emplace_sequence(SeqId seq, SeqState s) {
  policy_->add(seq, s.n_pos, s.table.n_blocks() * block_size());
  seqs_.emplace(seq, std::move(s));
}

Status KvCacheManager::add_sequence(SeqId seq) {
  if (has_sequence(seq)) {
    return invalid_argument("sequence " + std::to_string(seq) + " already exists");
  }
  emplace_sequence(seq, SeqState{});
  return Status::ok();
}

Result<int> KvCacheManager::add_sequence_from_prefix(SeqId seq, std::span<const int32_t> tokens,
                                                     const std::string& salt) {
  if (has_sequence(seq)) {
    return invalid_argument("sequence " + std::to_string(seq) + " already exists");
  }
  if (tokens.empty()) return invalid_argument("no tokens to match");
  const int bs = block_size();
  const int max_blocks = (static_cast<int>(tokens.size()) - 1) / bs;
  PrefixMatch m = prefix_->match(pool_, tokens, bs, max_blocks, salt, policy_->match_window());
  // Plan: matched blocks at ref 0 leave the free queue, so they no longer count as allocatable.
  int n_matched_idle = 0;
  for (BlockId id : m.blocks) n_matched_idle += id != kNoBlock && pool_.ref_count(id) == 0;
  // A bounded policy reserves chunk by chunk (the engine calls reserve), so a long prompt never
  // holds all its blocks at once.
  const int n_new = kv_policy_bounded(policy())
                        ? 0
                        : blocks_for_tokens(static_cast<int>(tokens.size()), bs) -
                              static_cast<int>(m.blocks.size());
  if (n_new > pool_.n_blocks_available() - n_matched_idle) {
    return out_of_memory("KV cache full: need " + std::to_string(n_new) + " blocks, " +
                         std::to_string(pool_.n_blocks_available() - n_matched_idle) + " of " +
                         std::to_string(pool_.n_blocks_total()) + " free");
  }
  // Commit: take the hits first (so allocation cannot evict them), then the fresh blocks.
  for (BlockId id : m.blocks) {
    if (id != kNoBlock) pool_.ref(id);
  }
  auto fresh = pool_.allocate(n_new);
  KV_ASSERT(fresh.is_ok());
  SeqState s;
  s.salt = salt;
  s.table.blocks = m.blocks;
  s.table.blocks.insert(s.table.blocks.end(), fresh->begin(), fresh->end());
  s.table.n_tokens = static_cast<int>(m.blocks.size()) * bs;
  s.keys = std::move(m.keys);
  s.n_pos = s.table.n_tokens;
  const int n_cached = s.table.n_tokens;
  emplace_sequence(seq, std::move(s));
  ++n_prefix_queries_;
  n_query_tokens_ += static_cast<int64_t>(tokens.size());
  n_hit_tokens_ += n_cached;
  note_peak();
  return n_cached;
}

Status KvCacheManager::fork(SeqId parent, SeqId child) {
  if (!has_sequence(parent)) {
    return invalid_argument("fork: no sequence " + std::to_string(parent));
  }
  if (has_sequence(child)) {
    return invalid_argument("sequence " + std::to_string(child) + " already exists");
  }
  SeqState s = state(parent);
  for (BlockId id : s.table.blocks) {
    if (id != kNoBlock) pool_.ref(id);
  }
  seqs_.emplace(child, std::move(s));
  policy_->fork(parent, child);
  return Status::ok();
}

int KvCacheManager::blocks_needed(SeqId seq, int n_tokens) const {
  return std::max(0, blocks_for_tokens(n_tokens, block_size()) - table(seq).n_blocks());
}

std::vector<int> KvCacheManager::blocks_to_copy(const SeqState& s, int n_tokens) const {
  std::vector<int> out;
  const BlockTable& t = s.table;
  const int end = std::min(t.n_blocks(), blocks_for_tokens(n_tokens, block_size()));
  for (int i = t.n_tokens / block_size(); i < end; ++i) {
    const BlockId id = t.blocks[i];
    if (pool_.ref_count(id) > 1 || pool_.has_key(id)) out.push_back(i);
  }
  return out;
}

Status KvCacheManager::reserve(SeqId seq, int n_tokens) {
  SeqState& s = state(seq);
  const std::vector<int> copies =
      n_tokens > s.table.n_tokens ? blocks_to_copy(s, n_tokens) : std::vector<int>{};
  const int need = blocks_needed(seq, n_tokens);
  const int n_copies = static_cast<int>(copies.size());
  if (need + n_copies == 0) return Status::ok();
  auto ids = pool_.allocate(need + n_copies);
  if (!ids) return ids.status();
  BlockTable& t = s.table;
  for (int c = 0; c < n_copies; ++c) {
    const int i = copies[c];
    const BlockId old = t.blocks[i], fresh = (*ids)[need + c];
    storage_->copy_block(old, fresh);
    t.blocks[i] = fresh;
    // The block's key stays with the original; this copy is about to diverge.
    if (static_cast<int>(s.keys.size()) > i) s.keys.resize(i);
    release_block(old);
    ++n_cow_copies_;
  }
  t.blocks.insert(t.blocks.end(), ids->begin(), ids->begin() + need);
  policy_->grow(seq, t.n_blocks() * block_size());
  note_peak();
  return Status::ok();
}

void KvCacheManager::commit(SeqId seq, int n_pos) {
  SeqState& s = state(seq);
  const int n_slots = s.table.n_tokens + (n_pos - s.n_pos);
  KV_ASSERT(n_pos >= 0 && n_slots >= 0 && n_slots <= s.table.n_blocks() * block_size());
  policy_->commit(seq, s.table.n_tokens, n_slots, s.n_pos);
  s.table.n_tokens = n_slots;
  s.n_pos = n_pos;
  if (static_cast<int>(s.keys.size()) > n_slots / block_size())
    s.keys.resize(n_slots / block_size());
}

void KvCacheManager::commit_and_register(SeqId seq, std::span<const int32_t> tokens) {
  commit(seq, static_cast<int>(tokens.size()));
  if (policy_->slots_are_positions(seq)) register_full_blocks(state(seq), tokens);
}

float* KvCacheManager::attention_scores(SeqId seq) {
  KV_ASSERT(has_sequence(seq));
  return policy_->attention_scores(seq);
}

Status KvCacheManager::enforce_policy(SeqId seq) {
  SeqState& s = state(seq);
  PolicyOps ops(*this);
  KV_RETURN_IF_ERROR(policy_->enforce(seq, s.table, s.n_pos, ops));
  // Rows moved: slots are no longer positions, so no key describes them any more.
  if (!policy_->slots_are_positions(seq)) s.keys.clear();
  return Status::ok();
}

void KvCacheManager::register_full_blocks(SeqState& s, std::span<const int32_t> tokens) {
  const int bs = block_size();
  const int n_full = static_cast<int>(tokens.size()) / bs;
  while (static_cast<int>(s.keys.size()) < n_full) {
    const int i = static_cast<int>(s.keys.size());
    const std::optional<BlockKey> parent =
        i > 0 ? std::optional<BlockKey>(s.keys[i - 1]) : std::nullopt;
    const auto blk = tokens.subspan(static_cast<size_t>(i) * bs, bs);
    const std::optional<BlockKey> key = prefix_->key_for(parent, blk, s.salt);
    if (!key) return;  // this cache keeps no keys
    // A duplicate (the same content computed twice) stays unkeyed and is freed on release.
    pool_.set_key(s.table.blocks[i], *key, parent, blk);
    s.keys.push_back(*key);
  }
}

void KvCacheManager::free_sequence(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  const auto& blocks = it->second.table.blocks;
  for (auto b = blocks.rbegin(); b != blocks.rend(); ++b) {
    if (*b != kNoBlock) release_block(*b);
  }
  seqs_.erase(it);
  policy_->free(seq);
}

int SwappedKv::n_blocks() const {
  const auto& b = state.table.blocks;
  return static_cast<int>(b.size() - std::count(b.begin(), b.end(), kNoBlock));
}

Result<SwappedKv> KvCacheManager::swap_out(SeqId seq) {
  if (!has_sequence(seq)) return invalid_argument("swap_out: no sequence " + std::to_string(seq));
  if (!can_swap()) return unsupported("swap preemption cannot export q4 K blocks");
  SwappedKv out;
  out.state = state(seq);
  out.policy_state = policy_->detach(seq);
  const size_t bpb = layout().bytes_per_block();
  out.data.resize(out.n_blocks() * bpb);
  uint8_t* p = out.data.data();
  for (BlockId id : out.state.table.blocks) {
    if (id == kNoBlock) continue;
    storage_->export_block(id, p);
    p += bpb;
  }
  free_sequence(seq);
  return out;
}

Status KvCacheManager::swap_in(SeqId seq, SwappedKv& in) {
  if (has_sequence(seq)) {
    return invalid_argument("sequence " + std::to_string(seq) + " already exists");
  }
  auto ids = pool_.allocate(in.n_blocks());
  if (!ids) return ids.status();
  const size_t bpb = layout().bytes_per_block();
  const uint8_t* p = in.data.data();
  auto fresh = ids->begin();
  for (BlockId& id : in.state.table.blocks) {
    if (id == kNoBlock) continue;
    id = *fresh++;
    storage_->import_block(p, id);
    p += bpb;
  }
  seqs_.emplace(seq, std::move(in.state));
  policy_->attach(seq, std::move(in.policy_state));
  in = SwappedKv{};
  note_peak();
  return Status::ok();
}

const BlockTable& KvCacheManager::table(SeqId seq) const {
  return state(seq).table;
}

KvCacheStats KvCacheManager::stats() const {
  KvCacheStats st;
  st.n_prefix_queries = n_prefix_queries_;
  st.n_query_tokens = n_query_tokens_;
  st.n_hit_tokens = n_hit_tokens_;
  st.n_evictions = pool_.n_evictions();
  st.n_cow_copies = n_cow_copies_;
  policy_->add_stats(st);
  const KvOccupancy o = occupancy();
  st.n_blocks_used = o.used;
  st.n_blocks_cached = o.cached;
  st.n_blocks_empty = o.free;
  return st;
}

KvOccupancy KvCacheManager::occupancy() const {
  KvOccupancy o;
  o.total = pool_.n_blocks_total();
  o.used = pool_.n_blocks_used();
  o.cached = pool_.n_blocks_cached();
  o.free = pool_.n_blocks_available() - o.cached;
  return o;
}

std::string KvCacheManager::dump() const {
  std::ostringstream os;
  os << pool_.dump() << "\n";
  std::map<SeqId, const SeqState*> sorted;
  for (const auto& [id, s] : seqs_) sorted[id] = &s;
  for (const auto& [id, s] : sorted) {
    const BlockTable& t = s->table;
    os << "seq " << id << ": " << t.n_tokens << " tokens, blocks [";
    for (size_t i = 0; i < t.blocks.size(); ++i) os << (i ? " " : "") << t.blocks[i];
    os << "]";
    if (!s->keys.empty()) os << ", " << s->keys.size() << " keyed";
    if (!s->salt.empty()) os << ", salted";
    os << "\n";
  }
  return os.str();
}

}  // namespace kvserve
