// Protocols at the edge: what an API (OpenAI completions, chat, later Anthropic messages) plugs
// into the HTTP server. Each API is a Protocol: a parser of request bodies into one internal
// request (ParsedRequest, which make_engine_request turns into engine sequences) and a
// ResponseFolder that folds the engine's events into that API's answer, a JSON body or SSE
// events, with the same accumulation for both. No I/O here: http_server.cpp moves the bytes.
//
// Adding an API: one file that defines a Protocol (parse, make_folder, error_body) and a
// ResponseFolder subclass, plus one route in HttpServer::add_routes.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/request.h"
#include "model/model.h"

namespace kvserve::server {

// An error for the client: HTTP status plus what the error object says.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null
  // The OpenAI error object {"error":{"message","type","param","code"}}, which the server's own
  // errors (401, 404, 413, 500) use whatever the route.
  nlohmann::json body() const;
};

// What every parser may need from the server. Written once before serving, read-only after.
struct ProtocolContext {
  const Model* model = nullptr;
  int n_ctx = 0;
  std::string chat_template;  // family name; empty: the model has none
};

// The internal request every API parses into: the engine's part (prompts .. cache_salt) and the
// options that shape the answer (stream .. echo), validated.
struct ParsedRequest {
  std::vector<std::vector<int32_t>> prompts;  // [n_prompts][tokens]
  std::vector<std::string> prompt_texts;      // [n_prompts], for echo
  int n = 1;                                  // choices per prompt
  int max_tokens = 16;
  bool max_tokens_given = false;
  SamplingParams sampling;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  int logprobs = -1;  // -1 off, else top-k alternatives
  std::string cache_salt;
  bool stream = false;
  bool include_usage = false;
  bool echo = false;
};

// The engine request for a parsed one: n sequences per prompt, seeds seed, seed+1, ...;
// choice index = prompt_index * n + i.
std::shared_ptr<Request> make_engine_request(const ParsedRequest& p);

// Parses a request body as JSON. nullopt with `out` set, else 400 (code invalid_json).
std::optional<ApiError> parse_json(std::string_view text, nlohmann::json& out);
// JSON text of a body or chunk. Generated text may hold bytes that are not UTF-8 (byte-fallback
// tokens): they are replaced, never thrown on.
std::string dump_json(const nlohmann::json& j);

// One choice's accumulated result.
struct ChoiceResult {
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<TokenLogprob> logprobs;
  std::string finish_reason;  // the engine's, except "cancelled" reads "abort"
  int n_prompt_tokens = 0, n_completion_tokens = 0, n_cached_tokens = 0;
  bool finished = false;
};

// One server-sent event. data holds no newline (a JSON text or a marker such as [DONE]).
struct SseEvent {
  std::string event;  // empty: unnamed, as OpenAI sends them
  std::string data;
  // Its bytes on the wire: "event: <event>\n" when named, then "data: <data>\n\n".
  std::string wire() const;
};

// Who the answer is from, for the envelope of bodies and chunks.
struct ResponseMeta {
  std::string id;                  // "cmpl-7"
  std::string model;               // the served model name
  int64_t created = 0;             // Unix time; 0: the time the body is rendered
  const Tokenizer* tok = nullptr;  // for logprobs token texts; null: ids as text
};

// Folds one request's engine events, choice by choice, into its API's answer. add() and
// add_streaming() share the accumulation; a streaming answer is stream_start(), then
// add_streaming() per batch of events, then stream_end() once done(); a non-streaming one is
// add() per batch, then body() once done(). Not thread-safe: the handler thread that owns the
// answer calls it.
class ResponseFolder {
 public:
  explicit ResponseFolder(size_t n_choices) : choices_(n_choices) {}
  virtual ~ResponseFolder() = default;
  ResponseFolder(const ResponseFolder&) = delete;
  ResponseFolder& operator=(const ResponseFolder&) = delete;

  // Folds a batch of events. Each SeqEvent::index must be < n_choices (std::out_of_range).
  void add(const std::vector<SeqEvent>& events) { fold(events, nullptr); }
  // Folds a batch of events and returns the SSE events it yields, in event order.
  std::vector<SseEvent> add_streaming(const std::vector<SeqEvent>& events);
  // True once every choice has finished.
  bool done() const { return n_done_ == choices_.size(); }
  const std::vector<ChoiceResult>& choices() const { return choices_; }

  // The SSE events sent before any engine event (a role, an echoed prompt); may be none.
  virtual std::vector<SseEvent> stream_start() const = 0;
  // The SSE events after the last choice finished (usage, end marker).
  virtual std::vector<SseEvent> stream_end() const = 0;
  // The non-streaming body; meant for once done().
  virtual nlohmann::json body() const = 0;

 protected:
  // Appends the SSE events for `e`, already folded into `c` (its choice), to `out`.
  virtual void stream_event(const SeqEvent& e, const ChoiceResult& c,
                            std::vector<SseEvent>& out) const = 0;

 private:
  void fold(const std::vector<SeqEvent>& events, std::vector<SseEvent>* out);

  std::vector<ChoiceResult> choices_;
  size_t n_done_ = 0;
};

// One API. Plain functions, called concurrently on HTTP handler threads: a protocol holds no
// state, its folders do.
struct Protocol {
  std::string_view id_prefix;  // of answer ids: "cmpl-", "chatcmpl-"
  // Parses and validates a request body. nullopt with `out` filled, else the client's error.
  std::optional<ApiError> (*parse)(std::string_view body, const ProtocolContext& ctx,
                                   ParsedRequest& out);
  // The folder for the answer to `p`, whose engine request has p.prompts.size() * p.n choices.
  std::unique_ptr<ResponseFolder> (*make_folder)(ParsedRequest p, ResponseMeta meta);
  // The body of an error on this API's routes.
  nlohmann::json (*error_body)(const ApiError& e);
};

// Protocol::parse for an API whose body is one JSON object read by ParseObject.
template <std::optional<ApiError> (*ParseObject)(const nlohmann::json&, const ProtocolContext&,
                                                 ParsedRequest&)>
std::optional<ApiError> parse_json_body(std::string_view body, const ProtocolContext& ctx,
                                        ParsedRequest& out) {
  nlohmann::json j;
  if (auto err = parse_json(body, j)) return err;
  return ParseObject(j, ctx, out);
}

// Protocol::make_folder for a folder constructed from (ParsedRequest, ResponseMeta).
template <class Folder>
std::unique_ptr<ResponseFolder> make_folder_of(ParsedRequest p, ResponseMeta meta) {
  return std::make_unique<Folder>(std::move(p), std::move(meta));
}

}  // namespace kvserve::server
