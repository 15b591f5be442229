// PrefixCache: the policy that names full KV blocks by content and finds the longest cached
// prefix of a token sequence. The block pool keeps the key map and the blocks; this module only
// computes keys and walks the chain. Variants are types:
//   NoPrefixCache    keeps no keys, never hits (prefix caching off);
//   HashPrefixCache  chained content keys (prefix/block_key.h), xxh3-128 or SHA-256.
// Only the engine loop calls it (through KvCacheManager).
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "core/hash.h"
#include "kv/block_pool.h"
#include "kv/kv_policy.h"

namespace kvserve {

struct PrefixMatch {
  std::vector<BlockId> blocks;  // cached blocks for logical blocks [0, n), verified; kNoBlock
                                // where a window makes a block unnecessary
  std::vector<BlockKey> keys;   // keys of logical blocks [0, n)
};

class PrefixCache {
 public:
  virtual ~PrefixCache() = default;
  virtual const char* name() const = 0;

  // Key of a full block (block_size ids) that follows `parent` (nullopt: first block) in
  // namespace `salt`; nullopt when this cache keeps no keys.
  virtual std::optional<BlockKey> key_for(const std::optional<BlockKey>& parent,
                                          std::span<const int32_t> block_tokens,
                                          std::string_view salt) const = 0;

  // The longest run of cached blocks covering tokens [0, n * block_size), n <= max_blocks.
  // Every hit is verified against the stored parent key and token ids: a collision is a miss.
  // With a window, the prefix of n blocks only needs the blocks that a query at position
  // n * block_size can see (the sinks and the window); the others may be missing (kNoBlock).
  PrefixMatch match(const BlockPool& pool, std::span<const int32_t> tokens, int block_size,
                    int max_blocks, std::string_view salt, const WindowKv* window = nullptr) const;
};

class NoPrefixCache final : public PrefixCache {
 public:
  const char* name() const override { return "off"; }
  std::optional<BlockKey> key_for(const std::optional<BlockKey>&, std::span<const int32_t>,
                                  std::string_view) const override {
    return std::nullopt;
  }
};

class HashPrefixCache final : public PrefixCache {
 public:
  // model_fingerprint: prefix/model_fingerprint.h; goes into every key.
  HashPrefixCache(HashKind kind, const Digest& model_fingerprint)
      : kind_(kind), model_fingerprint_(model_fingerprint) {}
  const char* name() const override { return hash_kind_name(kind_); }
  HashKind kind() const { return kind_; }

  std::optional<BlockKey> key_for(const std::optional<BlockKey>& parent,
                                  std::span<const int32_t> block_tokens,
                                  std::string_view salt) const override;

  // Test hook: replaces the key function (e.g. with a constant, to force collisions).
  using KeyFn =
      std::function<BlockKey(const std::optional<BlockKey>& parent,
                             std::span<const int32_t> block_tokens, std::string_view salt)>;
  void set_key_fn_for_testing(KeyFn fn) { key_fn_ = std::move(fn); }

 private:
  HashKind kind_;
  Digest model_fingerprint_;
  KeyFn key_fn_;
};

}  // namespace kvserve
