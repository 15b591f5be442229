#include "engine/engine_core.h"

#include <algorithm>

#include "core/assert.h"
#include "engine/k_smoothing.h"

namespace kvserve {

namespace {

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

int max_len_for(const EngineCoreOptions& opts, int n_ctx) {
  return opts.max_len > 0 ? opts.max_len : n_ctx;
}

}  // namespace

Result<std::unique_ptr<EngineCore>> EngineCore::create(const Model& model,
                                                       const EngineCoreOptions& opts) {
  const int n_ctx = context_for(model.config, opts.engine);
  if (n_ctx < 1) return invalid_argument("context size must be positive");
  if (opts.sched.max_batch_tokens < 1) return invalid_argument("--max-batch-tokens must be >= 1");
  if (opts.sched.max_seqs < 1) return invalid_argument("--max-seqs must be >= 1");
  KV_ASSIGN_OR_RETURN(auto kv, make_kv_cache(model, opts.engine, n_ctx, opts.kv_seqs));
  return std::unique_ptr<EngineCore>(new EngineCore(model, opts, n_ctx, std::move(kv)));
}

EngineCore::EngineCore(const Model& model, const EngineCoreOptions& opts, int n_ctx,
                       std::unique_ptr<KvCacheManager> kv)
    : model_(model),
      opts_(opts),
      n_ctx_(n_ctx),
      max_len_(max_len_for(opts, n_ctx)),
      pool_(opts.engine.n_threads),
      kv_(std::move(kv)),
      runner_(model, kv_->storage(), pool_, kv_->policy(),
              k_smoothing_for(model, kv_->layout(), kv_->policy())),
      scheduler_(*kv_, opts.sched),
      output_(model, max_len_),
      block_size_(kv_->block_size()),
      n_blocks_total_(kv_->n_blocks_total()),
      watermark_blocks_(scheduler_.watermark_blocks()) {
  publish();
}

Status EngineCore::validate_prompt(const std::vector<int32_t>& prompt) const {
  const int n_vocab = model_.config.n_vocab;
  if (prompt.empty()) return invalid_argument("the prompt is empty");
  for (int32_t t : prompt) {
    if (t < 0 || t >= n_vocab) {
      return invalid_argument("token id " + std::to_string(t) + " is out of range [0, " +
                              std::to_string(n_vocab) + ")");
    }
  }
  if (static_cast<int>(prompt.size()) > max_len_) {
    return invalid_argument("the prompt has " + std::to_string(prompt.size()) +
                            " tokens, more than the context of " + std::to_string(max_len_));
  }
  return Status::ok();
}

Status EngineCore::validate(const SeqSpec& spec) const {
  KV_RETURN_IF_ERROR(validate_prompt(spec.prompt));
  // Constants copied at construction, and the policy, fixed when the cache was made: the KV
  // state itself belongs to the engine thread.
  const int n = static_cast<int>(spec.prompt.size());
  const int need =
      kv_policy_seq_blocks(kv_->policy(), block_size_, opts_.sched.max_batch_tokens, n + 1);
  if (need + watermark_blocks_ > n_blocks_total_) {
    return invalid_argument("the prompt has " + std::to_string(n) +
                            " tokens, more than the KV cache can hold");
  }
  if (spec.max_tokens < 0) return invalid_argument("max_tokens must be >= 0");
  if (spec.n_logprobs > 20) return invalid_argument("logprobs must be <= 20");
  if (!spec.forced.empty() && static_cast<size_t>(spec.max_tokens) > spec.forced.size()) {
    return invalid_argument("max_tokens exceeds the forced tokens");
  }
  return spec.sampling.validate();
}

void EngineCore::add(const std::shared_ptr<Request>& req) {
  ++stats_.requests_total;
  std::vector<std::unique_ptr<Sequence>> group;  // siblings: the n samples of one prompt
  auto flush = [&] {
    if (!group.empty()) scheduler_.add_siblings(std::move(group));
    group.clear();
  };
  for (const SeqSpec& spec : req->seqs) {
    stats_.prompt_tokens_total += static_cast<int64_t>(spec.prompt.size());
    auto seq = std::make_unique<Sequence>(next_seq_++, req, &spec);
    if (spec.max_tokens == 0) {
      Sequence* s = seq.get();
      scheduler_.add(std::move(seq));
      finish(s, "length");
      continue;
    }
    if (!group.empty() && group.front()->spec->prompt != spec.prompt) flush();
    group.push_back(std::move(seq));
  }
  flush();
  publish();
}

void EngineCore::sweep_cancelled() {
  for (Sequence* s : scheduler_.all()) {
    if (s->request->channel->cancelled()) finish(s, "cancelled");
  }
}

void EngineCore::finish_refused() {
  if (Sequence* u = scheduler_.take_unfittable()) {
    if (opts_.sched.preemption == PreemptionMode::kNone) {
      finish(u, "error",
             "KV cache full: the sequence needs more blocks than the cache has (" +
                 std::to_string(n_blocks_total_) + ")");
    } else {
      finish(u, "length");
    }
  }
  for (Sequence* s : scheduler_.take_failed()) finish(s, "error", s->failure.message());
}

bool EngineCore::step() {
  sweep_cancelled();
  std::vector<ScheduledChunk> plan = scheduler_.schedule();
  finish_refused();
  // A sequence failed during schedule() is not in the plan, but others may still be.
  if (plan.empty()) {
    publish();
    return false;
  }
  const Batch batch = build_batch(plan);
  runner_.forward(batch, logits_);
  const std::vector<ForkedSeq> forked = scheduler_.commit(plan);
  ++stats_.steps_total;
  stats_.batch_tokens_total += batch.n_rows();
  sample_and_report(plan, forked);
  publish();
  return true;
}

Batch EngineCore::build_batch(const std::vector<ScheduledChunk>& plan) {
  Batch batch;
  for (const auto& c : plan) {
    // Slots follow the table (H2O compacts them); positions follow the tokens.
    const SeqId id = c.seq->id;
    batch.add(&kv_->table(id), c.pos0, c.seq->tokens.data() + c.pos0, c.n_tokens, false,
              kv_->table(id).n_tokens, kv_->attention_scores(id));
  }
  return batch;
}

void EngineCore::sample_and_report(const std::vector<ScheduledChunk>& plan,
                                   const std::vector<ForkedSeq>& forked) {
  const size_t n_vocab = model_.config.n_vocab;
  // A forked sibling samples from a copy of its leader's row: the sampler edits rows in place.
  forked_logits_.resize(forked.size() * n_vocab);
  for (size_t k = 0; k < forked.size(); ++k) {
    const float* row = logits_.data() + forked[k].plan_index * n_vocab;
    std::copy(row, row + n_vocab, forked_logits_.data() + k * n_vocab);
  }
  struct Row {
    Sequence* seq;
    float* logits;  // [n_vocab]
  };
  std::vector<Row> rows;
  for (size_t i = 0; i < plan.size(); ++i) {
    if (plan[i].samples()) rows.push_back({plan[i].seq, logits_.data() + i * n_vocab});
  }
  for (size_t k = 0; k < forked.size(); ++k) {
    rows.push_back({forked[k].seq, forked_logits_.data() + k * n_vocab});
  }
  // Choosing (a pass over the vocabulary per row, more with logprobs) runs over the pool; the
  // tokens are then appended and reported in order.
  chosen_.resize(rows.size());
  pool_.parallel_for(static_cast<int64_t>(rows.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      chosen_[i] = choose_token(*rows[i].seq, rows[i].logits, static_cast<int>(n_vocab));
    }
  });
  for (size_t i = 0; i < rows.size(); ++i) process_output(*rows[i].seq, std::move(chosen_[i]));
}

