#include "engine/generator.h"

#include <chrono>

namespace kvserve {

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Folds one sequence's events into its result.
struct ResultFolder {
  GenerateResult res;
  Clock::time_point t0 = Clock::now(), t_first{};
  std::string error;  // set when the sequence failed
  bool done = false;

  void fold(SeqEvent& e) {
    const auto now = Clock::now();
    if (res.tokens.empty() && !e.tokens.empty()) {
      t_first = now;
      res.prefill_ms = ms_between(t0, now);
    }
    res.tokens.insert(res.tokens.end(), e.tokens.begin(), e.tokens.end());
    res.text += e.text;
    for (auto& l : e.logits) res.logits.push_back(std::move(l));
    if (!e.finished) return;
    done = true;
    res.finish_reason = e.finish_reason;
    if (e.finish_reason == "error") error = e.error.empty() ? "generation failed" : e.error;
    res.n_cached_tokens = e.n_cached_tokens;
    if (!res.tokens.empty()) {
      res.decode_ms = ms_between(t_first, now);
      res.n_decode_steps = static_cast<int>(res.tokens.size()) - 1;
    }
  }
};

}  // namespace

Result<std::unique_ptr<Generator>> Generator::create(const Model& model,
                                                     const EngineOptions& opts) {
  if (opts.prefill_chunk < 1) return invalid_argument("prefill chunk must be positive");
  EngineCoreOptions co;
  co.engine = opts;
  co.sched.max_batch_tokens = opts.prefill_chunk;
  co.sched.max_seqs = 4096;  // every sequence of a call runs at once
  co.sched.watermark = 0;    // nobody else will need headroom
  co.sched.preemption = PreemptionMode::kNone;
  co.kv_seqs = 1;
  // Bounded memory lets a sequence run past the trained context unless --ctx caps it. The
  // policy in effect is opts' or the model's own window.
  if (kv_policy_bounded(effective_kv_policy(model.config, opts)) && opts.n_ctx <= 0) {
    co.max_len = EngineCoreOptions::kUnbounded;
  }
  KV_ASSIGN_OR_RETURN(auto core, EngineCore::create(model, co));
  return std::unique_ptr<Generator>(new Generator(std::move(core)));
}

std::shared_ptr<Request> Generator::make_request(const GenerateRequest& req,
                                                 const std::vector<uint64_t>& seeds) const {
  auto r = std::make_shared<Request>();
  r->cache_salt = req.cache_salt;
  r->recompute = !req.use_kv_cache;
  r->use_prefix_cache = req.use_kv_cache;
  for (size_t i = 0; i < seeds.size(); ++i) {
    SeqSpec s;
    s.prompt = req.prompt;
    s.max_tokens = req.n_predict;
    s.sampling = req.sampling;
    s.sampling.seed = seeds[i];
    s.ignore_eos = req.ignore_eos;
    s.stop = req.stop;
    s.keep_logits = req.keep_logits;
    s.index = static_cast<int>(i);
    r->seqs.push_back(std::move(s));
  }
  return r;
}

Status Generator::run(const std::shared_ptr<Request>& r,
                      const std::function<void(SeqEvent&)>& on_event) {
  core_->kv().reset_peak();
  r->arrival = Clock::now();
  core_->add(r);
  size_t n_open = r->seqs.size();
  // The core always makes progress for a lone caller (no preemption, no static batches); a run
  // of idle steps means a bug, reported instead of spinning forever.
  int n_idle = 0;
  while (true) {
    for (SeqEvent& e : r->channel->wait(std::chrono::milliseconds(0))) {
      if (e.finished) --n_open;
      on_event(e);
    }
    if (n_open == 0) return Status::ok();
    n_idle = core_->step() ? 0 : n_idle + 1;
    if (n_idle > 1000) {
      core_->finish_all("cancelled");
      return Status(StatusCode::kInternal, "the engine made no progress");
    }
  }
}

Result<std::vector<GenerateResult>> Generator::generate_all(const GenerateRequest& req,
                                                            const std::vector<uint64_t>& seeds) {
  if (req.n_predict < 0) return invalid_argument("the number of tokens to generate must be >= 0");
  auto r = make_request(req, seeds);
  for (const SeqSpec& s : r->seqs) KV_RETURN_IF_ERROR(core_->validate(s));
  std::vector<ResultFolder> folders(seeds.size());
  KV_RETURN_IF_ERROR(run(r, [&](SeqEvent& e) {
    ResultFolder& f = folders[e.index];
    f.fold(e);
    if (req.on_text && !e.text.empty()) req.on_text(e.text);
    // The callback may stop the sequence: the engine finishes it on its next step.
    if (req.on_token && !f.done) {
      for (int32_t t : e.tokens) {
        if (!req.on_token(t)) r->channel->cancel();
      }
    }
  }));
  std::vector<GenerateResult> out;
  for (ResultFolder& f : folders) {
    if (!f.error.empty()) return out_of_memory(f.error);
    f.res.blocks_used_peak = core_->kv().n_blocks_used_peak();
    out.push_back(std::move(f.res));
  }
  return out;
}

Result<GenerateResult> Generator::generate(const GenerateRequest& req) {
  KV_ASSIGN_OR_RETURN(auto all, generate_all(req, {req.sampling.seed}));
  return std::move(all.front());
}

Result<std::vector<GenerateResult>> Generator::generate_parallel(
    const GenerateRequest& req, const std::vector<uint64_t>& seeds) {
  if (!req.use_kv_cache) return invalid_argument("parallel sampling needs the KV cache");
  return generate_all(req, seeds);
}

Status Generator::score(const std::vector<int32_t>& tokens,
                        const std::function<void(int pos, const float* logits)>& on_logits) {
  // The limits of a prompt of these tokens (ids in range, context), as generate() applies them.
  KV_RETURN_IF_ERROR(core_->validate_prompt(tokens));
  if (tokens.size() < 2) return invalid_argument("scoring needs at least 2 tokens");
  auto r = std::make_shared<Request>();
  r->use_prefix_cache = false;  // scores must not depend on what earlier requests left
  SeqSpec s;
  s.prompt = {tokens[0]};
  s.forced.assign(tokens.begin() + 1, tokens.end());
  s.max_tokens = static_cast<int>(s.forced.size());
  s.ignore_eos = true;
  s.keep_logits = true;
  r->seqs.push_back(std::move(s));
  int pos = 0;
  std::string error;
  KV_RETURN_IF_ERROR(run(r, [&](SeqEvent& e) {
    for (const auto& l : e.logits) on_logits(pos++, l.data());
    if (e.finish_reason == "error") error = e.error;
  }));
  if (!error.empty()) return out_of_memory(error);
  return Status::ok();
}

}  // namespace kvserve
