#include "server/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <ctime>

#include "server/metrics.h"
#include "server/openai_protocol.h"

namespace kvserve::server {

using json = nlohmann::json;

namespace {

constexpr auto kPoll = std::chrono::milliseconds(50);

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status, e.body());
}

ApiError error(int status, std::string message, std::string type, std::string code = {}) {
  ApiError e;
  e.status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.code = std::move(code);
  return e;
}

// Counts a generation request from its handler's start until its response is finished.
class ActiveGuard {
 public:
  explicit ActiveGuard(std::atomic<int>& n) : n_(n) { ++n_; }
  ~ActiveGuard() { --n_; }
  ActiveGuard(const ActiveGuard&) = delete;
  ActiveGuard& operator=(const ActiveGuard&) = delete;

 private:
  std::atomic<int>& n_;
};

// Writes SSE events, each as one write (a chunk on the wire). False once the client is gone.
bool write_sse(httplib::DataSink& sink, const std::vector<SseEvent>& events) {
  for (const SseEvent& e : events) {
    const std::string msg = e.wire();
    if (!sink.write(msg.data(), msg.size())) return false;
  }
  return true;
}

// httplib::Server with its listening socket exposed: cpp-httplib 0.11 listens with a backlog of
// 5, so a burst of clients connecting at once overflows it and some wait a SYN retransmission
// (1 s) before they are even accepted; start() raises the backlog.
class Listener : public httplib::Server {
 public:
  int listening_socket() const { return svr_sock_.load(); }
};

}  // namespace

HttpServer::HttpServer(const ServerOptions& opts)
    : opts_(opts), svr_(std::make_unique<Listener>()) {
  add_routes();
}

HttpServer::~HttpServer() {
  if (thread_.joinable()) {
    svr_->stop();
    thread_.join();
  }
}

Status HttpServer::start(int n_threads) {
  const size_t n = static_cast<size_t>(std::max(8, n_threads));
  svr_->new_task_queue = [n] { return new httplib::ThreadPool(n); };
  svr_->set_payload_max_length(opts_.max_body_bytes);
  svr_->set_keep_alive_timeout(2);
  // Each stream chunk is a small write: without TCP_NODELAY, Nagle's algorithm holds it until the
  // client acknowledges the previous one (up to its delayed-ACK timeout, 40 ms on Linux).
  svr_->set_tcp_nodelay(true);
  port_ = opts_.port;
  if (opts_.port == 0) {
    port_ = svr_->bind_to_any_port(opts_.host);
    if (port_ <= 0) return io_error("cannot listen on " + opts_.host + " (any port)");
  } else if (!svr_->bind_to_port(opts_.host, opts_.port)) {
    return io_error("cannot listen on " + opts_.host + ":" + std::to_string(opts_.port));
  }
  // listen() again on a listening socket only changes its backlog.
  ::listen(static_cast<Listener&>(*svr_).listening_socket(), SOMAXCONN);
  thread_ = std::thread([this] { svr_->listen_after_bind(); });
  return Status::ok();
}

void HttpServer::set_engine(EngineLoop* engine, const std::string& chat_template) {
  ctx_.model = &engine->model();
  ctx_.n_ctx = engine->n_ctx();
  ctx_.chat_template = chat_template;
  engine_.store(engine);
}

void HttpServer::drain_and_stop(std::chrono::milliseconds timeout) {
  draining_.store(true);
  if (EngineLoop* e = engine_.load()) e->stop_accepting();
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    EngineLoop* e = engine_.load();
    if (n_active_.load() == 0 && (!e || e->n_in_flight() == 0)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  svr_->stop();
  if (thread_.joinable()) thread_.join();
}

void HttpServer::add_routes() {
  httplib::Server& s = *svr_;
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (opts_.api_key.empty() || req.path.rfind("/v1/", 0) != 0) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    if (req.get_header_value("Authorization") != "Bearer " + opts_.api_key) {
      send_error(res, error(401, "Incorrect or missing API key (send Authorization: Bearer <key>)",
                            "invalid_request_error", "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string msg = res.status == 404   ? "no route for " + req.method + " " + req.path
                            : res.status == 413 ? "the request body is too large"
                                                : "HTTP error " + std::to_string(res.status);
    send_json(res, res.status, error(res.status, msg, "invalid_request_error").body());
  });
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "internal error";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what += std::string(": ") + e.what();
        } catch (...) {
        }
        send_error(res, error(500, what, "server_error"));
      });
  s.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generate(req, res, completions_protocol());
  });
  s.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generate(req, res, chat_protocol());
  });
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json data = json::array();
    if (EngineLoop* e = engine_.load()) {
      data.push_back({{"id", opts_.model_name},
                      {"object", "model"},
                      {"created", static_cast<int64_t>(std::time(nullptr))},
                      {"owned_by", "kvserve"},
                      {"max_model_len", e->n_ctx()}});
    }
    send_json(res, 200, {{"object", "list"}, {"data", data}});
  });
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (!engine_.load()) return send_json(res, 503, {{"status", "loading"}});
    if (draining_.load()) return send_json(res, 503, {{"status", "draining"}});
    send_json(res, 200, {{"status", "ok"}});
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(render_metrics(engine_.load()), "text/plain; version=0.0.4");
  });
}

