#include "server/protocol.h"

namespace kvserve::server {

using json = nlohmann::json;

json ApiError::body() const {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

std::shared_ptr<Request> make_engine_request(const ParsedRequest& p) {
  auto req = std::make_shared<Request>();
  req->cache_salt = p.cache_salt;
  int index = 0;
  for (const auto& prompt : p.prompts) {
    for (int i = 0; i < p.n; ++i) {
      SeqSpec s;
      s.prompt = prompt;
      s.max_tokens = p.max_tokens;
      s.sampling = p.sampling;
      s.sampling.seed = p.sampling.seed + i;
      s.ignore_eos = p.ignore_eos;
      s.stop = p.stop;
      s.n_logprobs = p.logprobs;
      s.index = index++;
      req->seqs.push_back(std::move(s));
    }
  }
  return req;
}

std::optional<ApiError> parse_json(std::string_view text, json& out) {
  out = json::parse(text, nullptr, false);
  if (!out.is_discarded()) return std::nullopt;
  ApiError e;
  e.message = "the request body is not valid JSON";
  e.code = "invalid_json";
  return e;
}

std::string dump_json(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string SseEvent::wire() const {
  std::string out = event.empty() ? "" : "event: " + event + "\n";
  return out + "data: " + data + "\n\n";
}

std::vector<SseEvent> ResponseFolder::add_streaming(const std::vector<SeqEvent>& events) {
  std::vector<SseEvent> out;
  fold(events, &out);
  return out;
}

void ResponseFolder::fold(const std::vector<SeqEvent>& events, std::vector<SseEvent>* out) {
  for (const SeqEvent& e : events) {
    ChoiceResult& c = choices_.at(static_cast<size_t>(e.index));
    c.text += e.text;
    c.tokens.insert(c.tokens.end(), e.tokens.begin(), e.tokens.end());
    c.logprobs.insert(c.logprobs.end(), e.logprobs.begin(), e.logprobs.end());
    if (e.finished && !c.finished) {
      c.finished = true;
      c.finish_reason = e.finish_reason == "cancelled" ? "abort" : e.finish_reason;
      c.n_prompt_tokens = e.n_prompt_tokens;
      c.n_completion_tokens = e.n_completion_tokens;
      c.n_cached_tokens = e.n_cached_tokens;
      ++n_done_;
    }
    if (out) stream_event(e, c, *out);
  }
}

}  // namespace kvserve::server
