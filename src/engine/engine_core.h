// EngineCore: the one engine. It owns the KV cache manager, the model runner, the scheduler and
// the output processor; each step() runs one forward pass over a batch that mixes the decode
// tokens of running sequences with prefill chunks of new ones, chooses each sampling row's next
// token, and reports on each request's channel. It has no thread of its own: EngineLoop drives
// it from a thread for the server; Generator drives it in the caller's thread for `kvserve
// generate`, scoring and the benchmarks (as vLLM's server and its offline LLM share one core).
// Not thread-safe: one thread calls it, except validate() and the const accessors marked so.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "engine/cache_snapshot.h"
#include "engine/engine_options.h"
#include "engine/engine_stats.h"
#include "engine/model_runner.h"
#include "engine/output_processor.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "kv/kv_cache_manager.h"
#include "model/model.h"

namespace kvserve {

struct EngineCoreOptions {
  EngineOptions engine;    // block size, KV types and budget, context, threads, policy
  SchedulerOptions sched;  // batching policy and limits
  int kv_seqs = 1;         // sequences a default budget under a bounded policy is sized for
  // Longest sequence (prompt + generated). 0: the context (EngineOptions::n_ctx or the model's);
  // kUnbounded lets a memory-bounded policy run past it.
  int max_len = 0;
  static constexpr int kUnbounded = 1 << 30;
};

class EngineCore {
 public:
  // Creates the KV cache, runner and scheduler. invalid_argument for bad options.
  static Result<std::unique_ptr<EngineCore>> create(const Model& model,
                                                    const EngineCoreOptions& opts);

  // A prompt's own limits: non-empty, ids in range, no longer than max_len(). Any thread.
  Status validate_prompt(const std::vector<int32_t>& prompt) const;
  // validate_prompt, and that the KV cache can ever hold it, and the spec's values (max_tokens,
  // logprobs, sampling). invalid_argument naming the problem. Any thread.
  Status validate(const SeqSpec& spec) const;
  // Queues every sequence of req (validated). Consecutive specs with the same prompt are the n
  // samples of one prompt: siblings sharing its blocks. A spec with max_tokens 0 is answered
  // at once.
  void add(const std::shared_ptr<Request>& req);
  // One step: finishes cancelled sequences, then schedules and computes one batch. Returns false
  // when nothing was computed (idle, or waiting for blocks or for a static batch to form).
  bool step();
  // Finishes every sequence with `reason` (shutdown).
  void finish_all(const std::string& reason);
  bool idle() const { return scheduler_.idle(); }
  // Called once per sequence as it ends, before its closing event is pushed (so a reader who
  // sees the end can count it gone).
  void set_on_finish(std::function<void()> f) { on_finish_ = std::move(f); }
  // Calls f on the engine thread with the KV events of each step (kv/kv_events.h), drained from
  // the pool once per step, oldest first; f must be quick (hand the batch to a queue). The
  // pool records events only once a listener exists.
  using EventListener = std::function<void(const std::vector<KvEvent>&)>;
  void add_event_listener(EventListener f);
  // The latest published snapshot (after the last step, add or command). Any thread.
  std::shared_ptr<const CacheSnapshot> snapshot() const;
  // Forgets every cached block (AllBlocksCleared); blocks in use keep their K/V.
  void reset_prefix_cache();

  const Model& model() const { return model_; }               // any thread
  int n_ctx() const { return n_ctx_; }                        // any thread
  int max_len() const { return max_len_; }                    // any thread
  const EngineCoreOptions& options() const { return opts_; }  // any thread
  const EngineStats& stats() const { return stats_; }         // any thread (atomics)
  KvCacheManager& kv() { return *kv_; }
  ThreadPool& threads() { return pool_; }

 private:
  EngineCore(const Model& model, const EngineCoreOptions& opts, int n_ctx,
             std::unique_ptr<KvCacheManager> kv);
  void sweep_cancelled();
  // Finishes what the scheduler gave up on: the unfittable sequence and failed ones.
  void finish_refused();
  Batch build_batch(const std::vector<ScheduledChunk>& plan);
  // Chooses the next token of every row that samples (plan rows, then forked siblings reading
  // their leader's row) and reports them.
  void sample_and_report(const std::vector<ScheduledChunk>& plan,
                         const std::vector<ForkedSeq>& forked);
  // Appends the chosen token and reports it; ends the sequence when a stop rule says so.
  void process_output(Sequence& seq, ChosenToken c);
  void observe_latency(Sequence& seq);
  // Answers seq's request with its end and frees it. completed (it ran to stop or length): under
  // static batching its row goes on computing until its batch ends (Scheduler::retire).
  void finish(Sequence* seq, const std::string& reason, const std::string& error = {},
              bool completed = false);
  // Refreshes the stats' gauges, drains the step's KV events to the listeners and publishes a
  // new snapshot, all from one reading of the cache's occupancy and counters.
  void publish();
  void update_stats(const KvOccupancy& o, const KvCacheStats& ks);
  CacheSnapshot make_snapshot(const KvOccupancy& o, const KvCacheStats& ks) const;

  const Model& model_;
  const EngineCoreOptions opts_;
  const int n_ctx_, max_len_;
  ThreadPool pool_;
  std::unique_ptr<KvCacheManager> kv_;
  ModelRunner runner_;
  Scheduler scheduler_;
  OutputProcessor output_;
  const int block_size_, n_blocks_total_, watermark_blocks_;  // for validate() on any thread
  EngineStats stats_;
  std::function<void()> on_finish_;
  std::vector<EventListener> listeners_;
  mutable std::mutex snapshot_mu_;
  std::shared_ptr<const CacheSnapshot> snapshot_;  // guarded by snapshot_mu_
  std::vector<float> logits_;                      // [n_outputs][n_vocab]
  std::vector<float> forked_logits_;  // [n_forked][n_vocab] copies of their leaders' rows
  std::vector<ChosenToken> chosen_;   // [n_sampling] this step's tokens (rows that sample)
  SeqId next_seq_ = 0;
};

}  // namespace kvserve
