#include "kv/kv_cache_manager.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "core/assert.h"

namespace kvserve {

namespace {

// Policies the storage can carry out: H2O moves single tokens' rows between blocks, which a
// K quantized per channel over a whole block (q4) cannot do without requantizing its block.
Status kv_policy_supported(const KvPolicy& policy, const KvLayout& layout) {
  if (std::holds_alternative<HeavyHitterKv>(policy) && layout.k_type == KvType::kQ4) {
    return unsupported(
        "H2O eviction cannot be combined with q4 K (quantized per channel over a block); use "
        "--kv-type-k q8, fp8 or a float type");
  }
  return Status::ok();
}

}  // namespace

Result<std::unique_ptr<KvCacheManager>> KvCacheManager::create(const KvLayout& layout, int n_blocks,
                                                               std::unique_ptr<PrefixCache> prefix,
                                                               const KvPolicy& policy,
                                                               KvCommit commit) {
  KV_RETURN_IF_ERROR(validate_kv_policy(policy));
  KV_RETURN_IF_ERROR(kv_policy_supported(policy, layout));
  KV_ASSIGN_OR_RETURN(auto storage, KvStorage::create(layout, n_blocks, commit));
  if (!prefix) prefix = std::make_unique<NoPrefixCache>();
  return std::unique_ptr<KvCacheManager>(
      new KvCacheManager(std::move(storage), std::move(prefix), policy));
}

KvCacheManager::KvCacheManager(std::unique_ptr<KvStorage> storage,
                               std::unique_ptr<PrefixCache> prefix, const KvPolicy& policy)
    : storage_(std::move(storage)),
      prefix_(std::move(prefix)),
      policy_(policy),
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

Status KvCacheManager::add_sequence(SeqId seq) {
  if (!seqs_.emplace(seq, SeqState{}).second) {
    return invalid_argument("sequence " + std::to_string(seq) + " already exists");
  }
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
  PrefixMatch m =
      prefix_->match(pool_, tokens, bs, max_blocks, salt, std::get_if<WindowKv>(&policy_));
  // Plan: matched blocks at ref 0 leave the free queue, so they no longer count as allocatable.
  int n_matched_idle = 0;
  for (BlockId id : m.blocks) n_matched_idle += id != kNoBlock && pool_.ref_count(id) == 0;
  // A bounded policy reserves chunk by chunk (the engine calls reserve), so a long prompt never
  // holds all its blocks at once.
  const int n_new = kv_policy_bounded(policy_)
                        ? 0
                        : blocks_for_tokens(static_cast<int>(tokens.size()), bs) -
                              static_cast<int>(m.blocks.size());
  if (n_new > pool_.n_blocks_free() - n_matched_idle) {
    return out_of_memory("KV cache full: need " + std::to_string(n_new) + " blocks, " +
                         std::to_string(pool_.n_blocks_free() - n_matched_idle) + " of " +
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
  if (std::holds_alternative<HeavyHitterKv>(policy_)) {
    s.slot_pos.resize(s.n_pos);
    for (int i = 0; i < s.n_pos; ++i) s.slot_pos[i] = i;
    s.score.assign(s.table.blocks.size() * bs, 0.0f);
  }
  const int n_cached = s.table.n_tokens;
  seqs_.emplace(seq, std::move(s));
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
  if (std::holds_alternative<HeavyHitterKv>(policy_)) {
    s.score.resize(t.blocks.size() * block_size(), 0.0f);
  }
  note_peak();
  return Status::ok();
}

void KvCacheManager::commit(SeqId seq, int n_pos) {
  SeqState& s = state(seq);
  const int n_slots = s.table.n_tokens + (n_pos - s.n_pos);
  KV_ASSERT(n_pos >= 0 && n_slots >= 0 && n_slots <= s.table.n_blocks() * block_size());
  if (std::holds_alternative<HeavyHitterKv>(policy_)) {
    s.slot_pos.resize(std::max(n_slots, 0));
    for (int i = s.table.n_tokens; i < n_slots; ++i)
      s.slot_pos[i] = s.n_pos + (i - s.table.n_tokens);
    // Slots rewound (a rejected commit range) keep no score.
    for (int i = n_slots; i < s.table.n_tokens; ++i) s.score[i] = 0.0f;
  }
  s.table.n_tokens = n_slots;
  s.n_pos = n_pos;
  if (static_cast<int>(s.keys.size()) > n_slots / block_size())
    s.keys.resize(n_slots / block_size());
}

void KvCacheManager::commit(SeqId seq, std::span<const int32_t> tokens) {
  commit(seq, static_cast<int>(tokens.size()));
  SeqState& s = state(seq);
  if (!s.compacted) register_full_blocks(s, tokens);
}

float* KvCacheManager::attention_scores(SeqId seq) {
  SeqState& s = state(seq);
  return std::holds_alternative<HeavyHitterKv>(policy_) ? s.score.data() : nullptr;
}

Status KvCacheManager::enforce_policy(SeqId seq) {
  SeqState& s = state(seq);
  if (const auto* w = std::get_if<WindowKv>(&policy_)) {
    release_outside_window(s, *w);
  } else if (const auto* h = std::get_if<HeavyHitterKv>(&policy_)) {
    KV_RETURN_IF_ERROR(evict_heavy_hitters(s, *h));
  }
  return Status::ok();
}

void KvCacheManager::release_outside_window(SeqState& s, const WindowKv& w) {
  // Queries from position n_pos on see [0, sink) and [n_pos - window + 1, ...).
  const int bs = block_size();
  const int first_kept = window_first_block(w, s.n_pos, bs);
  const int first_free = window_sink_blocks(w, bs);
  for (int b = first_free; b < std::min(first_kept, s.table.n_blocks()); ++b) {
    BlockId& id = s.table.blocks[b];
    if (id == kNoBlock) continue;
    release_block(id);
    id = kNoBlock;
    ++n_window_released_;
  }
}

Status KvCacheManager::evict_heavy_hitters(SeqState& s, const HeavyHitterKv& h) {
  const int n = s.table.n_tokens;
  if (n <= h.keep) return Status::ok();
  const int bs = block_size();
  // Victims: the n - keep lowest-scored slots outside the recent window (older first on ties).
  const int recent_from = s.n_pos - h.recent;
  std::vector<int> cand;
  for (int i = 0; i < n; ++i) {
    if (s.slot_pos[i] < recent_from) cand.push_back(i);
  }
  const int n_evict = std::min(n - h.keep, static_cast<int>(cand.size()));
  if (n_evict <= 0) return Status::ok();
  auto lower = [&](int a, int b) {
    return s.score[a] != s.score[b] ? s.score[a] < s.score[b] : s.slot_pos[a] < s.slot_pos[b];
  };
  std::partial_sort(cand.begin(), cand.begin() + n_evict, cand.end(), lower);
  std::vector<char> victim(n, 0);
  for (int i = 0; i < n_evict; ++i) victim[cand[i]] = 1;
  // Holes below the new length are filled by the kept slots above it, in slot order.
  const int new_n = n - n_evict;
  std::vector<int> holes, sources;
  for (int i = 0; i < new_n; ++i) {
    if (victim[i]) holes.push_back(i);
  }
  for (int i = new_n; i < n; ++i) {
    if (!victim[i]) sources.push_back(i);
  }
  KV_ASSERT(holes.size() == sources.size());
  // Blocks about to be rewritten must be private and unkeyed: plan every copy first, so a
  // failed allocation changes nothing.
  std::vector<int> to_copy;
  for (int hole : holes) {
    const int b = hole / bs;
    const BlockId id = s.table.blocks[b];
    if ((pool_.ref_count(id) > 1 || pool_.has_key(id)) &&
        (to_copy.empty() || to_copy.back() != b)) {
      to_copy.push_back(b);
    }
  }
  if (!to_copy.empty()) {
    auto ids = pool_.allocate(static_cast<int>(to_copy.size()));
    if (!ids) return ids.status();
    for (size_t c = 0; c < to_copy.size(); ++c) {
      BlockId& id = s.table.blocks[to_copy[c]];
      storage_->copy_block(id, (*ids)[c]);
      release_block(id);
      id = (*ids)[c];
      ++n_cow_copies_;
    }
  }
  for (size_t i = 0; i < holes.size(); ++i) {
    const int dst = holes[i], src = sources[i];
    storage_->copy_token(s.table.blocks[src / bs], src % bs, s.table.blocks[dst / bs], dst % bs);
    s.score[dst] = s.score[src];
    s.slot_pos[dst] = s.slot_pos[src];
  }
  for (int i = new_n; i < n; ++i) s.score[i] = 0.0f;
  s.slot_pos.resize(new_n);
  s.table.n_tokens = new_n;
  // Blocks past the new end are empty now: release them, tail first.
  const int keep_blocks = blocks_for_tokens(new_n, bs);
  while (s.table.n_blocks() > keep_blocks) {
    release_block(s.table.blocks.back());
    s.table.blocks.pop_back();
  }
  s.score.resize(static_cast<size_t>(s.table.n_blocks()) * bs);
  s.keys.clear();  // slots are no longer positions: nothing more is registered
  s.compacted = true;
  n_h2o_evicted_ += n_evict;
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
  st.n_window_released = n_window_released_;
  st.n_h2o_evicted = n_h2o_evicted_;
  st.n_blocks_used = pool_.n_blocks_used();
  st.n_blocks_cached = pool_.n_blocks_cached();
  st.n_blocks_empty = pool_.n_blocks_free() - pool_.n_blocks_cached();
  return st;
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
