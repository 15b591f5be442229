#include "kv/kv_cache_manager.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "core/assert.h"

namespace kvserve {

Result<std::unique_ptr<KvCacheManager>> KvCacheManager::create(
    const KvLayout& layout, int n_blocks, std::unique_ptr<PrefixCache> prefix) {
  KV_ASSIGN_OR_RETURN(auto storage, KvStorage::create(layout, n_blocks));
  if (!prefix) prefix = std::make_unique<NoPrefixCache>();
  return std::unique_ptr<KvCacheManager>(new KvCacheManager(std::move(storage), std::move(prefix)));
}

KvCacheManager::KvCacheManager(std::unique_ptr<KvStorage> storage,
                               std::unique_ptr<PrefixCache> prefix)
    : storage_(std::move(storage)), prefix_(std::move(prefix)), pool_(storage_->n_blocks()) {}

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
  PrefixMatch m = prefix_->match(pool_, tokens, bs, max_blocks, salt);
  // Plan: matched blocks at ref 0 leave the free queue, so they no longer count as allocatable.
  int n_matched_idle = 0;
  for (BlockId id : m.blocks) n_matched_idle += pool_.ref_count(id) == 0;
  const int n_new =
      blocks_for_tokens(static_cast<int>(tokens.size()), bs) - static_cast<int>(m.blocks.size());
  if (n_new > pool_.n_blocks_free() - n_matched_idle) {
    return out_of_memory("KV cache full: need " + std::to_string(n_new) + " blocks, " +
                         std::to_string(pool_.n_blocks_free() - n_matched_idle) + " of " +
                         std::to_string(pool_.n_blocks_total()) + " free");
  }
  // Commit: take the hits first (so allocation cannot evict them), then the fresh blocks.
  for (BlockId id : m.blocks) pool_.ref(id);
  auto fresh = pool_.allocate(n_new);
  KV_ASSERT(fresh.is_ok());
  SeqState s;
  s.salt = salt;
  s.table.blocks = m.blocks;
  s.table.blocks.insert(s.table.blocks.end(), fresh->begin(), fresh->end());
  s.table.n_tokens = static_cast<int>(m.blocks.size()) * bs;
  s.keys = std::move(m.keys);
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
  for (BlockId id : s.table.blocks) pool_.ref(id);
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
    pool_.release(old);
    ++n_cow_copies_;
  }
  t.blocks.insert(t.blocks.end(), ids->begin(), ids->begin() + need);
  note_peak();
  return Status::ok();
}

void KvCacheManager::commit(SeqId seq, int n_tokens) {
  SeqState& s = state(seq);
  KV_ASSERT(n_tokens <= s.table.n_blocks() * block_size());
  s.table.n_tokens = n_tokens;
  if (static_cast<int>(s.keys.size()) > n_tokens / block_size())
    s.keys.resize(n_tokens / block_size());
}

void KvCacheManager::commit(SeqId seq, std::span<const int32_t> tokens) {
  commit(seq, static_cast<int>(tokens.size()));
  register_full_blocks(state(seq), tokens);
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
  for (auto b = blocks.rbegin(); b != blocks.rend(); ++b) pool_.release(*b);
  seqs_.erase(it);
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
