#include "server/openai_common.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <random>

#include "core/utf8.h"

namespace kvserve::server::openai {

using json = nlohmann::json;

namespace {

std::string fmt(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

}  // namespace

std::optional<ApiError> bad(std::string message, std::string param, std::string code) {
  ApiError e;
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  return e;
}

bool present(const json& b, const char* key) {
  return b.contains(key) && !b[key].is_null();
}

// A number field in [lo, hi] (lo excluded when lo_open). Absent or null keeps `out`.
std::optional<ApiError> get_float(const json& b, const char* key, double lo, double hi,
                                  bool lo_open, float& out) {
  if (!present(b, key)) return std::nullopt;
  const json& v = b[key];
  if (!v.is_number()) return bad(std::string(key) + " must be a number", key);
  const double x = v.get<double>();
  const bool ok = std::isfinite(x) && (lo_open ? x > lo : x >= lo) && x <= hi;
  if (!ok) {
    return bad(std::string(key) + " must be in " + (lo_open ? "(" : "[") + fmt(lo) + ", " +
                   fmt(hi) + "], got " + v.dump(),
               key);
  }
  out = static_cast<float>(x);
  return std::nullopt;
}

std::optional<ApiError> get_int(const json& b, const char* key, int64_t lo, int64_t hi,
                                int64_t& out) {
  if (!present(b, key)) return std::nullopt;
  const json& v = b[key];
  if (!v.is_number_integer()) return bad(std::string(key) + " must be an integer", key);
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return bad(std::string(key) + " is out of range", key);
  }
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) {
    return bad(std::string(key) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                   "], got " + std::to_string(x),
               key);
  }
  out = x;
  return std::nullopt;
}

std::optional<ApiError> get_bool(const json& b, const char* key, bool& out) {
  if (!present(b, key)) return std::nullopt;
  if (!b[key].is_boolean()) return bad(std::string(key) + " must be a boolean", key);
  out = b[key].get<bool>();
  return std::nullopt;
}

std::optional<ApiError> check_tokens(const std::vector<int32_t>& ids, const ProtocolContext& ctx) {
  if (ids.empty()) return bad("the prompt is empty", "prompt");
  if (static_cast<int>(ids.size()) > ctx.n_ctx) {
    return bad("This model's maximum context length is " + std::to_string(ctx.n_ctx) +
                   " tokens, but the prompt has " + std::to_string(ids.size()) + " tokens",
               "prompt", "context_length_exceeded");
  }
  for (int32_t t : ids) {
    if (t < 0 || t >= ctx.model->config.n_vocab) {
      return bad("token id " + std::to_string(t) + " is out of range [0, " +
                     std::to_string(ctx.model->config.n_vocab) + ")",
                 "prompt");
    }
  }
  return std::nullopt;
}

