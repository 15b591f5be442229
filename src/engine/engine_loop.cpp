#include "engine/engine_loop.h"

#include <algorithm>
#include <cmath>

#include "core/assert.h"

namespace kvserve {

namespace {

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Bytes at the end of s that could begin one of the stop strings (so must not be sent yet).
size_t stop_holdback(const std::string& s, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const auto& stop : stops) {
    for (size_t k = std::min(stop.size() - 1, s.size()); k > hold; --k) {
      if (s.compare(s.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  return hold;
}

// Bytes of an incomplete UTF-8 character at the end of s.
size_t utf8_incomplete_tail(const std::string& s) {
  for (size_t back = 1; back <= std::min<size_t>(3, s.size()); ++back) {
    const auto c = static_cast<uint8_t>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const size_t len = (c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : (c >= 0xC0) ? 2 : 1;
    return len > back ? back : 0;
  }
  return 0;
}

// Log-softmax of the model's raw logits: the distribution before the repetition penalty,
// temperature and truncation (top-k/p, min-p) shape what the sampler draws from. This is what
// vLLM returns by default (logprobs_mode=raw_logprobs).
struct LogSoftmax {
  float mx = 0, log_z = 0;
  float operator()(float x) const { return x - mx - log_z; }
};

LogSoftmax log_softmax(const float* logits, int n_vocab) {
  LogSoftmax ls;
  ls.mx = logits[0];
  for (int i = 1; i < n_vocab; ++i) ls.mx = std::max(ls.mx, logits[i]);
  double sum = 0;
  for (int i = 0; i < n_vocab; ++i) sum += std::exp(logits[i] - ls.mx);
  ls.log_z = static_cast<float>(std::log(sum));
  return ls;
}

// The k most likely tokens with their log-probabilities, best first (lowest id on ties).
std::vector<std::pair<int32_t, float>> top_k_logprobs(const float* logits, int n_vocab, int k,
                                                      const LogSoftmax& ls) {
  std::vector<int32_t> ids(n_vocab);
  for (int i = 0; i < n_vocab; ++i) ids[i] = i;
  k = std::min(k, n_vocab);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  std::vector<std::pair<int32_t, float>> top;
  for (int i = 0; i < k; ++i) top.push_back({ids[i], ls(logits[ids[i]])});
  return top;
}

// Appends token t's text to seq.text; true when a stop string now appears (the text is cut
// before it). A match must end in the new text, so earlier text is searched only as far back
// as a stop string could reach.
bool append_text(Sequence& seq, const Tokenizer& tok, int32_t t) {
  const size_t old = seq.text.size();
  seq.text += tok.decode_token(seq.tokens[seq.tokens.size() - 2], t);
  size_t cut = std::string::npos;
  for (const auto& stop : seq.spec->stop) {
    if (stop.empty()) continue;
    const size_t from = old >= stop.size() ? old - stop.size() + 1 : 0;
    cut = std::min(cut, seq.text.find(stop, from));
  }
  if (cut == std::string::npos) return false;
  seq.text.resize(cut);
  return true;
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) {
  s_.bounds = std::move(bounds);
  s_.buckets.assign(s_.bounds.size(), 0);
}

void Histogram::observe(double v) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < s_.bounds.size(); ++i) {
    if (v <= s_.bounds[i]) {
      ++s_.buckets[i];
      break;
    }
  }
  s_.sum += v;
  ++s_.count;
}

Histogram::Snapshot Histogram::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  Snapshot out = s_;
  for (size_t i = 1; i < out.buckets.size(); ++i) out.buckets[i] += out.buckets[i - 1];
  return out;
}

Result<std::unique_ptr<EngineLoop>> EngineLoop::create(const Model& model,
                                                       const EngineLoopOptions& opts) {
  const int n_ctx = opts.engine.n_ctx > 0 ? opts.engine.n_ctx : model.config.n_ctx_train;
  if (n_ctx < 1) return invalid_argument("context size must be positive");
  if (opts.sched.max_batch_tokens < 1) return invalid_argument("--max-batch-tokens must be >= 1");
  if (opts.sched.max_seqs < 1) return invalid_argument("--max-seqs must be >= 1");
  if (opts.max_queue < 0) return invalid_argument("--max-queue must be >= 0");
  KV_ASSIGN_OR_RETURN(auto kv, make_kv_cache(model, opts.engine, n_ctx, opts.sched.max_seqs));
  return std::unique_ptr<EngineLoop>(new EngineLoop(model, opts, n_ctx, std::move(kv)));
}

EngineLoop::EngineLoop(const Model& model, const EngineLoopOptions& opts, int n_ctx,
                       std::unique_ptr<KvCacheManager> kv)
    : model_(model),
      opts_(opts),
      n_ctx_(n_ctx),
      pool_(opts.engine.n_threads),
      kv_(std::move(kv)),
      runner_(model, kv_->storage(), pool_, kv_->policy()),
      scheduler_(*kv_, opts.sched),
      block_size_(kv_->block_size()),
      n_blocks_total_(kv_->pool().n_blocks_total()),
      watermark_blocks_(scheduler_.watermark_blocks()) {
  update_stats();
  thread_ = std::thread([this] { run(); });
}

EngineLoop::~EngineLoop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

Status EngineLoop::validate(const SeqSpec& spec) const {
  const int n_vocab = model_.config.n_vocab;
  if (spec.prompt.empty()) return invalid_argument("the prompt is empty");
  for (int32_t t : spec.prompt) {
    if (t < 0 || t >= n_vocab) {
      return invalid_argument("token id " + std::to_string(t) + " is out of range [0, " +
                              std::to_string(n_vocab) + ")");
    }
  }
  const int n = static_cast<int>(spec.prompt.size());
  if (n > n_ctx_) {
    return invalid_argument("the prompt has " + std::to_string(n) +
                            " tokens, more than the context of " + std::to_string(n_ctx_));
  }
  // Constants copied at construction, and the policy, fixed when the cache was made: the KV
  // state itself belongs to the engine thread.
  const int need =
      kv_policy_seq_blocks(kv_->policy(), block_size_, opts_.sched.max_batch_tokens, n + 1);
  if (need + watermark_blocks_ > n_blocks_total_) {
    return invalid_argument("the prompt has " + std::to_string(n) +
                            " tokens, more than the KV cache can hold");
  }
  if (spec.max_tokens < 0) return invalid_argument("max_tokens must be >= 0");
  if (spec.n_logprobs > 20) return invalid_argument("logprobs must be <= 20");
  return spec.sampling.validate();
}

Status EngineLoop::submit(std::shared_ptr<Request> req) {
  if (req->seqs.empty()) return invalid_argument("the request has no prompt");
  for (const auto& s : req->seqs) KV_RETURN_IF_ERROR(validate(s));
  if (!accepting_.load()) return out_of_memory("the server is shutting down");
  const int n = static_cast<int>(req->seqs.size());
  const int limit = opts_.sched.max_seqs + opts_.max_queue;
  int cur = in_flight_.load();
  do {
    if (cur + n > limit) return out_of_memory("the request queue is full");
  } while (!in_flight_.compare_exchange_weak(cur, cur + n));
  req->arrival = Clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming_.push_back(std::move(req));
  }
  cv_.notify_all();
  return Status::ok();
}

void EngineLoop::cancel(const std::shared_ptr<Request>& req) {
  req->channel->cancel();
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  cv_.notify_all();
}

bool EngineLoop::take_incoming() {
  std::vector<std::shared_ptr<Request>> reqs;
  {
    std::unique_lock<std::mutex> lock(mu_);
    auto ready = [&] { return stop_ || wake_ || !incoming_.empty(); };
    if (scheduler_.idle()) cv_.wait(lock, ready);
    if (stop_) return false;
    reqs.swap(incoming_);
    wake_ = false;
  }
  for (auto& r : reqs) {
    ++stats_.requests_total;
    // Consecutive specs with the same prompt are the n samples of one prompt: siblings.
    std::vector<std::unique_ptr<Sequence>> group;
    auto flush = [&] {
      if (!group.empty()) scheduler_.add_siblings(std::move(group));
      group.clear();
    };
    for (const SeqSpec& spec : r->seqs) {
      stats_.prompt_tokens_total += static_cast<int64_t>(spec.prompt.size());
      auto seq = std::make_unique<Sequence>(next_seq_++, r, &spec);
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
  }
  return true;
}

void EngineLoop::sweep_cancelled() {
  for (Sequence* s : scheduler_.all()) {
    if (s->request->channel->cancelled()) finish(s, "cancelled");
  }
}

void EngineLoop::run() {
  while (take_incoming()) {
    sweep_cancelled();
    step();
    update_stats();
  }
  for (Sequence* s : scheduler_.all()) finish(s, "cancelled");
  update_stats();
}

void EngineLoop::step() {
  std::vector<ScheduledChunk> plan = scheduler_.schedule();
  if (Sequence* u = scheduler_.take_unfittable()) finish(u, "length");
  if (plan.empty()) {
    if (!scheduler_.idle()) {
      // Waiting (static batch forming, or blocks busy): sleep briefly unless woken.
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(2),
                   [&] { return stop_ || wake_ || !incoming_.empty(); });
    }
    return;
  }
  Batch batch;
  for (const auto& c : plan) {
    // Slots follow the table (H2O compacts them); positions follow the tokens.
    const SeqId id = c.seq->id;
    batch.add(&kv_->table(id), c.pos0, c.seq->tokens.data() + c.pos0, c.n_tokens, false,
              kv_->table(id).n_tokens, kv_->attention_scores(id));
  }
  runner_.forward(batch, logits_);
  scheduler_.commit(plan);
  ++stats_.steps_total;
  stats_.batch_tokens_total += batch.n_rows();
  const size_t n_vocab = model_.config.n_vocab;
  // Sampling (a pass over the vocabulary per row, more with logprobs) over the pool, then the
  // tokens are appended and reported in plan order.
  sampled_.resize(plan.size());
  pool_.parallel_for(static_cast<int64_t>(plan.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (plan[i].samples()) sampled_[i] = sample(*plan[i].seq, logits_.data() + i * n_vocab);
    }
  });
  for (size_t i = 0; i < plan.size(); ++i) {
    if (plan[i].samples()) process_output(*plan[i].seq, sampled_[i]);
  }
}

EngineLoop::Sampled EngineLoop::sample(Sequence& seq, float* logits) const {
  const int n_vocab = model_.config.n_vocab;
  Sampled out;
  out.has_lp = !seq.pad && seq.spec->n_logprobs >= 0;
  std::vector<float> raw;  // [n_vocab] the model's logits, before the sampler edits them
  LogSoftmax ls;
  if (out.has_lp) {
    raw.assign(logits, logits + n_vocab);
    ls = log_softmax(raw.data(), n_vocab);
    out.lp.top = top_k_logprobs(raw.data(), n_vocab, seq.spec->n_logprobs, ls);
  }
  out.token = seq.sampler.sample(logits, n_vocab, seq.tokens);
  if (out.has_lp) {
    out.lp.token = out.token;
    out.lp.logprob = ls(raw[out.token]);
  }
  return out;
}

void EngineLoop::process_output(Sequence& seq, const Sampled& s) {
  const SeqSpec& spec = *seq.spec;
  const int32_t t = s.token;
  seq.tokens.push_back(t);
  if (seq.pad) {  // static batching's finished row: computed like the others, never sent
    if (seq.n_known() >= n_ctx_) scheduler_.finish(&seq);
    return;
  }

  const auto now = Clock::now();
  if (seq.n_generated() == 1) {
    stats_.time_to_first_token.observe(seconds(now - seq.request->arrival));
  } else {
    stats_.inter_token_latency.observe(seconds(now - seq.last_token_time));
  }
  seq.last_token_time = now;
  ++stats_.generated_tokens_total;

  std::string reason;
  if (model_.is_stop_token(t) && !spec.ignore_eos) {
    reason = "stop";  // EOS adds no text
  } else if (model_.tokenizer && append_text(seq, *model_.tokenizer, t)) {
    reason = "stop";
  }
  if (reason.empty() && seq.n_generated() >= spec.max_tokens) reason = "length";
  if (reason.empty() && seq.n_known() >= n_ctx_) reason = "length";
  emit(seq, t, s.has_lp ? &s.lp : nullptr, !reason.empty());
  if (!reason.empty()) finish(&seq, reason, {}, true);
}

void EngineLoop::emit(Sequence& seq, int32_t token, const TokenLogprob* lp, bool finished) {
  SeqEvent e;
  e.index = seq.spec->index;
  e.tokens.push_back(token);
  if (lp) e.logprobs.push_back(*lp);
  size_t end = seq.text.size();
  if (!finished) {
    end -= std::max(stop_holdback(seq.text, seq.spec->stop), utf8_incomplete_tail(seq.text));
  }
  if (end > seq.n_sent) {
    e.text = seq.text.substr(seq.n_sent, end - seq.n_sent);
    seq.n_sent = end;
  }
  seq.request->channel->push(std::move(e));
}

void EngineLoop::finish(Sequence* seq, const std::string& reason, const std::string& error,
                        bool completed) {
  SeqEvent e;
  e.index = seq->spec->index;
  e.finished = true;
  e.finish_reason = reason;
  e.error = error;
  if (seq->text.size() > seq->n_sent) e.text = seq->text.substr(seq->n_sent);
  e.n_prompt_tokens = seq->n_prompt;
  e.n_completion_tokens = seq->n_generated();
  e.n_cached_tokens = seq->n_cached;
  std::shared_ptr<Request> req = seq->request;
  if (completed)
    scheduler_.retire(seq);  // frees the blocks now (or at its static batch's end)
  else
    scheduler_.finish(seq);  // frees the blocks now; seq is gone
  --in_flight_;              // before the reader can see the end and submit again
  req->channel->push(std::move(e));
}

void EngineLoop::update_stats() {
  const BlockPool& p = kv_->pool();
  stats_.kv_blocks_total = p.n_blocks_total();
  stats_.kv_blocks_used = p.n_blocks_used();
  stats_.kv_blocks_free = p.n_blocks_free() - p.n_blocks_cached();
  stats_.kv_blocks_cached = p.n_blocks_cached();
  const KvCacheStats ks = kv_->stats();
  stats_.prefix_cache_queries_total = ks.n_query_tokens;
  stats_.prefix_cache_hits_total = ks.n_hit_tokens;
  stats_.seqs_running = scheduler_.n_running_requests();
  stats_.seqs_waiting = scheduler_.n_waiting();
  stats_.preemptions_total = scheduler_.n_preemptions();
  stats_.swapped_out_total = scheduler_.n_swapped_out();
  stats_.swap_bytes = static_cast<int64_t>(scheduler_.swap_bytes_used());
}

}  // namespace kvserve
