// EngineLoop: the serving engine's thread around the one EngineCore (engine/engine_core.h).
// The thread owns the core (and so the KV cache, runner and scheduler); other threads talk to it
// only through submit()/cancel() (a locked queue) and read its statistics (atomics and locked
// histograms).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include "core/status.h"
#include "engine/engine_core.h"
#include "engine/engine_options.h"
#include "engine/engine_stats.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "model/model.h"

namespace kvserve {

struct EngineLoopOptions {
  EngineOptions engine;    // block size, KV type and budget, context, threads
  SchedulerOptions sched;  // batching policy and limits
  int max_queue = 256;     // requests beyond max_seqs that may wait; more are refused
};

class EngineLoop {
 public:
  // Creates the engine core and starts the engine thread. invalid_argument for bad options.
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
  // Runs f(core) on the engine thread between two steps (save, load, reset, a consistent
  // read) and returns its result through the future, so the engine thread stays the only owner
  // of KV state. Commands run in the order posted, after the requests submitted before them
  // were taken in. One posted while the engine stops is never run: its future then throws
  // std::future_error (broken_promise). Any thread.
  template <class F>
  auto post(F f) -> std::future<std::invoke_result_t<F, EngineCore&>> {
    using R = std::invoke_result_t<F, EngineCore&>;
    auto task = std::make_shared<std::packaged_task<R(EngineCore&)>>(std::move(f));
    auto result = task->get_future();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return result;  // the task dies unrun: broken_promise
      commands_.push_back([task](EngineCore& core) { (*task)(core); });
    }
    cv_.notify_all();
    return result;
  }
  // The cache as of the engine's last step. Any thread.
  std::shared_ptr<const CacheSnapshot> snapshot() const { return core_->snapshot(); }

  int n_ctx() const { return core_->n_ctx(); }
  const Model& model() const { return core_->model(); }
  const EngineStats& stats() const { return core_->stats(); }
  const EngineLoopOptions& options() const { return opts_; }

 private:
  EngineLoop(const EngineLoopOptions& opts, std::unique_ptr<EngineCore> core);
  void run();            // the thread body
  bool take_incoming();  // moves submitted requests into the core; false: stop
  void wait_briefly();   // nothing could run: sleep up to 2 ms unless woken
  bool woken() const;    // something to take in, or stop; requires mu_

  EngineLoopOptions opts_;
  std::unique_ptr<EngineCore> core_;  // engine thread only, except its any-thread accessors

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Request>> incoming_;          // guarded by mu_
  std::vector<std::function<void(EngineCore&)>> commands_;  // guarded by mu_
  bool stop_ = false;                                       // guarded by mu_
  bool wake_ = false;                                       // guarded by mu_
  std::atomic<int> in_flight_{0};
  std::atomic<bool> accepting_{true};
  std::thread thread_;
};

}  // namespace kvserve
