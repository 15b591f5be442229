// Scheduler: decides, step by step, which tokens of which sequences the next forward pass
// computes. It tracks one number per sequence, tokens computed vs tokens known (prompt plus
// generated); there is no separate prefill and decode bookkeeping. A step:
//   1. admits waiting sequences while slots (max_seqs) and KV blocks (+ a watermark) allow,
//      as the admission policy says (continuous: any step; static: only into an empty engine);
//      static batching keeps a finished sequence's row computing (its output discarded) until
//      its whole batch is done, as request-level batching does (HF generate, FasterTransformer);
//      static-shrink drops finished rows but admits none until the batch is done;
//   2. schedules one token for every running sequence that is decoding, oldest first (static
//      batching's padding rows last), growing its block table; when the pool is empty it drops
//      padding rows, then preempts the newest running sequence: its blocks are freed and it
//      waits again at the front of the queue, either to be recomputed (recompute mode) or with
//      its K/V copied to host memory first and copied back on re-admission (swap mode, within
//      --swap-space; recompute beyond it), or, with no preemption (the offline driver, where
//      nobody else's memory can be taken), fails the sequence that cannot grow;
//   3. fills what is left of the token budget with prefill chunks, oldest first.
// Not thread-safe: only the engine loop calls it. It owns the sequences and their KV tables.
#pragma once

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "kv/kv_cache_manager.h"

namespace kvserve {

struct Sequence {
  SeqId id = 0;
  std::shared_ptr<Request> request;
  const SeqSpec* spec = nullptr;  // points into request->seqs
  std::vector<int32_t> tokens;    // prompt + generated
  int n_prompt = 0;
  int n_computed = 0;  // tokens whose K/V are in the cache; [n_computed, tokens.size()) are due
  int n_preemptions = 0;
  int n_cached = 0;  // prompt tokens served from the prefix cache at first admission
  std::optional<SwappedKv> swapped;  // swap preemption: its K/V while it waits
  // n > 1 samples of one prompt: the first (the leader) computes the prompt while the others
  // wait; at the step that completes it, the others are forked from it (every block shared,
  // copied on first write) and take their first token from the same logits. A sibling that
  // cannot be forked then (max_seqs reached, or the leader ended early) starts on its own once
  // *prompt_ready, from the prefix cache when it is on. Null for a lone sequence.
  std::shared_ptr<bool> prompt_ready;
  bool leads = false;  // this one computes the prompt and sets *prompt_ready
  // Static batching: finished and answered, but still decoding (output discarded) until its
  // batch ends, as a fixed-shape batch computes its finished rows. Never seen by the engine.
  bool pad = false;
  Sampler sampler;
  // Output text state (engine loop).
  std::string text;   // generated text so far (cut at a stop string)
  size_t n_sent = 0;  // bytes of text already sent
  Clock::time_point last_token_time{};
  // Set when the scheduler gives up on the sequence (PreemptionMode::kNone and no block for
  // it): the engine finishes it with this error. Never planned again.
  Status failure;

  Sequence(SeqId id_, std::shared_ptr<Request> req, const SeqSpec* spec_)
      : id(id_),
        request(std::move(req)),
        spec(spec_),
        tokens(spec_->prompt),
        n_prompt(static_cast<int>(spec_->prompt.size())),
        sampler(spec_->sampling) {}
  int n_known() const { return static_cast<int>(tokens.size()); }
  int n_generated() const { return n_known() - n_prompt; }
};

// One sequence's share of a step: tokens [pos0, pos0 + n_tokens) of seq.
struct ScheduledChunk {
  Sequence* seq = nullptr;
  int pos0 = 0;
  int n_tokens = 0;
  // The chunk reaches the last known token: its logits give the next token.
  bool samples() const { return pos0 + n_tokens == seq->n_known(); }
  bool operator==(const ScheduledChunk&) const = default;
};

// A sibling forked from its leader by Scheduler::commit: it samples from the logits row of
// plan[plan_index] (its leader's) in this step.
struct ForkedSeq {
  Sequence* seq = nullptr;
  size_t plan_index = 0;
};

// kStatic: request-level batching (a batch forms in an empty engine and every row computes
// until its longest sequence ends). kStaticShrink: the same admission, but finished rows leave.
enum class SchedulerKind { kContinuous, kStatic, kStaticShrink };
// "continuous", "static", "static-shrink"; nullopt for anything else.
std::optional<SchedulerKind> scheduler_kind_from_name(const std::string& name);
const char* scheduler_kind_name(SchedulerKind k);
// kNone: a sequence that cannot get a block fails with out_of_memory instead of taking another's
// (the offline driver: its sequences belong to one caller, who wants the error).
enum class PreemptionMode { kRecompute, kSwap, kNone };

struct SchedulerOptions {
  SchedulerKind kind = SchedulerKind::kContinuous;
  int max_batch_tokens = 512;  // tokens per forward pass
  int max_seqs = 16;           // running sequences at most
  double watermark = 0.01;  // fraction of blocks kept free at admission (at least 1 block; 0: none)
  int static_wait_ms = 50;  // static: how long to wait for a full batch
  PreemptionMode preemption = PreemptionMode::kRecompute;
  size_t swap_bytes = size_t{1} << 30;  // swap mode: host memory for swapped-out K/V
};

class Scheduler {
 public:
  Scheduler(KvCacheManager& kv, const SchedulerOptions& opts);

