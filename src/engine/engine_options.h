// EngineOptions: how an engine's KV cache is built (block size, K/V types, budget, policy,
// prefix caching) and how wide its forward passes are, shared by every driver of the engine
// (`kvserve generate`, the server, the benchmarks). The functions turn them into a KV cache.
#pragma once

#include <memory>

#include "core/hash.h"
#include "core/status.h"
#include "kv/kv_cache_manager.h"
#include "kv/kv_policy.h"
#include "model/model.h"

namespace kvserve {

struct EngineOptions {
  int block_size = 16;                      // tokens per KV block, 1..256
  KvType kv_type_k = KvType::kF16;          // K element type (kv/kv_type.h)
  KvType kv_type_v = KvType::kF16;          // V element type
  int kv_blocks = 0;                        // > 0: exact block count
  size_t kv_bytes = 0;                      // > 0 (and kv_blocks == 0): budget in bytes
  int n_ctx = 0;                            // context limit; 0 = the model's trained context
  int n_threads = 0;                        // 0 = one per core
  int prefill_chunk = 512;                  // tokens per prefill forward pass
  bool prefix_cache = true;                 // share full KV blocks across requests by content
  HashKind hash = HashKind::kXxh3_128;      // key hash of the prefix cache
  KvPolicy kv_policy;                       // full, sliding window / sinks, or H2O
  KvCommit kv_commit = KvCommit::kAtStart;  // when KV memory becomes resident (kv/kv_storage.h)
};

// The context limit opts ask for: opts.n_ctx, else the model's trained context.
int context_for(const ModelConfig& cfg, const EngineOptions& opts);
// Blocks for opts: kv_blocks, else kv_bytes / bytes per block, else enough for n_ctx tokens.
// Under a bounded policy: enough for max_seqs sequences at the policy's bound.
Result<int> kv_blocks_for(const KvLayout& layout, const EngineOptions& opts, int n_ctx,
                          int max_seqs = 1);
KvLayout kv_layout_for(const ModelConfig& cfg, const EngineOptions& opts);
// opts.kv_policy, or the model's own sliding window when it declares one and opts asks for none.
KvPolicy effective_kv_policy(const ModelConfig& cfg, const EngineOptions& opts);
// The KV cache an engine runs on: layout and budget from opts, with the prefix cache (keyed by
// the model's fingerprint) when opts.prefix_cache is on.
Result<std::unique_ptr<KvCacheManager>> make_kv_cache(const Model& model, const EngineOptions& opts,
                                                      int n_ctx, int max_seqs = 1);

}  // namespace kvserve
