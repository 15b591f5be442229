#include "bench/serve.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "engine/engine_loop.h"
#include "engine/sampler.h"
#include "server/http_server.h"

namespace kvserve::bench {

namespace {

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

// One request of the workload.
struct BenchRequest {
  std::vector<int32_t> prompt;  // [prompt_len] random ids in [3, n_vocab)
  int max_tokens = 0;           // drawn in [gen_min, gen_max]; generated in full (ignore_eos)
};

// Request i of a run's shared list, seeded by i: the same prompts and lengths for every
// scheduler and transport, and the first requests of a larger run are a smaller run's.
BenchRequest workload_request(const ServeOptions& f, int n_vocab, int i) {
  Rng rng(1000 + i);
  BenchRequest r;
  for (int k = 0; k < f.prompt_len; ++k) {
    r.prompt.push_back(3 + static_cast<int32_t>(rng.next() % (n_vocab - 3)));
  }
  if (f.lognormal) {
    // Long-tailed, as chat outputs are: median the geometric mean of the bounds, sigma a
    // quarter of their log ratio (so +-2 sigma spans them), clipped to the bounds.
    const double u1 = std::max(1e-9, static_cast<double>(rng.uniform()));
    const double u2 = rng.uniform();
    const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
    const double lo = f.gen_min, hi = f.gen_max;
    const double len = std::sqrt(lo * hi) * std::exp(z * std::log(hi / lo) / 4.0);
    r.max_tokens = static_cast<int>(std::clamp(std::lround(len), long{f.gen_min}, long{f.gen_max}));
  } else {
    r.max_tokens = f.gen_min + static_cast<int>(rng.next() % (f.gen_max - f.gen_min + 1));
  }
  return r;
}

// Arrival times seen by one client. A request calls start() when sent and arrival() whenever
// new tokens reach the client: the first arrival gives the TTFT, later ones an inter-token gap.
class LatencyLog {
 public:
  void start() {
    last_ = Clock::now();
    first_ = true;
  }
  // `tokens` new output tokens arrived (counted live, for the full-concurrency rate).
  void arrival(int64_t tokens = 1) {
    if (live) live->fetch_add(tokens, std::memory_order_relaxed);
    const auto now = Clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last_).count();
    (first_ ? ttft_ms : itl_ms).push_back(ms);
    first_ = false;
    last_ = now;
  }
  void merge(const LatencyLog& o) {
    ttft_ms.insert(ttft_ms.end(), o.ttft_ms.begin(), o.ttft_ms.end());
    itl_ms.insert(itl_ms.end(), o.itl_ms.begin(), o.itl_ms.end());
    n_tokens += o.n_tokens;
  }

  std::vector<double> ttft_ms, itl_ms;
  int64_t n_tokens = 0;                  // output tokens received
  std::atomic<int64_t>* live = nullptr;  // all clients' tokens so far, when shared
  // Tokens received by all clients while every client still had work, and that time: the
  // throughput at the full client count, without the ramp-down as clients run out of requests.
  int64_t steady_tokens = 0;
  double steady_s = 0;

 private:
  Clock::time_point last_;
  bool first_ = true;
};

// Sends one request and waits for all of it, logging arrivals. One per client thread.
using Sender = std::function<Status(const BenchRequest&, LatencyLog&)>;

// In-process: submit to the engine, read its channel.
Sender engine_sender(EngineLoop& engine, const ServeOptions& f) {
  return [&engine, &f](const BenchRequest& br, LatencyLog& log) -> Status {
    auto req = std::make_shared<Request>();
    SeqSpec s;
    s.prompt = br.prompt;
    s.max_tokens = br.max_tokens;
    s.ignore_eos = true;
    s.sampling.temperature = f.temperature;
    s.sampling.top_p = f.top_p;
    req->seqs.push_back(s);
    log.start();
    KV_RETURN_IF_ERROR(engine.submit(req));
    for (bool done = false; !done;) {
      for (const SeqEvent& e : req->channel->wait(std::chrono::milliseconds(100))) {
        if (!e.tokens.empty()) {
          log.arrival(static_cast<int64_t>(e.tokens.size()));
          log.n_tokens += static_cast<int64_t>(e.tokens.size());
        }
        done |= e.finished;
      }
    }
    return Status::ok();
  };
}

// Splits a server-sent-event stream into the payloads of its `data:` lines.
class SseReader {
 public:
  template <typename OnData>
  void feed(const char* p, size_t n, OnData&& on_data) {
    buf_.append(p, n);
    for (size_t end; (end = buf_.find("\n\n")) != std::string::npos;) {
      std::istringstream event(buf_.substr(0, end));
      buf_.erase(0, end + 2);
      for (std::string line; std::getline(event, line);) {
        if (line.rfind("data: ", 0) == 0) on_data(line.substr(6));
      }
    }
  }

