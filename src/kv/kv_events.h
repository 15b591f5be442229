// KV events: what happened to the cache's content, named by the chained block keys that name a
// block in every tier and in the router. The block pool records them as its state changes
// (ARCHITECTURE: "the cache tells what happens to it"); the engine drains them once per step
// and hands the batch to every consumer (KV event publisher, tiers' write-back, dashboard).
// Nobody polls the pool. The shapes follow vLLM's KV events (BlockStored / BlockRemoved /
// AllBlocksCleared), with `tier` as their medium.
#pragma once

#include <cstdint>
#include <optional>
#include <variant>
#include <vector>

#include "core/hash.h"

namespace kvserve {

// Where a block lives: the engine's KV pool, or a tier below it (host memory, local disk, a
// remote store shared between instances).
enum class KvTier { kPool, kHost, kDisk, kRemote };
const char* kv_tier_name(KvTier t);  // "pool", "host", "disk", "remote"

// A full block's K/V became reusable under key (a prefix-cache registration, or a tier write).
struct BlockStored {
  Digest key;
  std::optional<Digest> parent;  // the previous block's key; none for a sequence's first block
  std::vector<int32_t> tokens;   // [block_size] the token ids it holds
  KvTier tier = KvTier::kPool;
  bool operator==(const BlockStored&) const = default;
};

// key no longer names a block in tier (evicted for its memory, or overwritten).
struct BlockRemoved {
  Digest key;
  KvTier tier = KvTier::kPool;
  bool operator==(const BlockRemoved&) const = default;
};

// Every key of tier is gone at once (the prefix cache was reset).
struct AllBlocksCleared {
  KvTier tier = KvTier::kPool;
  bool operator==(const AllBlocksCleared&) const = default;
};

using KvEvent = std::variant<BlockStored, BlockRemoved, AllBlocksCleared>;

}  // namespace kvserve
