#include "kv/kv_cache_manager.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "core/assert.h"

namespace kvserve {

Result<std::unique_ptr<KvCacheManager>> KvCacheManager::create(const KvLayout& layout,
                                                               int n_blocks) {
  KV_ASSIGN_OR_RETURN(auto storage, KvStorage::create(layout, n_blocks));
  return std::unique_ptr<KvCacheManager>(new KvCacheManager(std::move(storage)));
}

KvCacheManager::KvCacheManager(std::unique_ptr<KvStorage> storage)
    : storage_(std::move(storage)), pool_(storage_->n_blocks()) {}

Status KvCacheManager::add_sequence(SeqId seq) {
  if (!tables_.emplace(seq, BlockTable{}).second) {
    return invalid_argument("sequence " + std::to_string(seq) + " already exists");
  }
  return Status::ok();
}

int KvCacheManager::blocks_needed(SeqId seq, int n_tokens) const {
  return std::max(0, blocks_for_tokens(n_tokens, block_size()) - table(seq).n_blocks());
}

Status KvCacheManager::reserve(SeqId seq, int n_tokens) {
  const int need = blocks_needed(seq, n_tokens);
  if (need == 0) return Status::ok();
  auto ids = pool_.allocate(need);
  if (!ids) return ids.status();
  BlockTable& t = tables_.at(seq);
  t.blocks.insert(t.blocks.end(), ids->begin(), ids->end());
  peak_used_ = std::max(peak_used_, pool_.n_blocks_used());
  return Status::ok();
}

void KvCacheManager::commit(SeqId seq, int n_tokens) {
  BlockTable& t = tables_.at(seq);
  KV_ASSERT(n_tokens <= t.n_blocks() * block_size());
  t.n_tokens = n_tokens;
}

void KvCacheManager::free_sequence(SeqId seq) {
  auto it = tables_.find(seq);
  if (it == tables_.end()) return;
  pool_.release(it->second.blocks);
  tables_.erase(it);
}

const BlockTable& KvCacheManager::table(SeqId seq) const {
  auto it = tables_.find(seq);
  KV_ASSERT(it != tables_.end());
  return it->second;
}

std::string KvCacheManager::dump() const {
  std::ostringstream os;
  os << pool_.dump() << "\n";
  std::map<SeqId, const BlockTable*> sorted;
  for (const auto& [id, t] : tables_) sorted[id] = &t;
  for (const auto& [id, t] : sorted) {
    os << "seq " << id << ": " << t->n_tokens << " tokens, blocks [";
    for (size_t i = 0; i < t->blocks.size(); ++i) os << (i ? " " : "") << t->blocks[i];
    os << "]\n";
  }
  return os.str();
}

}  // namespace kvserve