 private:
  std::string buf_;
};

// Over HTTP: a streaming /v1/completions request on a kept-alive loopback connection. A chunk
// with text is an arrival (the server sends one per token unless a token's text is held back,
// e.g. an incomplete UTF-8 character); the token count comes from the usage chunk.
Sender http_sender(int port, const ServeOptions& f) {
  auto cli = std::make_shared<httplib::Client>("127.0.0.1", port);
  cli->set_keep_alive(true);
  cli->set_tcp_nodelay(true);
  cli->set_read_timeout(600, 0);
  return [cli, temperature = f.temperature, top_p = f.top_p](const BenchRequest& br,
                                                             LatencyLog& log) -> Status {
    const nlohmann::json body = {{"prompt", br.prompt},
                                 {"max_tokens", br.max_tokens},
                                 {"temperature", temperature},
                                 {"top_p", top_p},
                                 {"ignore_eos", true},
                                 {"stream", true},
                                 {"stream_options", {{"include_usage", true}}}};
    SseReader sse;
    int64_t n_usage = -1;
    bool saw_done = false;
    std::string head;  // the start of the body, for error messages
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.headers = {{"Content-Type", "application/json"}};
    req.body = body.dump();
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      if (head.size() < 512) head.append(data, std::min<size_t>(n, 512 - head.size()));
      sse.feed(data, n, [&](const std::string& payload) {
        if (payload == "[DONE]") {
          saw_done = true;
          return;
        }
        const auto j = nlohmann::json::parse(payload, nullptr, false);
        if (!j.is_object()) return;
        if (j.contains("usage") && j["usage"].is_object()) {
          n_usage = j["usage"].value("completion_tokens", int64_t{0});
        }
        for (const auto& c : j.value("choices", nlohmann::json::array())) {
          if (c.contains("text") && c["text"].is_string() &&
              !c["text"].get<std::string>().empty()) {
            log.arrival();
            break;
          }
        }
      });
      return true;
    };
    log.start();
    auto res = cli->send(req);
    if (!res) return io_error("HTTP request failed: " + httplib::to_string(res.error()));
    if (res->status != 200) {
      return io_error("HTTP " + std::to_string(res->status) + " from the server: " + head);
    }
    if (!saw_done || n_usage < 0) return io_error("the event stream ended early: " + head);
    log.n_tokens += n_usage;
    return Status::ok();
  };
}

// Runs n_clients threads over one shared list of n_clients * requests_per_client requests, as
// vLLM's serving benchmark does with --max-concurrency: each client sends the next unsent
// request as soon as its last one is done, through its own sender. (Fixed per-client lists
// left the clients with the shortest lists idle while others still had several requests to
// go: a ramp-down that measured the lists, not the engine.) The merged log, or the first
// failure.
Result<LatencyLog> drive_clients(const ServeOptions& f, int n_vocab, int n_clients,
                                 const std::function<Sender(int)>& make_sender) {
  std::mutex mu;
  LatencyLog all;  // guarded by mu
  Status failure;  // guarded by mu
  std::atomic<int64_t> live{0};
  std::atomic<int> next{0};  // the next unsent request
  const int n_requests = n_clients * f.requests_per_client;
  bool steady_done = false;  // guarded by mu
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  for (int c = 0; c < n_clients; ++c) {
    threads.emplace_back([&, send = make_sender(c)] {
      LatencyLog mine;
      mine.live = &live;
      Status st;
      for (int i; (i = next.fetch_add(1)) < n_requests;) {
        if (st = send(workload_request(f, n_vocab, i), mine); !st.is_ok()) break;
      }
      std::lock_guard<std::mutex> lock(mu);
      if (!steady_done) {  // the first client to run out of requests ends the full concurrency
        steady_done = true;
        all.steady_tokens = live.load();
        all.steady_s = std::chrono::duration<double>(Clock::now() - t0).count();
      }
      all.merge(mine);
      if (!st.is_ok() && failure.is_ok()) failure = st;
    });
  }
  for (auto& t : threads) t.join();
  if (!failure.is_ok()) return failure;
  return all;
}

