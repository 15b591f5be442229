#include "engine/engine_loop.h"

namespace kvserve {

Result<std::unique_ptr<EngineLoop>> EngineLoop::create(const Model& model,
                                                       const EngineLoopOptions& opts) {
  if (opts.max_queue < 0) return invalid_argument("--max-queue must be >= 0");
  EngineCoreOptions co;
  co.engine = opts.engine;
  co.sched = opts.sched;
  co.kv_seqs = opts.sched.max_seqs;
  KV_ASSIGN_OR_RETURN(auto core, EngineCore::create(model, co));
  return std::unique_ptr<EngineLoop>(new EngineLoop(opts, std::move(core)));
}

EngineLoop::EngineLoop(const EngineLoopOptions& opts, std::unique_ptr<EngineCore> core)
    : opts_(opts), core_(std::move(core)) {
  core_->set_on_finish([this] { --in_flight_; });
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

Status EngineLoop::submit(std::shared_ptr<Request> req) {
  if (req->seqs.empty()) return invalid_argument("the request has no prompt");
  for (const auto& s : req->seqs) KV_RETURN_IF_ERROR(core_->validate(s));
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
  std::vector<std::function<void(EngineCore&)>> commands;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (core_->idle()) cv_.wait(lock, [&] { return woken(); });
    if (stop_) return false;
    reqs.swap(incoming_);
    commands.swap(commands_);
    wake_ = false;
  }
  for (auto& r : reqs) core_->add(r);
  for (auto& c : commands) c(*core_);
  return true;
}

bool EngineLoop::woken() const {
  return stop_ || wake_ || !incoming_.empty() || !commands_.empty();
}

void EngineLoop::wait_briefly() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(2), [&] { return woken(); });
}

void EngineLoop::run() {
  while (take_incoming()) {
    // Nothing ran but work is left (a static batch forming, or blocks busy): wait briefly.
    if (!core_->step() && !core_->idle()) wait_briefly();
  }
  core_->finish_all("cancelled");
  std::lock_guard<std::mutex> lock(mu_);
  commands_.clear();  // never run: their futures report broken_promise
}

}  // namespace kvserve
