#include "prefix/block_key.h"

namespace kvserve {

Digest namespace_key(HashKind kind, const Digest& model_fingerprint, std::string_view salt) {
  HashStream h(kind);
  h.update_string("kvserve-ns-v1");
  h.update_digest(model_fingerprint);
  h.update_string(salt);
  return h.finish();
}

BlockKey block_key(HashKind kind, const std::optional<BlockKey>& parent,
                   std::span<const int32_t> tokens, const Digest& extra) {
  HashStream h(kind);
  h.update_string("kvserve-block-v1");
  h.update_u64(parent ? 1 : 0);
  if (parent) h.update_digest(*parent);
  h.update_u64(tokens.size());
  for (int32_t t : tokens) h.update_u64(static_cast<uint32_t>(t));
  h.update_digest(extra);
  return h.finish();
}

}  // namespace kvserve
