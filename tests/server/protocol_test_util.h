// Helpers for the protocol tests: a parsing context on the synth demo model, scripted engine
// events, and SSE events read back as JSON.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/protocol.h"
#include "test_models.h"

namespace kvserve::test {

// The demo model (tokenizer, 512-token vocabulary) with a 256-token context.
inline server::ProtocolContext protocol_context(const std::string& chat_template = "") {
  server::ProtocolContext ctx;
  ctx.model = synth_demo_model();
  ctx.n_ctx = 256;
  ctx.chat_template = chat_template;
  return ctx;
}

// An event bringing `text` (one token per character of ids) to choice `index`.
inline SeqEvent text_event(int index, const std::string& text, std::vector<int32_t> tokens = {}) {
  SeqEvent e;
  e.index = index;
  e.text = text;
  e.tokens = std::move(tokens);
  return e;
}

// The last event of a choice.
inline SeqEvent finish_event(int index, const std::string& reason, int n_prompt, int n_completion,
                             int n_cached = 0) {
  SeqEvent e;
  e.index = index;
  e.finished = true;
  e.finish_reason = reason;
  e.n_prompt_tokens = n_prompt;
  e.n_completion_tokens = n_completion;
  e.n_cached_tokens = n_cached;
  return e;
}

inline TokenLogprob logprob(int32_t token, float lp, std::vector<std::pair<int32_t, float>> top) {
  TokenLogprob l;
  l.token = token;
  l.logprob = lp;
  l.top = std::move(top);
  return l;
}

// The data of each SSE event (which must be unnamed) parsed as JSON; "[DONE]" as a string.
inline std::vector<nlohmann::json> sse_json(const std::vector<server::SseEvent>& events) {
  std::vector<nlohmann::json> out;
  for (const auto& e : events) {
    EXPECT_EQ(e.event, "");
    out.push_back(e.data == "[DONE]" ? nlohmann::json("[DONE]") : nlohmann::json::parse(e.data));
  }
  return out;
}

}  // namespace kvserve::test
