// EngineLoop: the serving engine. One thread owns the KV cache manager, the model runner and the
// scheduler; each step it runs one forward pass over a batch that mixes the decode tokens of
// running sequences with prefill chunks of new ones, samples, and reports tokens on each
// request's channel. Other threads talk to it only through submit()/cancel() (a locked queue)
// and read its statistics (atomics and locked histograms).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "engine/generator.h"
#include "engine/model_runner.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "kv/kv_cache_manager.h"
#include "model/model.h"

namespace kvserve {

struct EngineLoopOptions {
  EngineOptions engine;    // block size, KV type and budget, context, threads
  SchedulerOptions sched;  // batching policy and limits
  int max_queue = 256;     // requests beyond max_seqs that may wait; more are refused
};

// Prometheus-style histogram: cumulative counts per upper bound. Thread-safe.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  struct Snapshot {
    std::vector<double> bounds;     // [n] upper bounds (the +Inf bucket is `count`)
    std::vector<uint64_t> buckets;  // [n] cumulative counts
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  mutable std::mutex mu_;
  Snapshot s_;  // guarded by mu_ (buckets kept non-cumulative)
};

// Written by the engine loop, read by anyone.
struct EngineStats {
  std::atomic<int> kv_blocks_total{0}, kv_blocks_used{0}, kv_blocks_free{0}, kv_blocks_cached{0};
  std::atomic<int> seqs_running{0}, seqs_waiting{0};
  std::atomic<int64_t> preemptions_total{0}, generated_tokens_total{0}, prompt_tokens_total{0};
  std::atomic<int64_t> swapped_out_total{0};  // preemptions that swapped K/V to host memory
  std::atomic<int64_t> swap_bytes{0};         // host memory holding swapped K/V now
  std::atomic<int64_t> requests_total{0}, steps_total{0};
  std::atomic<int64_t> batch_tokens_total{0};  // tokens through the forward pass (padding too)
  std::atomic<int64_t> prefix_cache_queries_total{0}, prefix_cache_hits_total{0};  // tokens
  Histogram time_to_first_token{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
  Histogram inter_token_latency{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}};
};

class EngineLoop {
 public:
  // Creates the KV cache and starts the engine thread. invalid_argument for bad options.
  static Result<std::unique_ptr<EngineLoop>> create(const Model& model,
                                                    const EngineLoopOptions& opts);
  ~EngineLoop();  // cancels what is left and joins the thread
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;

  // Validates every sequence (invalid_argument naming the problem: empty prompt, ids out of
  // range, prompt over the context or the KV cache, bad sampling) and queues the request.
  // out_of_memory when the queue is full or the engine is stopping. Any thread.
  Status submit(std::shared_ptr<Request> req);
  // Marks the request cancelled and wakes the engine, which frees its blocks on its next step.
  void cancel(const std::shared_ptr<Request>& req);
  // Refuses new requests from now on (drain before shutdown).
  void stop_accepting() { accepting_.store(false); }
  // Requests submitted and not yet finished.
  int n_in_flight() const { return in_flight_.load(); }

  int n_ctx() const { return n_ctx_; }
  const Model& model() const { return model_; }
  const EngineStats& stats() const { return stats_; }
  const EngineLoopOptions& options() const { return opts_; }

 private:
  EngineLoop(const Model& model, const EngineLoopOptions& opts, int n_ctx,
             std::unique_ptr<KvCacheManager> kv);
  Status validate(const SeqSpec& spec) const;
  void run();            // the thread body
  bool take_incoming();  // moves submitted requests into the scheduler; false: stop
  void sweep_cancelled();
  void step();
  // seq's next token from its logits row (edited in place), with its logprobs when asked for.
  // Touches only seq's own state, so the rows of a step are sampled in parallel.
  struct Sampled {
    int32_t token = 0;
    bool has_lp = false;
    TokenLogprob lp;
  };
  Sampled sample(Sequence& seq, float* logits) const;
  // Appends the sampled token and reports it; ends the sequence on EOS, a stop string,
  // max_tokens or the context limit. In plan order, on the loop's thread.
  void process_output(Sequence& seq, const Sampled& s);
  // Reports a new token and the text that is safe to send (all of it when finished).
  void emit(Sequence& seq, int32_t token, const TokenLogprob* lp, bool finished);
  // Answers seq's request with its end and frees it. completed (it ran to stop or length): under
  // static batching its row goes on computing until its batch ends (Scheduler::retire).
  void finish(Sequence* seq, const std::string& reason, const std::string& error = {},
              bool completed = false);
  void update_stats();

  const Model& model_;
  EngineLoopOptions opts_;
  int n_ctx_;
  ThreadPool pool_;
  std::unique_ptr<KvCacheManager> kv_;
  ModelRunner runner_;
  Scheduler scheduler_;                    // engine thread only
  const int block_size_, n_blocks_total_;  // for validate() on any thread
  const int watermark_blocks_;
  EngineStats stats_;
  std::vector<float> logits_;     // [n_outputs][n_vocab], engine thread only
  std::vector<Sampled> sampled_;  // [plan size] this step's tokens, engine thread only
  SeqId next_seq_ = 0;            // engine thread only

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Request>> incoming_;  // guarded by mu_
  bool stop_ = false;                               // guarded by mu_
  bool wake_ = false;                               // guarded by mu_
  std::atomic<int> in_flight_{0};
  std::atomic<bool> accepting_{true};
  std::thread thread_;
};

}  // namespace kvserve