// One request being answered, shared by its content provider's calls and their releaser.
struct HttpServer::Answer {
  std::shared_ptr<Request> req;
  std::unique_ptr<ResponseFolder> folder;
  std::unique_ptr<ActiveGuard> guard;  // reset when the answer is over
  bool started = false;                // streaming: stream_start() was sent

  // Folds the events that arrive within one poll interval.
  void poll() { folder->add(req->channel->wait(kPoll)); }
};

void HttpServer::handle_generate(const httplib::Request& hreq, httplib::Response& res,
                                 const Protocol& proto) {
  const auto fail = [&](const ApiError& e) { send_json(res, e.status, proto.error_body(e)); };
  EngineLoop* engine = engine_.load();
  if (!engine) {
    res.set_header("Retry-After", "5");
    return fail(error(503, "the model is still loading", "server_error", "loading"));
  }
  if (draining_.load()) {
    return fail(error(503, "the server is shutting down", "server_error", "shutting_down"));
  }
  ParsedRequest p;
  if (auto e = proto.parse(hreq.body, ctx_, p)) return fail(*e);
  auto req = make_engine_request(p);
  Status st = engine->submit(req);
  if (st.code() == StatusCode::kOutOfMemory) {
    res.set_header("Retry-After", "1");
    return fail(error(503, st.message(), "server_error", "queue_full"));
  }
  if (!st.is_ok()) return fail(error(400, st.message(), "invalid_request_error"));
  const bool stream = p.stream;
  auto a = std::make_shared<Answer>();
  a->req = std::move(req);
  a->guard = std::make_unique<ActiveGuard>(n_active_);
  ResponseMeta meta;
  meta.id = std::string(proto.id_prefix) + std::to_string(next_id_.fetch_add(1));
  meta.model = opts_.model_name;
  // A stream's chunks carry its start time; a body is stamped when it is rendered.
  meta.created = stream ? static_cast<int64_t>(std::time(nullptr)) : 0;
  meta.tok = ctx_.model->tokenizer.get();
  a->folder = proto.make_folder(std::move(p), std::move(meta));
  if (stream) return respond_stream(res, a);
  respond_full(hreq, res, a);
}

// The answer is one JSON object, written when every choice has finished. While waiting, the
// handler must notice a client that hangs up (its sequences would otherwise run to the end):
// the body goes out through a chunked content provider, which between polls asks the sink
// whether the connection is still usable (cpp-httplib's is_writable peeks the socket and sees
// the client's FIN or RST). A departed client is cancelled within one poll interval and its
// blocks are freed on the engine's next step. HTTP/1.0 has no chunked encoding: those clients
// get a Content-Length body and no disconnect detection.
void HttpServer::respond_full(const httplib::Request& hreq, httplib::Response& res,
                              const std::shared_ptr<Answer>& a) {
  if (hreq.version == "HTTP/1.0") {
    while (!a->folder->done()) a->poll();
    return send_json(res, 200, a->folder->body());
  }
  EngineLoop* engine = engine_.load();
  res.set_chunked_content_provider(
      "application/json",
      [a](size_t, httplib::DataSink& sink) {
        a->poll();
        if (!a->folder->done()) return sink.is_writable();  // false: the client is gone
        const std::string body = dump_json(a->folder->body());
        if (!sink.write(body.data(), body.size())) return false;
        sink.done();
        return true;
      },
      [a, engine](bool) {
        // The client went away (or the write failed) before the end: stop and free the blocks.
        if (!a->folder->done()) engine->cancel(a->req);
        a->guard.reset();
      });
}

// Server-sent events: the protocol's opening events, then those of each batch of engine
// events as it arrives, then its closing ones. A client that hangs up is noticed at the next
// write, or between events when is_writable() sees its FIN or RST.
void HttpServer::respond_stream(httplib::Response& res, const std::shared_ptr<Answer>& a) {
  EngineLoop* engine = engine_.load();
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [a](size_t, httplib::DataSink& sink) {
        if (!a->started) {
          a->started = true;
          if (!write_sse(sink, a->folder->stream_start())) return false;
        }
        const auto events = a->req->channel->wait(kPoll);
        if (events.empty() && !sink.is_writable()) return false;
        if (!write_sse(sink, a->folder->add_streaming(events))) return false;
        if (!a->folder->done()) return true;
        if (!write_sse(sink, a->folder->stream_end())) return false;
        sink.done();
        return true;
      },
      [a, engine](bool success) {
        // The client went away (or the write failed): stop generating and free the blocks now.
        if (!success || !a->folder->done()) engine->cancel(a->req);
        a->guard.reset();
      });
}

}  // namespace kvserve::server
