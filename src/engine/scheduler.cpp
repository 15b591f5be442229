#include "engine/scheduler.h"

#include <algorithm>
#include <cmath>
#include <span>

#include "core/assert.h"

namespace kvserve {

Scheduler::Scheduler(KvCacheManager& kv, const SchedulerOptions& opts) : kv_(kv), opts_(opts) {
  const int total = kv_.n_blocks_total();
  watermark_blocks_ =
      opts_.watermark > 0 ? std::max(1, static_cast<int>(std::ceil(opts_.watermark * total))) : 0;
  if (watermark_blocks_ >= total) watermark_blocks_ = 0;  // tiny caches: no headroom to spare
}

void Scheduler::add(std::unique_ptr<Sequence> seq) {
  waiting_.push_back(std::move(seq));
}

void Scheduler::add_siblings(std::vector<std::unique_ptr<Sequence>> seqs) {
  // The recompute baseline keeps no K/V to share.
  if (seqs.size() > 1 && !seqs.front()->request->recompute) {
    auto ready = std::make_shared<bool>(false);
    for (auto& s : seqs) s->prompt_ready = ready;
    seqs.front()->leads = true;
  }
  for (auto& s : seqs) add(std::move(s));
}

namespace {
// The leader has computed (and registered) its prompt, or is gone: siblings may start.
void release_siblings(Sequence& s) {
  if (s.leads && s.prompt_ready) *s.prompt_ready = true;
}
}  // namespace

std::optional<SchedulerKind> scheduler_kind_from_name(const std::string& name) {
  if (name == "continuous") return SchedulerKind::kContinuous;
  if (name == "static") return SchedulerKind::kStatic;
  if (name == "static-shrink") return SchedulerKind::kStaticShrink;
  return std::nullopt;
}

const char* scheduler_kind_name(SchedulerKind k) {
  switch (k) {
    case SchedulerKind::kStatic:
      return "static";
    case SchedulerKind::kStaticShrink:
      return "static-shrink";
    default:
      return "continuous";
  }
}

std::vector<Sequence*> Scheduler::all() const {
  std::vector<Sequence*> v;
  for (const auto& s : running_)
    if (!s->pad) v.push_back(s.get());
  for (const auto& s : waiting_) v.push_back(s.get());
  return v;
}

Sequence* Scheduler::take_unfittable() {
  return unfittable_.get();
}

std::vector<Sequence*> Scheduler::take_failed() {
  std::vector<Sequence*> out;
  out.swap(failed_);
  return out;
}

void Scheduler::fail(Sequence& seq, Status st) {
  if (!seq.failure.is_ok()) return;
  seq.failure = std::move(st);
  failed_.push_back(&seq);
}

bool Scheduler::start(Sequence& s) {
  if (s.request->use_prefix_cache) {
    auto cached = kv_.add_sequence_from_prefix(s.id, s.tokens, s.request->cache_salt);
    if (!cached) return false;
    s.n_computed = *cached;
    return true;
  }
  // A private sequence: nothing matched, nothing registered (see commit).
  if (!kv_.add_sequence(s.id).is_ok()) return false;
  if (!kv_policy_bounded(kv_.policy()) && !kv_.reserve(s.id, s.n_known()).is_ok()) {
    kv_.free_sequence(s.id);
    return false;
  }
  s.n_computed = 0;
  return true;
}

int Scheduler::chunk_limit() const {
  return kv_policy_chunk(kv_.policy(), kv_.block_size(), opts_.max_batch_tokens);
}

int Scheduler::pending_blocks() const {
  int n = 0;
  const bool bounded = kv_policy_bounded(kv_.policy());
  for (const auto& s : running_) {
    // A bounded sequence needs blocks only for its next chunk; it frees behind itself.
    const int due = s->n_known() - s->n_computed;
    n += bounded
             ? kv_.blocks_needed(s->id, kv_.table(s->id).n_tokens + std::min(due, chunk_limit()))
             : kv_.blocks_needed(s->id, s->n_known());
  }
  return n;
}

bool Scheduler::may_admit(const Sequence& seq) const {
  if (opts_.kind == SchedulerKind::kContinuous || seq.n_preemptions > 0) return true;
  // Static: a new batch starts only in an empty engine (padding rows included: they are part
  // of the batch), once it is full or has waited enough.
  if (!running_.empty()) return false;
  const auto age = Clock::now() - waiting_.front()->request->arrival;
  return static_cast<int>(waiting_.size()) >= opts_.max_seqs ||
         age >= std::chrono::milliseconds(opts_.static_wait_ms);
}

void Scheduler::admit() {
  if (unfittable_) return;  // the engine finishes it first
  int pending = pending_blocks();
  bool opened = false;  // static: the batch being formed in this call
  // Siblings waiting for their leader's prompt step aside (to the back) for the others.
  size_t n_deferred = 0;
  while (!waiting_.empty() && n_running() < opts_.max_seqs) {
    Sequence& s = *waiting_.front();
    if (s.prompt_ready && !s.leads && !*s.prompt_ready && s.n_preemptions == 0) {
      if (++n_deferred > waiting_.size()) break;  // only blocked siblings are left
      waiting_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
      continue;
    }
    if (!opened && !may_admit(s)) break;
    opened = opts_.kind != SchedulerKind::kContinuous && s.n_preemptions == 0;
    if (s.swapped) {
      // Swapped out: back with exactly its blocks, nothing to recompute.
      const int n_back = s.swapped->n_blocks();
      if (n_back + pending + watermark_blocks_ > kv_.n_blocks_available()) break;
      const size_t bytes = s.swapped->bytes();
      if (!kv_.swap_in(s.id, *s.swapped).is_ok()) break;
      s.swapped.reset();
      swap_used_ -= bytes;
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
      continue;
    }
    const int need =
        kv_policy_seq_blocks(kv_.policy(), kv_.block_size(), opts_.max_batch_tokens, s.n_known());
    if (need + watermark_blocks_ > kv_.n_blocks_total()) {
      if (running_.empty()) {  // can never fit: hand it to the engine to finish
        unfittable_ = std::move(waiting_.front());
        waiting_.pop_front();
      }
      break;
    }
    if (need + pending + watermark_blocks_ > kv_.n_blocks_available()) break;
    if (!start(s)) break;  // out of blocks after all: wait for the next step
    if (s.n_preemptions == 0) s.n_cached = s.n_computed;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

void Scheduler::preempt(Sequence& seq) {
  if (opts_.preemption == PreemptionMode::kNone) {
    return fail(
        seq, out_of_memory("KV cache full: no free block for sequence " + std::to_string(seq.id) +
                           " at " + std::to_string(kv_.table(seq.id).n_tokens) + " tokens"));
  }
  if (seq.pad) {  // nobody waits for its output: dropping it is all the memory it can give
    finish(&seq);
    return;
  }
  bool swapped = false;
  if (opts_.preemption == PreemptionMode::kSwap && kv_.can_swap() &&
      swap_used_ +
              static_cast<size_t>(kv_.table(seq.id).n_blocks()) * kv_.layout().bytes_per_block() <=
          opts_.swap_bytes) {
    auto out = kv_.swap_out(seq.id);
    if (out) {
      swap_used_ += out->bytes();
      seq.swapped = std::move(*out);
      swapped = true;
      ++n_swapped_out_;
    }
  }
  if (!swapped) {
    kv_.free_sequence(seq.id);
    seq.n_computed = 0;
  }
  ++seq.n_preemptions;
  ++n_preemptions_;
  auto it =
      std::find_if(running_.begin(), running_.end(), [&](auto& p) { return p.get() == &seq; });
  KV_ASSERT(it != running_.end());
  waiting_.push_front(std::move(*it));
  running_.erase(it);
}

bool Scheduler::reserve_or_preempt(Sequence& seq, int n_tokens) {
  for (Status st = kv_.reserve(seq.id, n_tokens); !st.is_ok(); st = kv_.reserve(seq.id, n_tokens)) {
    if (opts_.preemption == PreemptionMode::kNone) {
      fail(seq, std::move(st));
      return false;
    }
    if (seq.pad) {  // a padding row gives way; it takes no block from anyone
      finish(&seq);
      return false;
    }
    // Padding rows go first (newest first), then the newest request; padding rows are planned
    // after every request, so a victim is never one planned before seq.
    auto pad = std::find_if(running_.rbegin(), running_.rend(), [](auto& p) { return p->pad; });
    Sequence& victim = pad != running_.rend() ? **pad : *running_.back();
    preempt(victim);
    if (&victim == &seq) return false;
  }
  return true;
}

void Scheduler::schedule_decodes(std::vector<ScheduledChunk>& plan, int& budget) {
  // Requests oldest first, then padding rows. Preemption may remove sequences from running_
  // meanwhile, so the order is a snapshot and each is checked before it is planned.
  std::vector<Sequence*> order;
  for (const auto& p : running_)
    if (!p->pad) order.push_back(p.get());
  for (const auto& p : running_)
    if (p->pad) order.push_back(p.get());
  for (Sequence* s : order) {
    if (budget <= 0) break;
    if (!is_running(s) || !s->failure.is_ok() || s->n_known() - s->n_computed != 1) continue;
    if (!reserve_or_preempt(*s, kv_.table(s->id).n_tokens + 1)) continue;
    plan.push_back({s, s->n_computed, 1});
    --budget;
  }
}

void Scheduler::schedule_prefills(std::vector<ScheduledChunk>& plan, int& budget) {
  for (auto& p : running_) {
    if (budget <= 0) break;
    Sequence& s = *p;
    const int due = s.n_known() - s.n_computed;
    if (due <= 1 || !s.failure.is_ok()) continue;  // decoding: planned above
    const int n = std::min({due, budget, chunk_limit()});
    // Slots, not positions: under H2O they differ.
    if (Status st = kv_.reserve(s.id, kv_.table(s.id).n_tokens + n); !st.is_ok()) {
      // No preemption for prefills; without preemption at all, nothing will free a block.
      if (opts_.preemption == PreemptionMode::kNone) fail(s, std::move(st));
      continue;
    }
    plan.push_back({&s, s.n_computed, n});
    budget -= n;
  }
}

void Scheduler::drop_padding_if_batch_done() {
  if (running_.empty() ||
      !std::all_of(running_.begin(), running_.end(), [](const auto& s) { return s->pad; }))
    return;
  for (const auto& s : running_) kv_.free_sequence(s->id);
  running_.clear();
}

std::vector<ScheduledChunk> Scheduler::schedule() {
  std::vector<ScheduledChunk> plan;
  drop_padding_if_batch_done();
  admit();
  int budget = opts_.max_batch_tokens;
  schedule_decodes(plan, budget);
  schedule_prefills(plan, budget);
  if (plan.empty() && !running_.empty() && failed_.empty()) {
    // Every running sequence is stuck on blocks: free the newest so the others can move.
    preempt(*running_.back());
  }
  return plan;
}

void Scheduler::fork_siblings(Sequence& leader, size_t plan_index, std::vector<ForkedSeq>& out) {
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    Sequence& f = **it;
    if (&f == &leader || f.prompt_ready != leader.prompt_ready || f.n_preemptions > 0 ||
        n_running() >= opts_.max_seqs || !kv_.fork(leader.id, f.id).is_ok()) {
      ++it;
      continue;
    }
    f.n_computed = leader.n_computed;
    f.n_cached = leader.n_cached;
    out.push_back({&f, plan_index});
    running_.push_back(std::move(*it));
    it = waiting_.erase(it);
  }
  release_siblings(leader);  // whoever is left starts alone
}

std::vector<ForkedSeq> Scheduler::commit(const std::vector<ScheduledChunk>& plan) {
  std::vector<ForkedSeq> forked;
  for (size_t i = 0; i < plan.size(); ++i) {
    const ScheduledChunk& c = plan[i];
    c.seq->n_computed = c.pos0 + c.n_tokens;
    const bool prompt_done = c.samples() && c.seq->n_generated() == 0;
    const Request& req = *c.seq->request;
    if (req.recompute && c.samples()) {
      // The no-KV-cache baseline: its K/V served this step's logits only.
      kv_.free_sequence(c.seq->id);
      (void)kv_.add_sequence(c.seq->id);
      c.seq->n_computed = 0;
      continue;
    }
    if (req.use_prefix_cache) {
      // Registers every block this chunk filled with the prefix cache.
      kv_.commit_and_register(c.seq->id,
                              std::span<const int32_t>(c.seq->tokens.data(), c.seq->n_computed));
    } else {
      kv_.commit(c.seq->id, c.seq->n_computed);
    }
    // Window: release what no later query sees; H2O: evict down to keep. A failure (no block
    // for a copy-on-write) leaves the sequence over its budget until a later step succeeds.
    (void)kv_.enforce_policy(c.seq->id);
    if (c.seq->leads && prompt_done) fork_siblings(*c.seq, i, forked);
    if (c.seq->n_computed >= c.seq->n_prompt) release_siblings(*c.seq);
  }
  return forked;
}

bool Scheduler::is_running(const Sequence* seq) const {
  return std::any_of(running_.begin(), running_.end(),
                     [&](const auto& p) { return p.get() == seq; });
}

void Scheduler::retire(Sequence* seq) {
  if (opts_.kind != SchedulerKind::kStatic || !is_running(seq)) return finish(seq);
  release_siblings(*seq);
  seq->pad = true;
}

void Scheduler::finish(Sequence* seq) {
  std::erase(failed_, seq);
  release_siblings(*seq);  // a leader cancelled early must not hold its siblings back
  kv_.free_sequence(seq->id);
  if (seq->swapped) {
    swap_used_ -= seq->swapped->bytes();
    seq->swapped.reset();
  }
  if (unfittable_.get() == seq) {
    unfittable_.reset();
    return;
  }
  auto match = [&](auto& p) { return p.get() == seq; };
  if (auto it = std::find_if(running_.begin(), running_.end(), match); it != running_.end()) {
    running_.erase(it);
    return;
  }
  auto it = std::find_if(waiting_.begin(), waiting_.end(), match);
  KV_ASSERT(it != waiting_.end());
  waiting_.erase(it);
}

}  // namespace kvserve
