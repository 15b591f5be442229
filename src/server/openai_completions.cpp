#include <utility>

#include "server/openai_common.h"
#include "server/openai_protocol.h"

namespace kvserve::server {

using json = nlohmann::json;
using namespace openai;

namespace {

std::optional<ApiError> parse_token_array(const json& a, std::vector<int32_t>& ids) {
  for (const json& t : a) {
    if (!t.is_number_integer()) return bad("token ids must be integers", "prompt");
    const int64_t x = t.get<int64_t>();
    if (x < INT32_MIN || x > INT32_MAX) return bad("token id out of range", "prompt");
    ids.push_back(static_cast<int32_t>(x));
  }
  return std::nullopt;
}

std::optional<ApiError> encode_text(const std::string& text, const ProtocolContext& ctx,
                                    std::vector<int32_t>& ids) {
  const Tokenizer* tok = ctx.model->tokenizer.get();
  if (!tok) return bad("this model has no tokenizer; send the prompt as token ids", "prompt");
  ids = tok->encode(text, tok->add_bos_default());
  return std::nullopt;
}

std::optional<ApiError> parse_prompt(const json& b, const ProtocolContext& ctx,
                                     ParsedRequest& out) {
  if (!present(b, "prompt")) return bad("prompt is required", "prompt");
  const json& p = b["prompt"];
  const Tokenizer* tok = ctx.model->tokenizer.get();
  auto add_ids = [&](std::vector<int32_t> ids) -> std::optional<ApiError> {
    KV_API_TRY(check_tokens(ids, ctx));
    out.prompt_texts.push_back(tok ? tok->decode(ids) : "");
    out.prompts.push_back(std::move(ids));
    return std::nullopt;
  };
  auto add_text = [&](const std::string& text) -> std::optional<ApiError> {
    std::vector<int32_t> ids;
    KV_API_TRY(encode_text(text, ctx, ids));
    KV_API_TRY(check_tokens(ids, ctx));
    out.prompt_texts.push_back(text);
    out.prompts.push_back(std::move(ids));
    return std::nullopt;
  };
  if (p.is_string()) return add_text(p.get<std::string>());
  const char* shape =
      "prompt must be a string, an array of token ids, an array of strings or an "
      "array of token-id arrays";
  if (!p.is_array() || p.empty()) return bad(shape, "prompt");
  if (p[0].is_number_integer()) {
    std::vector<int32_t> ids;
    KV_API_TRY(parse_token_array(p, ids));
    return add_ids(std::move(ids));
  }
  if (p.size() > 64) return bad("at most 64 prompts per request", "prompt");
  for (const json& e : p) {
    if (e.is_string()) {
      KV_API_TRY(add_text(e.get<std::string>()));
    } else if (e.is_array()) {
      std::vector<int32_t> ids;
      KV_API_TRY(parse_token_array(e, ids));
      KV_API_TRY(add_ids(std::move(ids)));
    } else {
      return bad(shape, "prompt");
    }
  }
  return std::nullopt;
}

// Choice index i answers prompt i / n.
class CompletionsFolder final : public Folder {
 public:
  CompletionsFolder(ParsedRequest p, ResponseMeta meta)
      : Folder(std::move(p), std::move(meta), "text_completion", "text_completion") {}

  // With echo, each choice opens with its prompt.
  std::vector<SseEvent> stream_start() const override {
    std::vector<SseEvent> out;
    if (!p_.echo) return out;
    for (size_t i = 0; i < choices().size(); ++i) {
      out.push_back(chunk(json::array({delta_choice(i, echo_text(i), {}, "", true)})));
    }
    return out;
  }

 private:
  std::string echo_text(size_t i) const { return p_.echo ? p_.prompt_texts[i / p_.n] : ""; }

  json full_choice(size_t i, const ChoiceResult& c) const override {
    const std::string prefix = echo_text(i);
    json lp = nullptr;
    if (p_.logprobs >= 0) lp = completion_logprobs_json(meta_.tok, c.logprobs, prefix.size());
    return {{"index", i},
            {"text", prefix + c.text},
            {"logprobs", lp},
            {"finish_reason", c.finish_reason}};
  }

  // Each chunk's logprobs count text_offset from 0.
  json delta_choice(size_t i, const std::string& text, const std::vector<TokenLogprob>& lps,
                    const std::string& finish, bool) const override {
    json lp = nullptr;
    if (p_.logprobs >= 0 && !lps.empty()) lp = completion_logprobs_json(meta_.tok, lps, 0);
    return {{"index", i},
            {"text", text},
            {"logprobs", lp},
            {"finish_reason", finish.empty() ? json(nullptr) : json(finish)}};
  }
};

}  // namespace

std::optional<ApiError> parse_completion(const json& b, const ProtocolContext& ctx,
                                         ParsedRequest& out) {
  if (!b.is_object()) return bad("the request body must be a JSON object", "");
  KV_API_TRY(parse_common(b, ctx, out));
  KV_API_TRY(parse_prompt(b, ctx, out));
  KV_API_TRY(get_bool(b, "echo", out.echo));
  if (present(b, "logprobs")) {
    int64_t k = 0;
    KV_API_TRY(get_int(b, "logprobs", 0, 20, k));
    out.logprobs = static_cast<int>(k);
  }
  if (out.prompts.size() * out.n > 64) return bad("prompts x n must be at most 64", "n");
  return std::nullopt;
}

const Protocol& completions_protocol() {
  static const Protocol p{"cmpl-", parse_json_body<parse_completion>,
                          make_folder_of<CompletionsFolder>, error_body};
  return p;
}

}  // namespace kvserve::server
