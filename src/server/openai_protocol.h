// The OpenAI APIs as Protocols (server/protocol.h): POST /v1/completions (openai_completions.cpp)
// and POST /v1/chat/completions (openai_chat.cpp), each a parser of request bodies and a folder
// of engine events into text_completion / chat.completion bodies and SSE chunks. Their shared
// pieces are in openai_common.h. Parsers run on HTTP handler threads and are pure.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>

#include "server/protocol.h"

namespace kvserve::server {

// Parses a /v1/completions body. nullopt on success with `out` filled, else the error (400,
// `param` naming the field).
std::optional<ApiError> parse_completion(const nlohmann::json& body, const ProtocolContext& ctx,
                                         ParsedRequest& out);
// Parses a /v1/chat/completions body: the messages are rendered with ctx.chat_template into one
// prompt; max_tokens defaults to the rest of the context. Errors as parse_completion.
std::optional<ApiError> parse_chat(const nlohmann::json& body, const ProtocolContext& ctx,
                                   ParsedRequest& out);

// The protocols: ids "cmpl-N" / "chatcmpl-N", OpenAI error objects. Static, never null.
const Protocol& completions_protocol();
const Protocol& chat_protocol();

}  // namespace kvserve::server