  // Queues a sequence (FIFO).
  void add(std::unique_ptr<Sequence> seq);
  // As add() for the n samples of one prompt: the first leads, the rest are forked from it once
  // its prompt is computed (see Sequence::prompt_ready).
  void add_siblings(std::vector<std::unique_ptr<Sequence>> seqs);
  // Plans the next step and reserves its blocks. Empty when nothing can run now.
  std::vector<ScheduledChunk> schedule();
  // Marks the planned tokens as computed (after the forward pass), and forks the waiting
  // siblings of every leader whose prompt this step completed: they are running now and sample
  // in this step from their leader's logits row.
  std::vector<ForkedSeq> commit(const std::vector<ScheduledChunk>& plan);
  // Frees seq's blocks and forgets it (running or waiting). seq is destroyed.
  void finish(Sequence* seq);
  // Static batching: seq (running) has been answered; it keeps computing as a padding row
  // until its batch ends, then it is freed. Other kinds: as finish().
  void retire(Sequence* seq);
  // Every sequence, running then waiting (for cancellation sweeps); padding rows excluded.
  std::vector<Sequence*> all() const;

  int n_running() const { return static_cast<int>(running_.size()); }  // padding rows too
  // Running sequences whose requests are still open (static batching's padding rows excluded).
  int n_running_requests() const {
    return static_cast<int>(
        std::count_if(running_.begin(), running_.end(), [](const auto& s) { return !s->pad; }));
  }
  int n_waiting() const { return static_cast<int>(waiting_.size()); }
  bool idle() const { return running_.empty() && waiting_.empty(); }
  int64_t n_preemptions() const { return n_preemptions_; }
  int64_t n_swapped_out() const { return n_swapped_out_; }  // preemptions that swapped
  size_t swap_bytes_used() const { return swap_used_; }
  int watermark_blocks() const { return watermark_blocks_; }
  // A sequence that has outgrown the whole cache (it can never be admitted again): the engine
  // finishes it with "length" (or, under kNone, an out_of_memory error). Null when there is none.
  Sequence* take_unfittable();
  // Sequences that failed this step (kNone: no block for them; see Sequence::failure). The
  // engine finishes each.
  std::vector<Sequence*> take_failed();
  const SchedulerOptions& options() const { return opts_; }

 private:
  bool may_admit(const Sequence& seq) const;
  bool is_running(const Sequence* seq) const;
  void drop_padding_if_batch_done();
  void admit();
  void schedule_decodes(std::vector<ScheduledChunk>& plan, int& budget);
  void schedule_prefills(std::vector<ScheduledChunk>& plan, int& budget);
  // Reserves blocks for seq up to n_tokens, preempting newer sequences. false: seq itself was
  // preempted (or nothing is left to preempt).
  bool reserve_or_preempt(Sequence& seq, int n_tokens);
  void preempt(Sequence& seq);
  // Forks leader's waiting siblings (as many as max_seqs allows) and lets the rest start alone.
  void fork_siblings(Sequence& leader, size_t plan_index, std::vector<ForkedSeq>& out);
  // kNone: marks seq failed with st (out_of_memory) instead of preempting anyone.
  void fail(Sequence& seq, Status st);
  // Registers seq with the cache: from the longest cached prefix, or empty when its request
  // opts out of the prefix cache; reserves its known tokens. False: out of blocks.
  bool start(Sequence& seq);
  int pending_blocks() const;  // blocks running sequences still need for their known tokens
  // The largest prefill chunk of one sequence its KV policy allows (kv/kv_policy.h).
  int chunk_limit() const;

  KvCacheManager& kv_;
  SchedulerOptions opts_;
  int watermark_blocks_ = 1;
  std::vector<std::unique_ptr<Sequence>> running_;  // admission order, oldest first
  std::deque<std::unique_ptr<Sequence>> waiting_;   // FIFO; preempted ones go to the front
  std::unique_ptr<Sequence> unfittable_;
  std::vector<Sequence*> failed_;  // running, failure set, not yet taken
  int64_t n_preemptions_ = 0;
  int64_t n_swapped_out_ = 0;
  size_t swap_used_ = 0;
};

}  // namespace kvserve
