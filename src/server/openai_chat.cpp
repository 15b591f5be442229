#include <utility>

#include "server/chat_template.h"
#include "server/openai_common.h"
#include "server/openai_protocol.h"

namespace kvserve::server {

using json = nlohmann::json;
using namespace openai;

namespace {

std::optional<ApiError> parse_content(const json& m, std::string& out) {
  if (!m.contains("content") || m["content"].is_null()) return std::nullopt;
  const json& c = m["content"];
  if (c.is_string()) {
    out = c.get<std::string>();
    return std::nullopt;
  }
  if (!c.is_array())
    return bad("message content must be a string or an array of parts", "messages");
  for (const json& part : c) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      return bad("only text content parts are supported", "messages");
    }
    out += part["text"].get<std::string>();
  }
  return std::nullopt;
}

// One prompt (the rendered conversation); choice i is its i-th sample.
class ChatFolder final : public Folder {
 public:
  ChatFolder(ParsedRequest p, ResponseMeta meta)
      : Folder(std::move(p), std::move(meta), "chat.completion", "chat.completion.chunk") {}

  // Each choice opens with the assistant's role and empty content.
  std::vector<SseEvent> stream_start() const override {
    std::vector<SseEvent> out;
    for (size_t i = 0; i < choices().size(); ++i) {
      out.push_back(chunk(json::array({delta_choice(i, "", {}, "", true)})));
    }
    return out;
  }

 private:
  json full_choice(size_t i, const ChoiceResult& c) const override {
    json lp = nullptr;
    if (p_.logprobs >= 0) lp = chat_logprobs_json(meta_.tok, c.logprobs);
    return {{"index", i},
            {"message", {{"role", "assistant"}, {"content", c.text}}},
            {"logprobs", lp},
            {"finish_reason", c.finish_reason}};
  }

  // A delta holds only what changed: no content key when a chunk brings none.
  json delta_choice(size_t i, const std::string& text, const std::vector<TokenLogprob>& lps,
                    const std::string& finish, bool first) const override {
    json lp = nullptr;
    if (p_.logprobs >= 0 && !lps.empty()) lp = chat_logprobs_json(meta_.tok, lps);
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    return {{"index", i},
            {"delta", delta},
            {"logprobs", lp},
            {"finish_reason", finish.empty() ? json(nullptr) : json(finish)}};
  }
};

}  // namespace

std::optional<ApiError> parse_chat(const json& b, const ProtocolContext& ctx, ParsedRequest& out) {
  if (!b.is_object()) return bad("the request body must be a JSON object", "");
  KV_API_TRY(parse_common(b, ctx, out));
  if (!present(b, "messages") || !b["messages"].is_array() || b["messages"].empty()) {
    return bad("messages must be a non-empty array", "messages");
  }
  std::vector<ChatMessage> msgs;
  for (const json& m : b["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return bad("each message must be an object with a string role", "messages");
    }
    ChatMessage cm;
    cm.role = m["role"].get<std::string>();
    if (cm.role == "developer") cm.role = "system";
    // Only an assistant turn may leave its content out (OpenAI: one that made tool calls).
    if (cm.role != "assistant" && (!m.contains("content") || m["content"].is_null()))
      return bad("a " + cm.role + " message needs content", "messages");
    KV_API_TRY(parse_content(m, cm.content));
    msgs.push_back(std::move(cm));
  }
  if (ctx.chat_template.empty()) {
    return bad(
        "this model has no chat template the server can render (none in the model file, "
        "or an unsupported one); start the server with --chat-template NAME (chatml, "
        "llama-3, llama-2, mistral, zephyr) or use /v1/completions",
        "messages", "chat_template_missing");
  }
  auto text = render_chat(ctx.chat_template, msgs);
  if (!text) return bad(text.status().message(), "messages");
  const Tokenizer* tok = ctx.model->tokenizer.get();
  if (!tok) return bad("this model has no tokenizer", "messages");
  std::vector<int32_t> ids = encode_with_specials(*tok, *text);
  KV_API_TRY(check_tokens(ids, ctx));
  out.prompt_texts.push_back(*text);
  if (!out.max_tokens_given) out.max_tokens = ctx.n_ctx - static_cast<int>(ids.size());
  out.prompts.push_back(std::move(ids));
  bool want = false;
  KV_API_TRY(get_bool(b, "logprobs", want));
  int64_t k = 0;
  KV_API_TRY(get_int(b, "top_logprobs", 0, 20, k));
  if (present(b, "top_logprobs") && !want) {
    return bad("top_logprobs requires logprobs: true", "top_logprobs");
  }
  if (want) out.logprobs = static_cast<int>(k);
  return std::nullopt;
}

const Protocol& chat_protocol() {
  static const Protocol p{"chatcmpl-", parse_json_body<parse_chat>, make_folder_of<ChatFolder>,
                          error_body};
  return p;
}

}  // namespace kvserve::server
