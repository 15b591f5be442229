// Generator: generates one sequence at a time through the paged KV cache (prefill in chunks,
// then one decode step per token), or, with use_kv_cache = false, by recomputing the whole
// sequence at every step (the quadratic baseline, through a scratch table freed each step).
// Used by `kvserve generate`, the decode benchmark and the equivalence tests; the batching
// server builds on the same runner and cache manager.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "engine/model_runner.h"
#include "engine/sampler.h"
#include "kv/kv_cache_manager.h"
#include "model/model.h"

namespace kvserve {

struct EngineOptions {
  int block_size = 16;          // tokens per KV block, 1..256
  DType kv_type = DType::kF16;  // f32, f16 or bf16
  int kv_blocks = 0;            // > 0: exact block count
  size_t kv_bytes = 0;          // > 0 (and kv_blocks == 0): budget in bytes
  int n_ctx = 0;                // context limit; 0 = the model's trained context
  int n_threads = 0;            // 0 = one per core
  int prefill_chunk = 512;      // tokens per prefill forward pass
};

struct GenerateRequest {
  std::vector<int32_t> prompt;
  int n_predict = 16;
  SamplingParams sampling;
  bool ignore_eos = false;
  bool use_kv_cache = true;
  bool keep_logits = false;  // record the logits each token was sampled from (tests)
  // Called with each generated token; return false to stop.
  std::function<bool(int32_t)> on_token;
};

struct GenerateResult {
  std::vector<int32_t> tokens;                // generated ids
  std::string finish_reason;                  // "stop" (EOS), "length", "cancelled"
  double prefill_ms = 0, decode_ms = 0;
  int n_decode_steps = 0;                     // forward passes after the prefill
  int blocks_used_peak = 0;
  std::vector<std::vector<float>> logits;     // [tokens][n_vocab] when keep_logits
};

class Generator {
 public:
  static Result<std::unique_ptr<Generator>> create(const Model& model, const EngineOptions& opts);

  // Fails with invalid_argument for an empty prompt, ids out of range or a prompt over the
  // context, and with out_of_memory when the KV budget cannot hold the sequence. Whatever
  // happens, the sequence's blocks are free again when it returns.
  Result<GenerateResult> generate(const GenerateRequest& req);

  const Model& model() const { return model_; }
  KvCacheManager& kv() { return *kv_; }
  int n_ctx() const { return n_ctx_; }
  ThreadPool& pool() { return pool_; }

 private:
  Generator(const Model& model, const EngineOptions& opts, std::unique_ptr<KvCacheManager> kv);
  // Computes tokens [pos0, pos0 + n) of seq in prefill chunks; logits of the last one.
  Status prefill(SeqId seq, const std::vector<int32_t>& tokens, int pos0, std::vector<float>& logits);

  const Model& model_;
  EngineOptions opts_;
  int n_ctx_;
  ThreadPool pool_;
  std::unique_ptr<KvCacheManager> kv_;
  ModelRunner runner_;
  SeqId next_seq_ = 0;
};

// Blocks for opts: kv_blocks, else kv_bytes / bytes per block, else enough for n_ctx tokens.
Result<int> kv_blocks_for(const KvLayout& layout, const EngineOptions& opts, int n_ctx);
KvLayout kv_layout_for(const ModelConfig& cfg, const EngineOptions& opts);

}  // namespace kvserve