EngineLoopOptions bench_engine_options(const ServeOptions& f, SchedulerKind kind, int n_clients,
                                       PreemptionMode preemption) {
  EngineLoopOptions o;
  o.engine.kv_type_k = o.engine.kv_type_v = f.kv_type;
  o.engine.block_size = default_block_size(f.kv_type, f.kv_type);
  o.engine.n_threads = f.n_threads;
  o.engine.n_ctx = f.prompt_len + f.gen_max + 8;
  o.engine.kv_blocks = f.kv_blocks > 0
                           ? f.kv_blocks
                           : blocks_for_tokens(o.engine.n_ctx, o.engine.block_size) * n_clients + 8;
  o.sched.preemption = preemption;
  o.sched.kind = kind;
  o.sched.max_seqs = n_clients;
  o.sched.max_batch_tokens = f.max_batch_tokens;
  o.max_queue = n_clients * f.requests_per_client;
  return o;
}

Result<ServeRow> run_load(const Model& m, const ServeOptions& f, SchedulerKind kind, int n_clients,
                          PreemptionMode preemption) {
  KV_ASSIGN_OR_RETURN(auto engine,
                      EngineLoop::create(m, bench_engine_options(f, kind, n_clients, preemption)));
  std::unique_ptr<server::HttpServer> http;  // stopped before the engine goes
  std::function<Sender(int)> make_sender = [&](int) { return engine_sender(*engine, f); };
  if (f.http) {
    server::ServerOptions so;
    so.host = "127.0.0.1";
    so.port = 0;  // any free port
    so.model_name = "bench";
    http = std::make_unique<server::HttpServer>(so);
    KV_RETURN_IF_ERROR(http->start(n_clients + 8));
    http->set_engine(engine.get(), "");
    make_sender = [port = http->port(), &f](int) { return http_sender(port, f); };
  }
  const auto t0 = Clock::now();
  Result<LatencyLog> log = drive_clients(f, m.config.n_vocab, n_clients, make_sender);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (http) http->drain_and_stop(std::chrono::milliseconds(0));
  if (!log) return log.status();
  ServeRow r;
  r.scheduler = scheduler_kind_name(kind);
  r.preemption = preemption == PreemptionMode::kSwap ? "swap" : "recompute";
  r.clients = n_clients;
  r.seconds = seconds;
  r.tokens = log->n_tokens;
  r.tps = r.tokens / r.seconds;
  r.steady_tps = log->steady_s > 0 ? log->steady_tokens / log->steady_s : r.tps;
  r.ttft_p50 = percentile(log->ttft_ms, 0.5);
  r.ttft_p99 = percentile(log->ttft_ms, 0.99);
  r.itl_p50 = percentile(log->itl_ms, 0.5);
  r.itl_p99 = percentile(log->itl_ms, 0.99);
  r.preemptions = engine->stats().preemptions_total.load();
  r.swapped = engine->stats().swapped_out_total.load();
  return r;
}

}  // namespace

const ServeRow* ServeReport::find(const std::string& scheduler, int clients,
                                  const char* preemption) const {
  for (const auto& r : rows) {
    if (r.scheduler == scheduler && r.clients == clients &&
        (!preemption || r.preemption == preemption))
      return &r;
  }
  return nullptr;
}

Status check_serve_options(const ServeOptions& o) {
  if (o.gen_min < 1 || o.gen_max < o.gen_min || o.prompt_len < 1 || o.requests_per_client < 1) {
    return invalid_argument(
        "need 1 <= --gen-min <= --gen-max, --prompt-len >= 1, --requests-per-client >= 1");
  }
  return Status::ok();
}

Result<ServeReport> run_serve(const ServeOptions& o, const ServeProgress& progress) {
  KV_RETURN_IF_ERROR(check_serve_options(o));
  KV_ASSIGN_OR_RETURN(auto m, o.load_model());
  ServeReport report;
  report.model = std::filesystem::path(m->path).filename().string();
  if (progress) progress(report);
  for (PreemptionMode mode : o.preemptions) {
    for (SchedulerKind k : o.schedulers) {
      for (int c : o.clients) {
        KV_ASSIGN_OR_RETURN(ServeRow r, run_load(*m, o, k, c, mode));
        report.rows.push_back(r);
        if (progress) progress(report);
      }
    }
  }
  return report;
}

}  // namespace kvserve::bench
