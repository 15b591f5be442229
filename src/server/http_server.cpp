#include "server/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <ctime>

#include "server/metrics.h"

namespace kvserve::server {

using json = nlohmann::json;

namespace {

constexpr auto kPoll = std::chrono::milliseconds(50);

// Generated text may hold bytes that are not UTF-8 (byte-fallback tokens): replace, never throw.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
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

// Folds an engine event into the choice it belongs to.
void apply(ChoiceResult& c, const SeqEvent& e) {
  c.text += e.text;
  c.tokens.insert(c.tokens.end(), e.tokens.begin(), e.tokens.end());
  c.logprobs.insert(c.logprobs.end(), e.logprobs.begin(), e.logprobs.end());
  if (e.finished) {
    c.finished = true;
    c.finish_reason = e.finish_reason == "cancelled" ? "abort" : e.finish_reason;
    c.n_prompt_tokens = e.n_prompt_tokens;
    c.n_completion_tokens = e.n_completion_tokens;
    c.n_cached_tokens = e.n_cached_tokens;
  }
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

std::string HttpServer::next_id(bool chat) {
  return std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_.fetch_add(1));
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
    handle_generate(req, res, false);
  });
  s.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generate(req, res, true);
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

void HttpServer::handle_generate(const httplib::Request& hreq, httplib::Response& res, bool chat) {
  EngineLoop* engine = engine_.load();
  if (!engine) {
    res.set_header("Retry-After", "5");
    return send_error(res, error(503, "the model is still loading", "server_error", "loading"));
  }
  if (draining_.load()) {
    return send_error(res,
                      error(503, "the server is shutting down", "server_error", "shutting_down"));
  }
  json body = json::parse(hreq.body, nullptr, false);
  if (body.is_discarded()) {
    return send_error(res, error(400, "the request body is not valid JSON", "invalid_request_error",
                                 "invalid_json"));
  }
  ParsedRequest p;
  if (auto e = chat ? parse_chat(body, ctx_, p) : parse_completion(body, ctx_, p)) {
    return send_error(res, *e);
  }
  auto req = make_engine_request(p);
  Status st = engine->submit(req);
  if (st.code() == StatusCode::kOutOfMemory) {
    res.set_header("Retry-After", "1");
    return send_error(res, error(503, st.message(), "server_error", "queue_full"));
  }
  if (!st.is_ok()) return send_error(res, error(400, st.message(), "invalid_request_error"));
  if (p.stream) return respond_stream(res, req, p);
  respond_full(hreq, res, req, p);
}

namespace {

// The body of a non-streaming answer, once every choice has finished.
json full_response(const ParsedRequest& p, const std::vector<ChoiceResult>& choices,
                   const Tokenizer* tok, const std::string& id, const std::string& model) {
  json out_choices = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    json lp = nullptr;
    json choice;
    if (p.chat) {
      if (p.logprobs >= 0) lp = chat_logprobs_json(tok, c.logprobs);
      choice = {{"index", i},
                {"message", {{"role", "assistant"}, {"content", c.text}}},
                {"logprobs", lp},
                {"finish_reason", c.finish_reason}};
    } else {
      const std::string prefix = p.echo ? p.prompt_texts[i / p.n] : "";
      if (p.logprobs >= 0) lp = completion_logprobs_json(tok, c.logprobs, prefix.size());
      choice = {{"index", i},
                {"text", prefix + c.text},
                {"logprobs", lp},
                {"finish_reason", c.finish_reason}};
    }
    out_choices.push_back(choice);
  }
  return {{"id", id},
          {"object", p.chat ? "chat.completion" : "text_completion"},
          {"created", static_cast<int64_t>(std::time(nullptr))},
          {"model", model},
          {"choices", out_choices},
          {"usage", usage_json(choices, p.n)}};
}

// State of one non-streaming answer, shared by the provider calls and the releaser.
struct FullState {
  std::shared_ptr<Request> req;
  ParsedRequest p;
  std::vector<ChoiceResult> choices;
  size_t n_done = 0;
  std::unique_ptr<ActiveGuard> guard;

  // Takes the events that arrived within one poll interval; true when every choice finished.
  bool collect() {
    for (const SeqEvent& e : req->channel->wait(kPoll)) {
      apply(choices[e.index], e);
      n_done += e.finished;
    }
    return n_done == choices.size();
  }
};

}  // namespace