namespace {

std::optional<ApiError> parse_stop(const json& b, ParsedRequest& out) {
  if (!present(b, "stop")) return std::nullopt;
  const json& s = b["stop"];
  if (s.is_string()) {
    if (!s.get<std::string>().empty()) out.stop.push_back(s.get<std::string>());
    return std::nullopt;
  }
  if (!s.is_array()) return bad("stop must be a string or an array of strings", "stop");
  if (s.size() > 16) return bad("at most 16 stop strings", "stop");
  for (const json& e : s) {
    if (!e.is_string()) return bad("stop must be a string or an array of strings", "stop");
    if (!e.get<std::string>().empty()) out.stop.push_back(e.get<std::string>());
  }
  return std::nullopt;
}

// logit_bias: {"token id": bias in [-100, 100]}, added to the logits before sampling.
std::optional<ApiError> parse_logit_bias(const json& b, const ProtocolContext& ctx,
                                         SamplingParams& sp) {
  if (!present(b, "logit_bias")) return std::nullopt;
  const json& lb = b["logit_bias"];
  if (!lb.is_object()) return bad("logit_bias must be an object of token id: bias", "logit_bias");
  if (lb.size() > 1024) return bad("logit_bias has more than 1024 entries", "logit_bias");
  for (const auto& [key, value] : lb.items()) {
    int64_t id = -1;
    const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
    if (ec != std::errc() || end != key.data() + key.size() || id < 0 ||
        id >= ctx.model->config.n_vocab) {
      return bad("logit_bias key '" + key + "' is not a token id in [0, " +
                     std::to_string(ctx.model->config.n_vocab) + ")",
                 "logit_bias");
    }
    if (!value.is_number() || !(value.get<double>() >= -100 && value.get<double>() <= 100))
      return bad("logit_bias values must be numbers in [-100, 100]", "logit_bias");
    sp.logit_bias.emplace_back(static_cast<int32_t>(id), value.get<float>());
  }
  return std::nullopt;
}

// Fields that would change what is generated and that kvserve does not implement: refused, as
// silently ignoring them would answer a different question (JSON mode, tool calls, ...).
std::optional<ApiError> refuse_unsupported(const json& b, int n) {
  if (present(b, "response_format")) {
    const json& rf = b["response_format"];
    const std::string type = rf.is_object() ? rf.value("type", "") : "";
    if (type != "text")
      return bad("response_format " + (type.empty() ? rf.dump() : "'" + type + "'") +
                     " is not supported (only {\"type\": \"text\"})",
                 "response_format");
  }
  const bool no_tools = present(b, "tool_choice") && b["tool_choice"] == "none";
  for (const char* key : {"tools", "functions"}) {
    if (present(b, key) && !(b[key].is_array() && b[key].empty()) && !no_tools)
      return bad(std::string(key) + " (function calling) are not supported", key);
  }
  if (present(b, "suffix") && !(b["suffix"].is_string() && b["suffix"].get<std::string>().empty()))
    return bad("suffix is not supported", "suffix");
  if (present(b, "best_of") && !(b["best_of"].is_number_integer() && b["best_of"] == n))
    return bad("best_of is not supported (other than equal to n)", "best_of");
  return std::nullopt;
}

}  // namespace

std::optional<ApiError> parse_common(const json& b, const ProtocolContext& ctx,
                                     ParsedRequest& out) {
  int64_t v = 0;
  SamplingParams& sp = out.sampling;
  sp.temperature = 1.0f;  // the OpenAI default
  KV_API_TRY(get_float(b, "temperature", 0, 2, false, sp.temperature));
  KV_API_TRY(get_float(b, "top_p", 0, 1, true, sp.top_p));
  KV_API_TRY(get_float(b, "min_p", 0, 1, false, sp.min_p));
  KV_API_TRY(get_float(b, "repetition_penalty", 0, 10, true, sp.repeat_penalty));
  KV_API_TRY(get_float(b, "presence_penalty", -2, 2, false, sp.presence_penalty));
  KV_API_TRY(get_float(b, "frequency_penalty", -2, 2, false, sp.frequency_penalty));
  v = 0;
  KV_API_TRY(get_int(b, "top_k", -1, 1 << 30, v));
  sp.top_k = v < 0 ? 0 : static_cast<int>(v);
  if (present(b, "seed")) {
    KV_API_TRY(get_int(b, "seed", INT64_MIN, INT64_MAX, v));
    sp.seed = static_cast<uint64_t>(v);
  } else {
    static std::random_device rd;
    sp.seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  v = 1;
  KV_API_TRY(get_int(b, "n", 1, 64, v));
  out.n = static_cast<int>(v);
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!present(b, key)) continue;
    KV_API_TRY(get_int(b, key, 0, ctx.n_ctx, v));
    out.max_tokens = static_cast<int>(v);
    out.max_tokens_given = true;
  }
  KV_API_TRY(parse_stop(b, out));
  KV_API_TRY(get_bool(b, "stream", out.stream));
  if (present(b, "stream_options")) {
    const json& so = b["stream_options"];
    if (!so.is_object()) return bad("stream_options must be an object", "stream_options");
    if (!out.stream)
      return bad("stream_options is only allowed with stream: true", "stream_options");
    KV_API_TRY(get_bool(so, "include_usage", out.include_usage));
  }
  KV_API_TRY(get_bool(b, "ignore_eos", out.ignore_eos));
  if (present(b, "cache_salt")) {
    if (!b["cache_salt"].is_string()) return bad("cache_salt must be a string", "cache_salt");
    out.cache_salt = b["cache_salt"].get<std::string>();
  }
  if (present(b, "model") && !b["model"].is_string()) return bad("model must be a string", "model");
  KV_API_TRY(parse_logit_bias(b, ctx, sp));
  KV_API_TRY(refuse_unsupported(b, out.n));
  return std::nullopt;
}

