// The OpenAI wire protocol: request parsing and validation (into engine requests), response and
// stream-chunk bodies, and the error object. No I/O here; http_server.cpp does the transport.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/request.h"
#include "model/model.h"
#include "server/chat_template.h"

namespace kvserve::server {

// An error for the client: HTTP status plus the OpenAI error object
// {"error":{"message","type","param","code"}}.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null
  nlohmann::json body() const;
};

// What a completion or chat request asks for, validated.
struct ParsedRequest {
  bool chat = false;
  std::vector<std::vector<int32_t>> prompts;  // [n_prompts][tokens]
  std::vector<std::string> prompt_texts;      // [n_prompts], for echo
  int n = 1;                                  // choices per prompt
  int max_tokens = 16;
  bool max_tokens_given = false;
  SamplingParams sampling;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;
  int logprobs = -1;  // -1 off, else top-k alternatives
  bool echo = false;
  bool ignore_eos = false;
  std::string cache_salt;
};

struct ProtocolContext {
  const Model* model = nullptr;
  int n_ctx = 0;
  std::string chat_template;  // family name; empty: the model has none
};

// Parses a /v1/completions body. nullopt on success with `out` filled, else the error.
std::optional<ApiError> parse_completion(const nlohmann::json& body, const ProtocolContext& ctx,
                                         ParsedRequest& out);
// Parses a /v1/chat/completions body (messages rendered with the chat template).
std::optional<ApiError> parse_chat(const nlohmann::json& body, const ProtocolContext& ctx,
                                   ParsedRequest& out);

// The engine request for a parsed one: n sequences per prompt, seeds seed, seed+1, ...;
// choice index = prompt_index * n + i.
std::shared_ptr<Request> make_engine_request(const ParsedRequest& p);

// One choice's accumulated result.
struct ChoiceResult {
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<TokenLogprob> logprobs;
  std::string finish_reason;
  int n_prompt_tokens = 0, n_completion_tokens = 0, n_cached_tokens = 0;
  bool finished = false;
};

nlohmann::json usage_json(const std::vector<ChoiceResult>& choices, int n_per_prompt);
// Logprobs objects: completions style ({tokens, token_logprobs, top_logprobs, text_offset}) or
// chat style ({content: [{token, logprob, bytes, top_logprobs}]}).
nlohmann::json completion_logprobs_json(const Tokenizer* tok, const std::vector<TokenLogprob>& lps,
                                        size_t text_offset0);
nlohmann::json chat_logprobs_json(const Tokenizer* tok, const std::vector<TokenLogprob>& lps);

}  // namespace kvserve::server
