// Generator: the offline driver of the one engine (engine/engine_core.h), what vLLM calls LLM.
// It runs requests to completion in the caller's thread: `kvserve generate`, the benchmarks,
// scoring and the equivalence tests use it, while the server drives the same core from a
// thread (EngineLoop). A prompt is prefilled in chunks, then decoded one token per step; with
// EngineOptions::prefix_cache on, it starts from the longest cached prefix of full blocks and
// every block it fills stays cached (docs/design-prefix-cache.md); outputs are the same with the
// cache off. Its engine never preempts: a sequence that runs out of KV blocks fails with
// out_of_memory. Two modes of the same path stay apart from plain generation:
//   - use_kv_cache = false, the quadratic baseline: every step recomputes the whole sequence
//     and keeps no K/V (Request::recompute);
//   - score(): teacher-forced logits, one token per step (SeqSpec::forced).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "engine/engine_core.h"
#include "engine/engine_options.h"
#include "engine/sampler.h"
#include "kv/kv_cache_manager.h"
#include "model/model.h"

namespace kvserve {

struct GenerateRequest {
  std::vector<int32_t> prompt;
  int n_predict = 16;
  SamplingParams sampling;
  bool ignore_eos = false;
  std::vector<std::string> stop;  // stop strings (needs the model's tokenizer)
  bool use_kv_cache = true;
  bool keep_logits = false;  // record the logits each token was sampled from (tests)
  std::string cache_salt;    // prefix-cache namespace (tenant); "" = the public one
  // Called with each generated token; return false to stop.
  std::function<bool(int32_t)> on_token;
  // Called with each piece of text as it becomes safe to show (held back while it could still
  // begin a stop string or is an incomplete UTF-8 character); the pieces add up to the text.
  std::function<void(std::string_view)> on_text;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids
  std::string text;             // their text, cut before a stop string (with a tokenizer)
  std::string finish_reason;    // "stop" (EOS or a stop string), "length", "cancelled"
  double prefill_ms = 0, decode_ms = 0;
  int n_decode_steps = 0;  // forward passes after the first token
  int blocks_used_peak = 0;
  int n_cached_tokens = 0;                 // prompt tokens served from the prefix cache
  std::vector<std::vector<float>> logits;  // [tokens][n_vocab] when keep_logits
};

class Generator {
 public:
  static Result<std::unique_ptr<Generator>> create(const Model& model, const EngineOptions& opts);

  // Fails with invalid_argument for an empty prompt, ids out of range, a prompt over the context
  // or the KV cache, or bad sampling values, and with out_of_memory when the KV budget runs out
  // part-way. Whatever happens, the sequence's blocks are free again when it returns (free or,
  // with the prefix cache, cached-evictable: kv().n_blocks_used() is back to 0).
  Result<GenerateResult> generate(const GenerateRequest& req);
  // Parallel sampling: one continuation per seed, sampled with req.sampling and that seed, all
  // in one batch; with the prefix cache on, the continuations share the prompt's blocks. Each
  // result equals generate() with the same seed. Requires req.use_kv_cache.
  Result<std::vector<GenerateResult>> generate_parallel(const GenerateRequest& req,
                                                        const std::vector<uint64_t>& seeds);
  // Teacher-forced scoring: feeds tokens one at a time through the decode path (quantized /
  // evicted KV read as in generation) and calls on_logits(pos, logits[n_vocab]) with the logits
  // after tokens[0..pos], which predict tokens[pos + 1], for pos in [0, tokens.size() - 1).
  // Private sequence, no prefix cache; its blocks are free again on return, and
  // kv().n_blocks_used_peak() is its peak. invalid_argument for ids out of range, more tokens
  // than the context, or fewer than 2; out_of_memory when the KV budget runs out (the positions
  // before it were reported).
  Status score(const std::vector<int32_t>& tokens,
               const std::function<void(int pos, const float* logits)>& on_logits);

  const Model& model() const { return core_->model(); }
  KvCacheManager& kv() { return core_->kv(); }
  int n_ctx() const { return core_->n_ctx(); }
  // Longest sequence allowed: n_ctx, or unbounded under a memory-bounding policy (kv_policy.h)
  // when no context limit was set.
  int max_len() const { return core_->max_len(); }
  ThreadPool& pool() { return core_->threads(); }

 private:
  explicit Generator(std::unique_ptr<EngineCore> core) : core_(std::move(core)) {}
  // One engine request for req, a sequence per seed.
  std::shared_ptr<Request> make_request(const GenerateRequest& req,
                                        const std::vector<uint64_t>& seeds) const;
  // Steps the core until every sequence of r has ended, calling on_event with each event.
  Status run(const std::shared_ptr<Request>& r, const std::function<void(SeqEvent&)>& on_event);
  Result<std::vector<GenerateResult>> generate_all(const GenerateRequest& req,
                                                   const std::vector<uint64_t>& seeds);

  std::unique_ptr<EngineCore> core_;
};

}  // namespace kvserve
