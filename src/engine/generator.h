// Generator: generates one sequence at a time through the paged KV cache (prefill in chunks,
// then one decode step per token), or, with use_kv_cache = false, by recomputing the whole
// sequence at every step (the quadratic baseline, through a scratch table freed each step).
// With EngineOptions::prefix_cache on, a prompt starts from the longest cached prefix of full
// blocks (docs/design-prefix-cache.md) and every block it fills, generated tokens included,
// stays cached for later requests; outputs are the same as with the cache off.
// Used by `kvserve generate`, the decode benchmark and the equivalence tests; the batching
// server builds on the same runner and cache manager.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/hash.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "engine/model_runner.h"
#include "engine/sampler.h"
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

struct GenerateRequest {
  std::vector<int32_t> prompt;
  int n_predict = 16;
  SamplingParams sampling;
  bool ignore_eos = false;
  bool use_kv_cache = true;
  bool keep_logits = false;  // record the logits each token was sampled from (tests)
  std::string cache_salt;    // prefix-cache namespace (tenant); "" = the public one
  // Called with each generated token; return false to stop.
  std::function<bool(int32_t)> on_token;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids
  std::string finish_reason;    // "stop" (EOS), "length", "cancelled"
  double prefill_ms = 0, decode_ms = 0;
  int n_decode_steps = 0;  // forward passes after the prefill
  int blocks_used_peak = 0;
  int n_cached_tokens = 0;                 // prompt tokens served from the prefix cache
  std::vector<std::vector<float>> logits;  // [tokens][n_vocab] when keep_logits
};

class Generator {
 public:
  static Result<std::unique_ptr<Generator>> create(const Model& model, const EngineOptions& opts);

  // Fails with invalid_argument for an empty prompt, ids out of range or a prompt over the
  // context, and with out_of_memory when the KV budget cannot hold the sequence. Whatever
  // happens, the sequence's blocks are free again when it returns (free or, with the prefix
  // cache, cached-evictable: pool().n_blocks_used() is back to 0).
  Result<GenerateResult> generate(const GenerateRequest& req);
  // Parallel sampling: one prefill of req.prompt, then one continuation per seed, each forked
  // from the prompt's blocks (shared, copy-on-write) and sampled with req.sampling and that
  // seed. Each result equals generate() with the same seed. Requires req.use_kv_cache.
  Result<std::vector<GenerateResult>> generate_parallel(const GenerateRequest& req,
                                                        const std::vector<uint64_t>& seeds);
  // Teacher-forced scoring (src/engine/score.cpp): feeds tokens one at a time through the
  // decode step of generate() (quantized / evicted KV read as in generation) and calls
  // on_logits(pos, logits[n_vocab]) with the logits after tokens[0..pos], which predict
  // tokens[pos + 1], for pos in [0, tokens.size() - 1). Fresh private sequence, no prefix cache;
  // its blocks are free again on return, and kv().n_blocks_used_peak() is its peak. Fails as
  // generate() does for a prompt of these tokens (out of range, over the context), and with
  // invalid_argument for fewer than 2 tokens.
  Status score(const std::vector<int32_t>& tokens,
               const std::function<void(int pos, const float* logits)>& on_logits);

  const Model& model() const { return model_; }
  KvCacheManager& kv() { return *kv_; }
  int n_ctx() const { return n_ctx_; }
  // Longest sequence allowed: n_ctx, or unbounded under a memory-bounding policy (kv_policy.h)
  // when no context limit was set.
  int max_len() const { return max_len_; }
  ThreadPool& pool() { return pool_; }

 private:
  Generator(const Model& model, const EngineOptions& opts, std::unique_ptr<KvCacheManager> kv);
  Status validate(const GenerateRequest& req) const;
  // Computes tokens [pos0, tokens.size()) of seq in prefill chunks; logits of the last one.
  // cacheable: register full blocks with the prefix cache as they fill.
  Status prefill(SeqId seq, const std::vector<int32_t>& tokens, int pos0,
                 std::vector<float>& logits, bool cacheable = true);
  // Adds seq for req.prompt (from the prefix cache when on) and prefills it; fills logits,
  // res.prefill_ms and res.n_cached_tokens. seq is registered only on success.
  Status start(SeqId seq, const GenerateRequest& req, std::vector<float>& logits,
               GenerateResult& res);
  // Samples and decodes until a stop; seq (kv-cache mode) holds seq_tokens minus the last.
  Status decode(SeqId seq, const GenerateRequest& req, Sampler& sampler,
                std::vector<int32_t> seq_tokens, std::vector<float> logits, GenerateResult& res);

  const Model& model_;
  EngineOptions opts_;
  static constexpr int kUnboundedLength = 1 << 30;
  int n_ctx_;
  int max_len_;
  ThreadPool pool_;
  std::unique_ptr<KvCacheManager> kv_;
  ModelRunner runner_;
  SeqId next_seq_ = 0;
};

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
