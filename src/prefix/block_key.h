// Content keys of full KV blocks: a chained hash, so a key names a block *and everything before
// it*.
//
//   key(block i) = H("kvserve-block-v1", parent key (or "root"), token ids of block i, extra)
//   extra        = H("kvserve-ns-v1", model fingerprint, cache salt)
//
// The model fingerprint (prefix/model_fingerprint.h) covers the weights, the KV element type and
// the block size, so a key never matches KV made by another model or layout; the salt separates
// tenants (empty salt: the one public namespace). Keys are 128 bits (xxh3) or 256 (SHA-256).
// Pure functions, callable from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "core/hash.h"
#include "kv/block_pool.h"

namespace kvserve {

// The extra key every block of a namespace carries: model fingerprint and tenant salt.
Digest namespace_key(HashKind kind, const Digest& model_fingerprint, std::string_view salt);

// Key of one full block of `tokens` (block_size ids) whose predecessor has key `parent`
// (nullopt for the first block of a sequence).
BlockKey block_key(HashKind kind, const std::optional<BlockKey>& parent,
                   std::span<const int32_t> tokens, const Digest& extra);

}  // namespace kvserve
