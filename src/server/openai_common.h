// What the OpenAI APIs (openai_completions.cpp, openai_chat.cpp) share: field readers that
// answer OpenAI-style 400s, the request fields both endpoints take, the usage and logprobs
// objects, and the folder that writes OpenAI envelopes (bodies, chunks, usage, [DONE]).
// Parsers run on HTTP handler threads; everything here is pure.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "server/protocol.h"

namespace kvserve::server::openai {

// A 400 invalid_request_error naming `param` (empty: null).
std::optional<ApiError> bad(std::string message, std::string param, std::string code = {});

// The field is there and not null.
bool present(const nlohmann::json& b, const char* key);
// Typed readers: absent or null keeps `out`; the wrong type or a value out of range is a 400
// naming the field. get_float's range is [lo, hi], or (lo, hi] when lo_open.
std::optional<ApiError> get_float(const nlohmann::json& b, const char* key, double lo, double hi,
                                  bool lo_open, float& out);
std::optional<ApiError> get_int(const nlohmann::json& b, const char* key, int64_t lo, int64_t hi,
                                int64_t& out);
std::optional<ApiError> get_bool(const nlohmann::json& b, const char* key, bool& out);

// Returns the error of `expr`, if any, from the calling parser.
#define KV_API_TRY(expr)             \
  do {                               \
    if (auto _e = (expr)) return _e; \
  } while (0)

// A prompt's token ids fit the model: non-empty, within the context, ids in the vocabulary.
std::optional<ApiError> check_tokens(const std::vector<int32_t>& ids, const ProtocolContext& ctx);
// The sampling, n, max_tokens, stop, stream and other fields both endpoints take, plus the
// refusal of fields kvserve does not implement.
std::optional<ApiError> parse_common(const nlohmann::json& b, const ProtocolContext& ctx,
                                     ParsedRequest& out);

// {"prompt_tokens","completion_tokens","total_tokens","prompt_tokens_details":{"cached_tokens"}};
// each prompt's tokens counted once (from its first choice), as OpenAI does.
nlohmann::json usage_json(const std::vector<ChoiceResult>& choices, int n_per_prompt);
// Logprobs objects: completions style ({tokens, token_logprobs, top_logprobs, text_offset}) or
// chat style ({content: [{token, logprob, bytes, top_logprobs}]}). A null tok names tokens by id.
nlohmann::json completion_logprobs_json(const Tokenizer* tok, const std::vector<TokenLogprob>& lps,
                                        size_t text_offset0);
nlohmann::json chat_logprobs_json(const Tokenizer* tok, const std::vector<TokenLogprob>& lps);

// The OpenAI error body (ApiError::body()).
nlohmann::json error_body(const ApiError& e);

// The envelope of an OpenAI answer: {id, object, created, model, choices, usage}; the endpoints
// say how a choice reads, in full and as a stream delta.
class Folder : public ResponseFolder {
 public:
  // object: of the body ("text_completion"); chunk_object: of stream chunks.
  Folder(ParsedRequest p, ResponseMeta meta, const char* object, const char* chunk_object);

  std::vector<SseEvent> stream_end() const override;  // usage chunk (include_usage), [DONE]
  nlohmann::json body() const override;

 protected:
  // Choice i of the body.
  virtual nlohmann::json full_choice(size_t i, const ChoiceResult& c) const = 0;
  // A stream chunk's choice: new text and logprobs, finish_reason when non-empty; `first` for
  // the opening chunk of a choice.
  virtual nlohmann::json delta_choice(size_t i, const std::string& text,
                                      const std::vector<TokenLogprob>& lps,
                                      const std::string& finish, bool first) const = 0;
  // One chunk event holding `choices`.
  SseEvent chunk(nlohmann::json choices) const;

  // Text, logprobs or the end: one chunk with this choice's delta.
  void stream_event(const SeqEvent& e, const ChoiceResult& c,
                    std::vector<SseEvent>& out) const override;

  const ParsedRequest p_;
  const ResponseMeta meta_;

 private:
  nlohmann::json chunk_json(nlohmann::json choices) const;

  const char* object_;
  const char* chunk_object_;
};

}  // namespace kvserve::server::openai