void EngineCore::observe_latency(Sequence& seq) {
  const auto now = Clock::now();
  if (seq.n_generated() == 1) {
    stats_.time_to_first_token.observe(seconds(now - seq.request->arrival));
  } else {
    stats_.inter_token_latency.observe(seconds(now - seq.last_token_time));
  }
  seq.last_token_time = now;
  ++stats_.generated_tokens_total;
}

void EngineCore::process_output(Sequence& seq, ChosenToken c) {
  if (seq.pad) {  // static batching's finished row: computed like the others, never sent
    seq.tokens.push_back(c.token);
    if (seq.n_known() >= max_len_) scheduler_.finish(&seq);
    return;
  }
  const std::string reason = output_.append(seq, c);
  observe_latency(seq);
  seq.request->channel->push(output_.token_event(seq, std::move(c), !reason.empty()));
  if (!reason.empty()) finish(&seq, reason, {}, true);
}

void EngineCore::finish(Sequence* seq, const std::string& reason, const std::string& error,
                        bool completed) {
  SeqEvent e = OutputProcessor::final_event(*seq, reason, error);
  std::shared_ptr<Request> req = seq->request;
  if (completed)
    scheduler_.retire(seq);  // frees the blocks now (or at its static batch's end)
  else
    scheduler_.finish(seq);  // frees the blocks now; seq is gone
  if (on_finish_) on_finish_();
  req->channel->push(std::move(e));
}

