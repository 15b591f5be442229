#include "engine/engine_options.h"

#include <algorithm>

#include "prefix/model_fingerprint.h"
#include "prefix/prefix_cache.h"

namespace kvserve {

int context_for(const ModelConfig& cfg, const EngineOptions& opts) {
  return opts.n_ctx > 0 ? opts.n_ctx : cfg.n_ctx_train;
}

KvLayout kv_layout_for(const ModelConfig& cfg, const EngineOptions& opts) {
  KvLayout l;
  l.n_layer = cfg.n_layer;
  l.n_head_kv = cfg.n_head_kv;
  l.head_dim = cfg.head_dim;
  l.block_size = opts.block_size;
  l.k_type = opts.kv_type_k;
  l.v_type = opts.kv_type_v;
  return l;
}

Result<int> kv_blocks_for(const KvLayout& layout, const EngineOptions& opts, int n_ctx,
                          int max_seqs) {
  if (layout.block_size < 1 || layout.block_size > 256) {
    return invalid_argument("--block-size must be in [1, 256], got " +
                            std::to_string(layout.block_size));
  }
  if (opts.kv_blocks > 0) return opts.kv_blocks;
  if (opts.kv_blocks < 0) return invalid_argument("--kv-blocks must be positive");
  if (opts.kv_bytes > 0) {
    const size_t n = opts.kv_bytes / layout.bytes_per_block();
    if (n < 1) {
      return invalid_argument("KV budget " + format_bytes(static_cast<double>(opts.kv_bytes)) +
                              " is smaller than one block (" +
                              format_bytes(static_cast<double>(layout.bytes_per_block())) + ")");
    }
    if (n > (1u << 30)) return invalid_argument("KV budget too large");
    return static_cast<int>(n);
  }
  if (kv_policy_bounded(opts.kv_policy)) {
    // A bounded sequence never holds more than this, whatever its length.
    const int per_seq =
        kv_policy_seq_blocks(opts.kv_policy, layout.block_size, opts.prefill_chunk, n_ctx);
    return per_seq * std::max(1, max_seqs);
  }
  return blocks_for_tokens(n_ctx, layout.block_size);
}

KvPolicy effective_kv_policy(const ModelConfig& cfg, const EngineOptions& opts) {
  if (std::holds_alternative<FullKv>(opts.kv_policy) && cfg.sliding_window > 0) {
    return WindowKv{cfg.sliding_window, 0};  // the model's own (Mistral-style) window
  }
  return opts.kv_policy;
}

Result<std::unique_ptr<KvCacheManager>> make_kv_cache(const Model& model, const EngineOptions& opts,
                                                      int n_ctx, int max_seqs) {
  EngineOptions o = opts;
  o.kv_policy = effective_kv_policy(model.config, opts);
  const KvLayout layout = kv_layout_for(model.config, o);
  KV_ASSIGN_OR_RETURN(int n_blocks, kv_blocks_for(layout, o, n_ctx, max_seqs));
  std::unique_ptr<PrefixCache> prefix;
  const std::string fp_policy = kv_policy_bounded(o.kv_policy) ? kv_policy_name(o.kv_policy) : "";
  if (opts.prefix_cache) {
    prefix = std::make_unique<HashPrefixCache>(o.hash,
                                               model_fingerprint(model, layout, o.hash, fp_policy));
  } else {
    prefix = std::make_unique<NoPrefixCache>();
  }
  return KvCacheManager::create(layout, n_blocks, std::move(prefix), o.kv_policy, o.kv_commit);
}

}  // namespace kvserve
