// HttpServer: the HTTP front end (cpp-httplib). It only moves bytes: routing, auth, reading the
// body, writing the answer (a JSON body, or server-sent events when streaming) and noticing
// clients that leave. What a body means and what an answer says belong to each route's Protocol
// (server/protocol.h, server/openai_protocol.h). Handler threads submit requests to the
// EngineLoop and relay its per-request channel through the protocol's folder; they never touch
// KV state.
//
// Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health,
// GET /metrics. See docs/server.md.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "core/status.h"
#include "engine/engine_loop.h"
#include "server/protocol.h"

namespace httplib {
class Server;
class Request;
class Response;
}  // namespace httplib

namespace kvserve::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;         // 0: any free port (port() tells which)
  std::string api_key;     // non-empty: /v1/* require "Authorization: Bearer <key>"
  std::string model_name;  // the id /v1/models reports
  int n_http_threads = 0;  // 0: enough for max_seqs + max_queue streams
  size_t max_body_bytes = 8u << 20;
};

class HttpServer {
 public:
  explicit HttpServer(const ServerOptions& opts);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port and starts serving on a background thread. /health answers 503 and the
  // generation routes 503 until set_engine(). io_error when the address cannot be bound.
  Status start(int n_threads);
  // The port bound by start() (the chosen one when ServerOptions::port was 0).
  int port() const { return port_; }
  // Publishes the engine (it must outlive stop()). chat_template: a family name or empty.
  void set_engine(EngineLoop* engine, const std::string& chat_template);
  // Refuses new requests (503), waits up to `timeout` for those in flight, stops listening.
  void drain_and_stop(std::chrono::milliseconds timeout);

 private:
  void add_routes();
  struct Answer;  // one request being answered (http_server.cpp)

  void handle_generate(const httplib::Request& req, httplib::Response& res, const Protocol& proto);
  void respond_full(const httplib::Request& hreq, httplib::Response& res,
                    const std::shared_ptr<Answer>& a);
  void respond_stream(httplib::Response& res, const std::shared_ptr<Answer>& a);

  ServerOptions opts_;
  int port_ = 0;
  std::unique_ptr<httplib::Server> svr_;
  std::thread thread_;
  std::atomic<EngineLoop*> engine_{nullptr};
  ProtocolContext ctx_;  // written before engine_ is published, read-only after
  std::atomic<bool> draining_{false};
  std::atomic<int> n_active_{0};  // generation requests being answered
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace kvserve::server