json usage_json(const std::vector<ChoiceResult>& choices, int n_per_prompt) {
  int prompt = 0, completion = 0, cached = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i % n_per_prompt == 0) {  // each prompt counted once, as OpenAI does
      prompt += choices[i].n_prompt_tokens;
      cached += choices[i].n_cached_tokens;
    }
    completion += choices[i].n_completion_tokens;
  }
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

namespace {
std::string token_text(const Tokenizer* tok, int32_t t) {
  return tok ? tok->decode_token(-1, t) : std::to_string(t);
}
// JSON strings must be valid UTF-8; a token that is a partial character is shown escaped.
std::string safe_text(std::string s) {
  if (utf8_valid(s)) return s;
  std::string out;
  char buf[8];
  for (unsigned char c : s) {
    std::snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
  }
  return out;
}
}  // namespace

json completion_logprobs_json(const Tokenizer* tok, const std::vector<TokenLogprob>& lps,
                              size_t offset) {
  json tokens = json::array(), lp = json::array(), top = json::array(), offs = json::array();
  for (const auto& l : lps) {
    const std::string t = safe_text(token_text(tok, l.token));
    tokens.push_back(t);
    lp.push_back(l.logprob);
    json alt = json::object();
    for (const auto& [id, v] : l.top) alt[safe_text(token_text(tok, id))] = v;
    top.push_back(alt);
    offs.push_back(offset);
    offset += t.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", lp}, {"top_logprobs", top}, {"text_offset", offs}};
}

json chat_logprobs_json(const Tokenizer* tok, const std::vector<TokenLogprob>& lps) {
  auto bytes = [](const std::string& s) {
    json b = json::array();
    for (unsigned char c : s) b.push_back(static_cast<int>(c));
    return b;
  };
  json content = json::array();
  for (const auto& l : lps) {
    const std::string raw = token_text(tok, l.token);
    json alts = json::array();
    for (const auto& [id, v] : l.top) {
      const std::string r = token_text(tok, id);
      alts.push_back({{"token", safe_text(r)}, {"logprob", v}, {"bytes", bytes(r)}});
    }
    content.push_back({{"token", safe_text(raw)},
                       {"logprob", l.logprob},
                       {"bytes", bytes(raw)},
                       {"top_logprobs", alts}});
  }
  return {{"content", content}};
}

json error_body(const ApiError& e) {
  return e.body();
}

Folder::Folder(ParsedRequest p, ResponseMeta meta, const char* object, const char* chunk_object)
    : ResponseFolder(p.prompts.size() * static_cast<size_t>(p.n)),
      p_(std::move(p)),
      meta_(std::move(meta)),
      object_(object),
      chunk_object_(chunk_object) {}

json Folder::chunk_json(json choices) const {
  json c = {{"id", meta_.id},
            {"object", chunk_object_},
            {"created", meta_.created},
            {"model", meta_.model},
            {"choices", std::move(choices)}};
  if (p_.include_usage) c["usage"] = nullptr;  // a field in every chunk, filled in the last
  return c;
}

SseEvent Folder::chunk(json choices) const {
  return {"", dump_json(chunk_json(std::move(choices)))};
}

void Folder::stream_event(const SeqEvent& e, const ChoiceResult& c,
                          std::vector<SseEvent>& out) const {
  if (e.text.empty() && e.logprobs.empty() && !e.finished) return;  // e.g. EOS: nothing to say
  const std::string finish = e.finished ? c.finish_reason : "";
  out.push_back(chunk(json::array(
      {delta_choice(static_cast<size_t>(e.index), e.text, e.logprobs, finish, false)})));
}

std::vector<SseEvent> Folder::stream_end() const {
  std::vector<SseEvent> out;
  if (p_.include_usage) {
    json u = chunk_json(json::array());
    u["usage"] = usage_json(choices(), p_.n);
    out.push_back({"", dump_json(u)});
  }
  out.push_back({"", "[DONE]"});
  return out;
}

json Folder::body() const {
  json out_choices = json::array();
  for (size_t i = 0; i < choices().size(); ++i) out_choices.push_back(full_choice(i, choices()[i]));
  const int64_t created = meta_.created ? meta_.created : static_cast<int64_t>(std::time(nullptr));
  return {{"id", meta_.id},       {"object", object_},      {"created", created},
          {"model", meta_.model}, {"choices", out_choices}, {"usage", usage_json(choices(), p_.n)}};
}

}  // namespace kvserve::server::openai
