#include "engine/generator.h"

#include <algorithm>
#include <chrono>

#include "core/assert.h"

#include "prefix/model_fingerprint.h"
#include "prefix/prefix_cache.h"

namespace kvserve {

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

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

Result<std::unique_ptr<Generator>> Generator::create(const Model& model,
                                                     const EngineOptions& opts) {
  const int n_ctx = opts.n_ctx > 0 ? opts.n_ctx : model.config.n_ctx_train;
  if (n_ctx < 1) return invalid_argument("context size must be positive");
  if (opts.prefill_chunk < 1) return invalid_argument("prefill chunk must be positive");
  KV_ASSIGN_OR_RETURN(auto kv, make_kv_cache(model, opts, n_ctx));
  return std::unique_ptr<Generator>(new Generator(model, opts, std::move(kv)));
}

Generator::Generator(const Model& model, const EngineOptions& opts,
                     std::unique_ptr<KvCacheManager> kv)
    : model_(model),
      opts_(opts),
      n_ctx_(opts.n_ctx > 0 ? opts.n_ctx : model.config.n_ctx_train),
      // Bounded memory lets a sequence run past the trained context unless --ctx caps it. The
      // cache holds the policy in effect (opts' or the model's own window).
      max_len_(kv_policy_bounded(kv->policy()) && opts.n_ctx <= 0 ? kUnboundedLength : n_ctx_),
      pool_(opts.n_threads),
      kv_(std::move(kv)),
      runner_(model, kv_->storage(), pool_, kv_->policy()) {}

Status Generator::prefill(SeqId seq, const std::vector<int32_t>& tokens, int pos0,
                          std::vector<float>& logits, bool cacheable) {
  const int n = static_cast<int>(tokens.size()) - pos0;
  KV_ASSERT(kv_->n_positions(seq) == pos0);
  // Without a bounding policy every block is reserved up front, so running out of memory fails
  // before any compute; a bounded sequence reserves chunk by chunk and frees behind itself.
  const KvPolicy& policy = kv_->policy();
  if (!kv_policy_bounded(policy)) KV_RETURN_IF_ERROR(kv_->reserve(seq, pos0 + n));
  const int max_chunk = kv_policy_chunk(policy, kv_->block_size(), opts_.prefill_chunk);
  for (int done = 0; done < n;) {
    const int chunk = std::min(max_chunk, n - done);
    const int slot0 = kv_->table(seq).n_tokens;
    KV_RETURN_IF_ERROR(kv_->reserve(seq, slot0 + chunk));
    Batch batch;
    batch.add(&kv_->table(seq), pos0 + done, tokens.data() + pos0 + done, chunk, false, slot0,
              kv_->attention_scores(seq));
    runner_.forward(batch, logits);
    done += chunk;
    if (cacheable) {
      kv_->commit(seq, std::span<const int32_t>(tokens.data(), pos0 + done));
    } else {
      kv_->commit(seq, pos0 + done);
    }
    KV_RETURN_IF_ERROR(kv_->enforce_policy(seq));
  }
  return Status::ok();
}

Status Generator::validate(const GenerateRequest& req) const {
  const int n_vocab = model_.config.n_vocab;
  if (req.prompt.empty()) return invalid_argument("the prompt is empty");
  for (int32_t t : req.prompt) {
    if (t < 0 || t >= n_vocab) {
      return invalid_argument("token id " + std::to_string(t) + " is out of range [0, " +
                              std::to_string(n_vocab) + ")");
    }
  }
  if (static_cast<int>(req.prompt.size()) > max_len_) {
    return invalid_argument("the prompt has " + std::to_string(req.prompt.size()) +
                            " tokens, more than the context of " + std::to_string(max_len_));
  }
  if (req.n_predict < 0) return invalid_argument("the number of tokens to generate must be >= 0");
  return req.sampling.validate();
}

Status Generator::start(SeqId seq, const GenerateRequest& req, std::vector<float>& logits,
                        GenerateResult& res) {
  auto t0 = std::chrono::steady_clock::now();
  if (req.use_kv_cache) {
    KV_ASSIGN_OR_RETURN(res.n_cached_tokens,
                        kv_->add_sequence_from_prefix(seq, req.prompt, req.cache_salt));
  } else {
    KV_RETURN_IF_ERROR(kv_->add_sequence(seq));
  }
  Status st = prefill(seq, req.prompt, res.n_cached_tokens, logits, req.use_kv_cache);
  if (!st.is_ok()) {
    kv_->free_sequence(seq);
    return st;
  }
  res.prefill_ms = ms_since(t0);
  return Status::ok();
}

Status Generator::decode(SeqId seq, const GenerateRequest& req, Sampler& sampler,
                         std::vector<int32_t> seq_tokens, std::vector<float> logits,
                         GenerateResult& res) {
  const int n_vocab = model_.config.n_vocab;
  auto t1 = std::chrono::steady_clock::now();
  while (static_cast<int>(res.tokens.size()) < req.n_predict) {
    if (req.keep_logits) res.logits.push_back(logits);
    const int32_t next = sampler.sample(logits.data(), n_vocab, seq_tokens);
    res.tokens.push_back(next);
    seq_tokens.push_back(next);
    if (req.on_token && !req.on_token(next)) {
      res.finish_reason = "cancelled";
      break;
    }
    if (model_.is_stop_token(next) && !req.ignore_eos) {
      res.finish_reason = "stop";
      break;
    }
    if (static_cast<int>(res.tokens.size()) == req.n_predict) break;
    if (static_cast<int>(seq_tokens.size()) >= max_len_) break;  // context full: "length"

    if (req.use_kv_cache) {
      KV_RETURN_IF_ERROR(prefill(seq, seq_tokens, static_cast<int>(seq_tokens.size()) - 1, logits));
    } else {
      // Recompute the whole sequence from position 0 into a fresh table.
      const SeqId tmp = next_seq_++;
      KV_RETURN_IF_ERROR(kv_->add_sequence(tmp));
      SeqGuard tmp_guard(*kv_, tmp);
      KV_RETURN_IF_ERROR(prefill(tmp, seq_tokens, 0, logits, false));
    }
    ++res.n_decode_steps;
  }
  res.decode_ms = ms_since(t1);
  return Status::ok();
}

Result<GenerateResult> Generator::generate(const GenerateRequest& req) {
  KV_RETURN_IF_ERROR(validate(req));
  GenerateResult res;
  res.finish_reason = "length";
  Sampler sampler(req.sampling);
  std::vector<float> logits;
  kv_->reset_peak();

  const SeqId seq = next_seq_++;
  KV_RETURN_IF_ERROR(start(seq, req, logits, res));
  SeqGuard guard(*kv_, seq);
  if (!req.use_kv_cache) kv_->free_sequence(seq);  // the baseline keeps nothing between steps
  KV_RETURN_IF_ERROR(decode(seq, req, sampler, req.prompt, std::move(logits), res));
  res.blocks_used_peak = kv_->n_blocks_used_peak();
  return res;
}

Result<std::vector<GenerateResult>> Generator::generate_parallel(
    const GenerateRequest& req, const std::vector<uint64_t>& seeds) {
  KV_RETURN_IF_ERROR(validate(req));
  if (!req.use_kv_cache) return invalid_argument("parallel sampling needs the KV cache");
  GenerateResult base;
  base.finish_reason = "length";
  std::vector<float> logits;
  kv_->reset_peak();
  const SeqId parent = next_seq_++;
  KV_RETURN_IF_ERROR(start(parent, req, logits, base));
  std::vector<SeqId> children;
  {
    SeqGuard parent_guard(*kv_, parent);
    for (size_t i = 0; i < seeds.size(); ++i) {
      children.push_back(next_seq_++);
      Status st = kv_->fork(parent, children.back());
      if (!st.is_ok()) {
        for (SeqId c : children) kv_->free_sequence(c);
        return st;
      }
    }
  }
  std::vector<GenerateResult> out;
  Status st = Status::ok();
  for (size_t i = 0; i < seeds.size(); ++i) {
    SeqGuard child_guard(*kv_, children[i]);
    if (!st.is_ok()) continue;  // free the remaining children
    GenerateRequest r = req;
    r.sampling.seed = seeds[i];
    Sampler sampler(r.sampling);
    GenerateResult res = base;
    st = decode(children[i], r, sampler, req.prompt, logits, res);
    res.blocks_used_peak = kv_->n_blocks_used_peak();
    out.push_back(std::move(res));
  }
  if (!st.is_ok()) return st;
  return out;
}

}  // namespace kvserve
