#include "prefix/prefix_cache.h"

#include <algorithm>

#include "prefix/block_key.h"

namespace kvserve {

PrefixMatch PrefixCache::match(const BlockPool& pool, std::span<const int32_t> tokens,
                               int block_size, int max_blocks, std::string_view salt) const {
  PrefixMatch m;
  std::optional<BlockKey> parent;
  const int n_full = static_cast<int>(tokens.size()) / block_size;
  for (int i = 0; i < std::min(n_full, max_blocks); ++i) {
    const auto blk = tokens.subspan(static_cast<size_t>(i) * block_size, block_size);
    const std::optional<BlockKey> key = key_for(parent, blk, salt);
    if (!key) break;
    const std::optional<BlockId> id = pool.find(*key);
    if (!id || !pool.verify(*id, parent, blk)) break;
    m.blocks.push_back(*id);
    m.keys.push_back(*key);
    parent = key;
  }
  return m;
}

std::optional<BlockKey> HashPrefixCache::key_for(const std::optional<BlockKey>& parent,
                                                 std::span<const int32_t> block_tokens,
                                                 std::string_view salt) const {
  if (key_fn_) return key_fn_(parent, block_tokens, salt);
  return block_key(kind_, parent, block_tokens, namespace_key(kind_, model_fingerprint_, salt));
}

}  // namespace kvserve