void EngineCore::finish_all(const std::string& reason) {
  for (Sequence* s : scheduler_.all()) finish(s, reason);
  publish();
}

void EngineCore::update_stats(const KvOccupancy& o, const KvCacheStats& ks) {
  stats_.kv_blocks_total = o.total;
  stats_.kv_blocks_used = o.used;
  stats_.kv_blocks_free = o.free;
  stats_.kv_blocks_cached = o.cached;
  stats_.prefix_cache_queries_total = ks.n_query_tokens;
  stats_.prefix_cache_hits_total = ks.n_hit_tokens;
  stats_.seqs_running = scheduler_.n_running_requests();
  stats_.seqs_waiting = scheduler_.n_waiting();
  stats_.preemptions_total = scheduler_.n_preemptions();
  stats_.swapped_out_total = scheduler_.n_swapped_out();
  stats_.swap_bytes = static_cast<int64_t>(scheduler_.swap_bytes_used());
}

void EngineCore::add_event_listener(EventListener f) {
  listeners_.push_back(std::move(f));
  kv_->set_event_recording(true);
}

void EngineCore::reset_prefix_cache() {
  kv_->reset_prefix_cache();
  publish();
}

std::shared_ptr<const CacheSnapshot> EngineCore::snapshot() const {
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  return snapshot_;
}

CacheSnapshot EngineCore::make_snapshot(const KvOccupancy& o, const KvCacheStats& ks) const {
  CacheSnapshot snap;
  snap.step = stats_.steps_total.load();
  snap.taken = Clock::now();
  snap.tiers.push_back({KvTier::kPool, o.total, o.used, o.cached, o.free,
                        kv_->layout().bytes_per_block(), ks.n_query_tokens, ks.n_hit_tokens});
  const int n_running = scheduler_.n_running_requests();  // all() lists no padding rows
  const std::vector<Sequence*> seqs = scheduler_.all();
  for (size_t i = 0; i < seqs.size(); ++i) {
    const Sequence& s = *seqs[i];
    snap.seqs.push_back({s.id, s.spec->index, static_cast<int>(i) < n_running, s.n_prompt,
                         s.n_known(), s.n_computed, s.n_cached, s.n_preemptions});
  }
  return snap;
}

void EngineCore::publish() {
  const KvOccupancy o = kv_->occupancy();
  const KvCacheStats ks = kv_->stats();
  update_stats(o, ks);
  if (!listeners_.empty()) {
    const std::vector<KvEvent> events = kv_->take_events();
    if (!events.empty()) {
      for (const auto& f : listeners_) f(events);
    }
  }
  auto snap = std::make_shared<const CacheSnapshot>(make_snapshot(o, ks));
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  snapshot_ = std::move(snap);
}

}  // namespace kvserve
