#include "prefix/prefix_cache.h"

#include <algorithm>

#include "prefix/block_key.h"

namespace kvserve {

PrefixMatch PrefixCache::match(const BlockPool& pool, std::span<const int32_t> tokens,
                               int block_size, int max_blocks, std::string_view salt,
                               const WindowKv* window) const {
  PrefixMatch m;
  std::optional<BlockKey> parent;
  const int n_full = std::min(static_cast<int>(tokens.size()) / block_size, max_blocks);
  std::vector<BlockId> found;  // per logical block: the verified cached block or kNoBlock
  for (int i = 0; i < n_full; ++i) {
    const auto blk = tokens.subspan(static_cast<size_t>(i) * block_size, block_size);
    const std::optional<BlockKey> key = key_for(parent, blk, salt);
    if (!key) break;
    const std::optional<BlockId> id = pool.find(*key);
    const bool hit = id && pool.verify(*id, parent, blk);
    if (!hit && !window) break;  // without a window every block of the prefix is needed
    found.push_back(hit ? *id : kNoBlock);
    m.keys.push_back(*key);
    parent = key;
  }
  if (!window) {
    m.blocks = std::move(found);
    return m;
  }
  // Longest n whose visible blocks are all cached: the sink blocks and those from the block
  // holding position n * block_size - window + 1.
  const int sink_blocks = window_sink_blocks(*window, block_size);
  for (int n = static_cast<int>(found.size()); n > 0; --n) {
    const int first = window_first_block(*window, n * block_size, block_size);
    bool ok = true;
    for (int i = 0; i < n && ok; ++i) {
      if (i < sink_blocks || i >= first) ok = found[i] != kNoBlock;
    }
    if (!ok) continue;
    for (int i = 0; i < n; ++i) {
      m.blocks.push_back(i < sink_blocks || i >= first ? found[i] : kNoBlock);
    }
    m.keys.resize(n);
    return m;
  }
  m.keys.clear();
  return m;
}

std::optional<BlockKey> HashPrefixCache::key_for(const std::optional<BlockKey>& parent,
                                                 std::span<const int32_t> block_tokens,
                                                 std::string_view salt) const {
  if (key_fn_) return key_fn_(parent, block_tokens, salt);
  return block_key(kind_, parent, block_tokens, namespace_key(kind_, model_fingerprint_, salt));
}

}  // namespace kvserve
