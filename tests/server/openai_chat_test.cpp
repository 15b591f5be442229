// /v1/chat/completions without sockets: request bodies parsed (good and malformed), and
// scripted engine events folded into a chat.completion body and chat.completion.chunk events.
#include <gtest/gtest.h>

#include "server/chat_template.h"
#include "server/openai_protocol.h"
#include "server/protocol_test_util.h"

namespace kvserve::server {
namespace {

using json = nlohmann::json;
using test::finish_event;
using test::logprob;
using test::sse_json;
using test::text_event;

const json kHello = json::array({{{"role", "user"}, {"content", "Hello"}}});

ParsedRequest parse_ok(json body) {
  ParsedRequest p;
  auto e = parse_chat(body, test::protocol_context("chatml"), p);
  EXPECT_FALSE(e) << e->message;
  return p;
}

ApiError parse_bad(const json& body, const std::string& chat_template = "chatml") {
  ParsedRequest p;
  auto e = parse_chat(body, test::protocol_context(chat_template), p);
  EXPECT_TRUE(e) << body.dump();
  return e.value_or(ApiError{});
}

TEST(ChatProtocol, RendersMessagesIntoOnePrompt) {
  const json messages = {{{"role", "developer"}, {"content", "Be brief."}},
                         {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Hi"}}}}},
                         {{"role", "assistant"}, {"content", nullptr}},
                         {{"role", "user"}, {"content", "Again"}}};
  const ParsedRequest p = parse_ok({{"messages", messages}, {"n", 2}, {"stop", "x"}});
  const std::string expected =
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\n<|im_end|>\n<|im_start|>user\nAgain<|im_end|>\n"
      "<|im_start|>assistant\n";
  EXPECT_EQ(p.prompt_texts, std::vector<std::string>{expected});
  const Tokenizer& tok = *test::protocol_context().model->tokenizer;
  ASSERT_EQ(p.prompts.size(), 1u);
  EXPECT_EQ(p.prompts[0], encode_with_specials(tok, expected));
  EXPECT_EQ(p.n, 2);
  EXPECT_EQ(p.stop, std::vector<std::string>{"x"});
  // max_tokens defaults to the rest of the context.
  EXPECT_EQ(p.max_tokens, 256 - static_cast<int>(p.prompts[0].size()));
  EXPECT_FALSE(p.max_tokens_given);
  EXPECT_EQ(p.logprobs, -1);
}

TEST(ChatProtocol, MaxTokensAndLogprobs) {
  EXPECT_EQ(parse_ok({{"messages", kHello}, {"max_tokens", 5}}).max_tokens, 5);
  EXPECT_EQ(parse_ok({{"messages", kHello}, {"max_completion_tokens", 6}}).max_tokens, 6);
  EXPECT_EQ(parse_ok({{"messages", kHello}, {"logprobs", true}}).logprobs, 0);
  EXPECT_EQ(parse_ok({{"messages", kHello}, {"logprobs", true}, {"top_logprobs", 3}}).logprobs, 3);
  EXPECT_EQ(parse_ok({{"messages", kHello}, {"logprobs", false}}).logprobs, -1);
}

TEST(ChatProtocol, MalformedRequests) {
  struct Case {
    json body;
    std::string param, message;
  };
  const std::vector<Case> cases = {
      {json("hi"), "", "the request body must be a JSON object"},
      {json::object(), "messages", "messages must be a non-empty array"},
      {{{"messages", json::array()}}, "messages", "messages must be a non-empty array"},
      {{{"messages", "Hello"}}, "messages", "messages must be a non-empty array"},
      {{{"messages", {{{"role", 1}, {"content", "x"}}}}},
       "messages",
       "each message must be an object with a string role"},
      {{{"messages", {{{"role", "user"}}}}}, "messages", "a user message needs content"},
      {{{"messages", {{{"role", "user"}, {"content", 3}}}}},
       "messages",
       "message content must be a string or an array of parts"},
      {{{"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}},
       "messages",
       "only text content parts are supported"},
      {{{"messages", kHello}, {"max_tokens", "5"}}, "max_tokens", "max_tokens must be an integer"},
      {{{"messages", kHello}, {"max_completion_tokens", 257}},
       "max_completion_tokens",
       "max_completion_tokens must be in [0, 256], got 257"},
      {{{"messages", kHello}, {"n", 65}}, "n", "n must be in [1, 64], got 65"},
      {{{"messages", kHello}, {"stop", {{{"a", 1}}}}},
       "stop",
       "stop must be a string or an array of strings"},
      {{{"messages", kHello}, {"logprobs", 1}}, "logprobs", "logprobs must be a boolean"},
      {{{"messages", kHello}, {"top_logprobs", 2}},
       "top_logprobs",
       "top_logprobs requires logprobs: true"},
      {{{"messages", kHello}, {"logprobs", true}, {"top_logprobs", 21}},
       "top_logprobs",
       "top_logprobs must be in [0, 20], got 21"},
      {{{"messages", kHello}, {"tools", {{{"type", "function"}}}}},
       "tools",
       "tools (function calling) are not supported"},
      {{{"messages", kHello}, {"model", 3}}, "model", "model must be a string"},
  };
  for (const Case& c : cases) {
    const ApiError e = parse_bad(c.body);
    EXPECT_EQ(e.status, 400) << c.body.dump();
    EXPECT_EQ(e.param, c.param) << c.body.dump();
    EXPECT_EQ(e.message, c.message) << c.body.dump();
  }
  EXPECT_EQ(parse_bad({{"messages", kHello}}, "").code, "chat_template_missing");
  EXPECT_EQ(parse_bad({{"messages", {{{"role", "wizard"}, {"content", "x"}}}}}).param, "messages");
}

std::unique_ptr<ResponseFolder> folder(const json& body) {
  ResponseMeta meta;
  meta.id = "chatcmpl-3";
  meta.model = "demo";
  meta.created = 1700000000;
  return chat_protocol().make_folder(parse_ok(body), meta);
}

// n = 2 with logprobs: choice 0 says "Hi!" and stops; choice 1 says "Yo" and runs out.
std::vector<std::vector<SeqEvent>> scripted_events() {
  SeqEvent a = text_event(0, "Hi", {65});
  a.logprobs = {logprob(65, -0.5f, {{65, -0.5f}, {66, -1.5f}})};
  SeqEvent b = text_event(1, "Yo", {70});
  b.logprobs = {logprob(70, -0.25f, {{70, -0.25f}, {65, -2.0f}})};
  SeqEvent c = text_event(0, "!", {33});
  c.logprobs = {logprob(33, -1.0f, {{33, -1.0f}, {34, -1.25f}})};
  return {{a}, {b, c}, {finish_event(0, "stop", 12, 2, 0), finish_event(1, "length", 12, 1, 0)}};
}

TEST(ChatProtocol, FoldsEventsIntoABody) {
  auto f = folder({{"messages", kHello}, {"n", 2}, {"logprobs", true}, {"top_logprobs", 2}});
  for (const auto& batch : scripted_events()) f->add(batch);
  ASSERT_TRUE(f->done());
  const json b = f->body();
  EXPECT_EQ(b["id"], "chatcmpl-3");
  EXPECT_EQ(b["object"], "chat.completion");
  EXPECT_EQ(b["created"], 1700000000);
  ASSERT_EQ(b["choices"].size(), 2u);
  EXPECT_EQ(b["choices"][0]["message"], json({{"role", "assistant"}, {"content", "Hi!"}}));
  EXPECT_EQ(b["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(b["choices"][1]["index"], 1);
  EXPECT_EQ(b["choices"][1]["message"]["content"], "Yo");
  EXPECT_EQ(b["choices"][1]["finish_reason"], "length");
  const json& lp = b["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(lp.size(), 2u);
  EXPECT_EQ(lp[0], json::parse(R"({"token": "65", "logprob": -0.5, "bytes": [54, 53],
      "top_logprobs": [{"token": "65", "logprob": -0.5, "bytes": [54, 53]},
                       {"token": "66", "logprob": -1.5, "bytes": [54, 54]}]})"));
  EXPECT_EQ(lp[1]["token"], "33");
  // Both choices sample the same prompt: its tokens count once.
  EXPECT_EQ(b["usage"], json::parse(R"({"prompt_tokens": 12, "completion_tokens": 3,
      "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 0}})"));
}

TEST(ChatProtocol, FoldsEventsIntoChunks) {
  auto f = folder({{"messages", kHello},
                   {"n", 2},
                   {"logprobs", true},
                   {"stream", true},
                   {"stream_options", {{"include_usage", true}}}});
  const auto start = f->stream_start();
  ASSERT_EQ(start.size(), 2u);  // each choice opens with the assistant role
  EXPECT_EQ(start[1].data,
            R"({"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":null,)"
            R"("index":1,"logprobs":null}],"created":1700000000,"id":"chatcmpl-3",)"
            R"("model":"demo","object":"chat.completion.chunk","usage":null})");
  std::vector<SseEvent> events;
  for (const auto& batch : scripted_events()) {
    for (SseEvent& e : f->add_streaming(batch)) events.push_back(std::move(e));
  }
  const auto chunks = sse_json(events);
  ASSERT_EQ(chunks.size(), 5u);
  EXPECT_EQ(chunks[0]["choices"][0]["delta"], json({{"content", "Hi"}}));
  EXPECT_EQ(chunks[0]["choices"][0]["logprobs"]["content"][0]["token"], "65");
  EXPECT_EQ(chunks[1]["choices"][0]["index"], 1);
  EXPECT_EQ(chunks[2]["choices"][0]["delta"]["content"], "!");
  // The ends carry an empty delta and their finish_reason.
  EXPECT_EQ(chunks[3]["choices"][0],
            json::parse(R"({"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"})"));
  EXPECT_EQ(chunks[4]["choices"][0]["finish_reason"], "length");
  const auto end = sse_json(f->stream_end());
  ASSERT_EQ(end.size(), 2u);
  EXPECT_EQ(end[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(end[0]["choices"], json::array());
  EXPECT_EQ(end[0]["usage"]["completion_tokens"], 3);
  EXPECT_EQ(end[0]["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_EQ(end[1], "[DONE]");
  EXPECT_EQ(f->body()["choices"][0]["message"]["content"], "Hi!");  // the same accumulation
}

TEST(ChatProtocol, EventsWithoutTextYieldNoChunk) {
  auto f = folder({{"messages", kHello}, {"stream", true}});
  EXPECT_TRUE(f->add_streaming({text_event(0, "", {40})}).empty());
  const auto out = sse_json(f->add_streaming({finish_event(0, "stop", 9, 1)}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["choices"][0]["delta"], json::object());
  EXPECT_EQ(out[0]["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(out[0].contains("usage"));
  EXPECT_EQ(sse_json(f->stream_end()), std::vector<json>{"[DONE]"});
}

TEST(ChatProtocol, ProtocolEntryPoints) {
  const Protocol& proto = chat_protocol();
  EXPECT_EQ(proto.id_prefix, "chatcmpl-");
  ParsedRequest p;
  auto e = proto.parse(R"({"messages": [{"role": "user", "content": "Hello"}], "stream": "yes"})",
                       test::protocol_context("chatml"), p);
  ASSERT_TRUE(e);
  EXPECT_EQ(proto.error_body(*e), json::parse(R"({"error": {"message": "stream must be a boolean",
      "type": "invalid_request_error", "param": "stream", "code": null}})"));
}

}  // namespace
}  // namespace kvserve::server