// The answer is one JSON object, written when every choice has finished. While waiting, the
// handler must notice a client that hangs up (its sequences would otherwise run to the end):
// the body goes out through a chunked content provider, which between polls asks the sink
// whether the connection is still usable (cpp-httplib's is_writable peeks the socket and sees
// the client's FIN or RST). A departed client is cancelled within one poll interval and its
// blocks are freed on the engine's next step. HTTP/1.0 has no chunked encoding: those clients
// get a Content-Length body and no disconnect detection.
void HttpServer::respond_full(const httplib::Request& hreq, httplib::Response& res,
                              const std::shared_ptr<Request>& req, const ParsedRequest& p) {
  auto st = std::make_shared<FullState>();
  st->req = req;
  st->p = p;
  st->choices.resize(req->seqs.size());
  st->guard = std::make_unique<ActiveGuard>(n_active_);
  const std::string id = next_id(p.chat);
  const Tokenizer* tok = ctx_.model->tokenizer.get();
  if (hreq.version == "HTTP/1.0") {
    while (!st->collect()) {
    }
    return send_json(res, 200, full_response(p, st->choices, tok, id, opts_.model_name));
  }
  EngineLoop* engine = engine_.load();
  res.set_chunked_content_provider(
      "application/json",
      [st, tok, id, model = opts_.model_name](size_t, httplib::DataSink& sink) {
        if (!st->collect()) return sink.is_writable();  // false: the client is gone
        const std::string body = dump(full_response(st->p, st->choices, tok, id, model));
        if (!sink.write(body.data(), body.size())) return false;
        sink.done();
        return true;
      },
      [st, engine](bool) {
        // The client went away (or the write failed) before the end: stop and free the blocks.
        if (st->n_done < st->choices.size()) engine->cancel(st->req);
        st->guard.reset();
      });
}

namespace {

// State of one SSE stream, shared by the provider calls and the releaser.
struct StreamState {
  std::shared_ptr<Request> req;
  ParsedRequest p;
  std::vector<ChoiceResult> choices;
  size_t n_done = 0;
  bool started = false;
  bool ended = false;
  std::string id, model;
  int64_t created = 0;
  const Tokenizer* tok = nullptr;
  std::unique_ptr<ActiveGuard> guard;

  json chunk(json choices_arr) const {
    json c = {{"id", id},
              {"object", p.chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", std::move(choices_arr)}};
    if (p.include_usage) c["usage"] = nullptr;
    return c;
  }
  json choice(int index, const std::string& text, const std::vector<TokenLogprob>& lps,
              const std::string& finish, bool role) const {
    json fr = finish.empty() ? json(nullptr) : json(finish);
    json lp = nullptr;
    if (p.chat) {
      if (p.logprobs >= 0 && !lps.empty()) lp = chat_logprobs_json(tok, lps);
      json delta = json::object();
      if (role) delta["role"] = "assistant";
      if (!text.empty() || role) delta["content"] = text;
      return {{"index", index}, {"delta", delta}, {"logprobs", lp}, {"finish_reason", fr}};
    }
    if (p.logprobs >= 0 && !lps.empty()) lp = completion_logprobs_json(tok, lps, 0);
    return {{"index", index}, {"text", text}, {"logprobs", lp}, {"finish_reason", fr}};
  }
};

bool sse(httplib::DataSink& sink, const std::string& data) {
  const std::string msg = "data: " + data + "\n\n";
  return sink.write(msg.data(), msg.size());
}

}  // namespace

void HttpServer::respond_stream(httplib::Response& res, const std::shared_ptr<Request>& req,
                                const ParsedRequest& p) {
  auto st = std::make_shared<StreamState>();
  st->req = req;
  st->p = p;
  st->choices.resize(req->seqs.size());
  st->id = next_id(p.chat);
  st->model = opts_.model_name;
  st->created = static_cast<int64_t>(std::time(nullptr));
  st->tok = ctx_.model->tokenizer.get();
  st->guard = std::make_unique<ActiveGuard>(n_active_);
  EngineLoop* engine = engine_.load();
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [st](size_t, httplib::DataSink& sink) {
        if (!st->started) {
          st->started = true;
          for (size_t i = 0; i < st->choices.size(); ++i) {
            const bool echo = !st->p.chat && st->p.echo;
            if (!st->p.chat && !echo) continue;
            const std::string text = echo ? st->p.prompt_texts[i / st->p.n] : "";
            json c = st->choice(static_cast<int>(i), text, {}, "", st->p.chat);
            if (!sse(sink, dump(st->chunk(json::array({c}))))) return false;
          }
        }
        const auto events = st->req->channel->wait(kPoll);
        if (events.empty() && !sink.is_writable()) return false;
        for (const SeqEvent& e : events) {
          ChoiceResult& c = st->choices[e.index];
          apply(c, e);
          st->n_done += e.finished;
          if (e.text.empty() && e.logprobs.empty() && !e.finished) continue;
          json ch =
              st->choice(e.index, e.text, e.logprobs, e.finished ? c.finish_reason : "", false);
          if (!sse(sink, dump(st->chunk(json::array({ch}))))) return false;
        }
        if (st->n_done == st->choices.size()) {
          if (st->p.include_usage) {
            json u = st->chunk(json::array());
            u["usage"] = usage_json(st->choices, st->p.n);
            if (!sse(sink, dump(u))) return false;
          }
          if (!sse(sink, "[DONE]")) return false;
          st->ended = true;
          sink.done();
        }
        return true;
      },
      [st, engine](bool success) {
        // The client went away (or the write failed): stop generating and free the blocks now.
        if (!success || st->n_done < st->choices.size()) engine->cancel(st->req);
        st->guard.reset();
      });
}

}  // namespace kvserve::server
