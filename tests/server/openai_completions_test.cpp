// /v1/completions without sockets: request bodies parsed (good and malformed), and scripted
// engine events folded into a text_completion body and into its SSE chunks.
#include <gtest/gtest.h>

#include "server/openai_protocol.h"
#include "server/protocol_test_util.h"

namespace kvserve::server {
namespace {

using json = nlohmann::json;
using test::finish_event;
using test::logprob;
using test::sse_json;
using test::text_event;

ParsedRequest parse_ok(const json& body) {
  ParsedRequest p;
  auto e = parse_completion(body, test::protocol_context(), p);
  EXPECT_FALSE(e) << e->message;
  return p;
}

ApiError parse_bad(const json& body) {
  ParsedRequest p;
  auto e = parse_completion(body, test::protocol_context(), p);
  EXPECT_TRUE(e) << body.dump();
  return e.value_or(ApiError{});
}

TEST(CompletionsProtocol, ParsesFields) {
  const ParsedRequest p = parse_ok({{"prompt", "Once upon a time"},
                                    {"max_tokens", 7},
                                    {"n", 3},
                                    {"stop", {"a", "", "bc"}},
                                    {"logprobs", 2},
                                    {"echo", true},
                                    {"temperature", 0.5},
                                    {"top_k", -1},
                                    {"seed", 42},
                                    {"stream", true},
                                    {"stream_options", {{"include_usage", true}}},
                                    {"cache_salt", "t"},
                                    {"logit_bias", {{"17", -3}}}});
  const Tokenizer* tok = test::protocol_context().model->tokenizer.get();
  ASSERT_EQ(p.prompts.size(), 1u);
  EXPECT_EQ(p.prompts[0], tok->encode("Once upon a time", tok->add_bos_default()));
  EXPECT_EQ(p.prompt_texts, std::vector<std::string>{"Once upon a time"});
  EXPECT_EQ(p.max_tokens, 7);
  EXPECT_TRUE(p.max_tokens_given);
  EXPECT_EQ(p.n, 3);
  EXPECT_EQ(p.stop, (std::vector<std::string>{"a", "bc"}));  // empty stop strings dropped
  EXPECT_EQ(p.logprobs, 2);
  EXPECT_TRUE(p.echo);
  EXPECT_FLOAT_EQ(p.sampling.temperature, 0.5f);
  EXPECT_EQ(p.sampling.top_k, 0);
  EXPECT_EQ(p.sampling.seed, 42u);
  EXPECT_TRUE(p.stream);
  EXPECT_TRUE(p.include_usage);
  EXPECT_EQ(p.cache_salt, "t");
  ASSERT_EQ(p.sampling.logit_bias.size(), 1u);
  EXPECT_EQ(p.sampling.logit_bias[0].first, 17);
  EXPECT_FLOAT_EQ(p.sampling.logit_bias[0].second, -3.0f);
}

TEST(CompletionsProtocol, Defaults) {
  const ParsedRequest p = parse_ok({{"prompt", {1, 50, 60}}});
  EXPECT_EQ(p.prompts, (std::vector<std::vector<int32_t>>{{1, 50, 60}}));
  EXPECT_EQ(p.max_tokens, 16);
  EXPECT_FALSE(p.max_tokens_given);
  EXPECT_EQ(p.n, 1);
  EXPECT_TRUE(p.stop.empty());
  EXPECT_EQ(p.logprobs, -1);
  EXPECT_FLOAT_EQ(p.sampling.temperature, 1.0f);
  EXPECT_FALSE(p.stream || p.include_usage || p.echo || p.ignore_eos);
}

TEST(CompletionsProtocol, PromptShapes) {
  const ParsedRequest strings = parse_ok({{"prompt", {"a b", "c"}}, {"n", 2}});
  EXPECT_EQ(strings.prompts.size(), 2u);
  EXPECT_EQ(strings.prompt_texts, (std::vector<std::string>{"a b", "c"}));
  const ParsedRequest ids = parse_ok({{"prompt", {{1, 2}, {3}}}, {"stop", "x"}});
  EXPECT_EQ(ids.prompts, (std::vector<std::vector<int32_t>>{{1, 2}, {3}}));
  EXPECT_EQ(ids.stop, std::vector<std::string>{"x"});
}

TEST(CompletionsProtocol, MalformedRequests) {
  struct Case {
    json body;
    std::string param, message;
  };
  const std::vector<Case> cases = {
      {json::array({1}), "", "the request body must be a JSON object"},
      {{{"max_tokens", 4}}, "prompt", "prompt is required"},
      {{{"prompt", 5}},
       "prompt",
       "prompt must be a string, an array of token ids, an array of strings or an array of "
       "token-id arrays"},
      {{{"prompt", {1, "a"}}}, "prompt", "token ids must be integers"},
      {{{"prompt", {1, 999}}}, "prompt", "token id 999 is out of range [0, 512)"},
      {{{"prompt", "a"}, {"max_tokens", "x"}}, "max_tokens", "max_tokens must be an integer"},
      {{{"prompt", "a"}, {"max_tokens", -1}},
       "max_tokens",
       "max_tokens must be in [0, 256], got -1"},
      {{{"prompt", "a"}, {"max_tokens", 1.5}}, "max_tokens", "max_tokens must be an integer"},
      {{{"prompt", "a"}, {"n", 0}}, "n", "n must be in [1, 64], got 0"},
      {{{"prompt", "a"}, {"n", "2"}}, "n", "n must be an integer"},
      {{{"prompt", {"a", "b", "c"}}, {"n", 22}}, "n", "prompts x n must be at most 64"},
      {{{"prompt", "a"}, {"stop", 3}}, "stop", "stop must be a string or an array of strings"},
      {{{"prompt", "a"}, {"stop", {"a", 1}}},
       "stop",
       "stop must be a string or an array of strings"},
      {{{"prompt", "a"}, {"stop", json(std::vector<std::string>(17, "s"))}},
       "stop",
       "at most 16 stop strings"},
      {{{"prompt", "a"}, {"logprobs", 21}}, "logprobs", "logprobs must be in [0, 20], got 21"},
      {{{"prompt", "a"}, {"logprobs", true}}, "logprobs", "logprobs must be an integer"},
      {{{"prompt", "a"}, {"echo", 1}}, "echo", "echo must be a boolean"},
      {{{"prompt", "a"}, {"temperature", "hot"}}, "temperature", "temperature must be a number"},
      {{{"prompt", "a"}, {"top_p", 0}}, "top_p", "top_p must be in (0, 1], got 0"},
      {{{"prompt", "a"}, {"stream_options", {{"include_usage", true}}}},
       "stream_options",
       "stream_options is only allowed with stream: true"},
      {{{"prompt", "a"}, {"suffix", "b"}}, "suffix", "suffix is not supported"},
  };
  for (const Case& c : cases) {
    const ApiError e = parse_bad(c.body);
    EXPECT_EQ(e.status, 400) << c.body.dump();
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_EQ(e.param, c.param) << c.body.dump();
    EXPECT_EQ(e.message, c.message) << c.body.dump();
  }
  const ApiError e = parse_bad({{"prompt", std::vector<int>(257, 5)}});
  EXPECT_EQ(e.code, "context_length_exceeded");
  EXPECT_EQ(e.message,
            "This model's maximum context length is 256 tokens, but the prompt has 257 tokens");
}

TEST(CompletionsProtocol, ParsesRawBodiesThroughTheProtocol) {
  const Protocol& proto = completions_protocol();
  EXPECT_EQ(proto.id_prefix, "cmpl-");
  ParsedRequest p;
  auto e = proto.parse("{\"prompt\": [1, 2]", test::protocol_context(), p);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, "invalid_json");
  EXPECT_EQ(proto.error_body(*e)["error"]["message"], "the request body is not valid JSON");
  EXPECT_FALSE(proto.parse(R"({"prompt": [1, 2], "max_tokens": 3})", test::protocol_context(), p));
  EXPECT_EQ(p.max_tokens, 3);
}

// Two prompts, n = 1, logprobs 1: choice 1 ends first; choice 0 brings an EOS without text.
std::vector<std::vector<SeqEvent>> scripted_events() {
  SeqEvent a = text_event(0, "Hel", {5});
  a.logprobs = {logprob(5, -0.5f, {{5, -0.5f}})};
  SeqEvent b = text_event(1, "X", {9});
  b.logprobs = {logprob(9, -0.25f, {{9, -0.25f}})};
  SeqEvent c = text_event(0, "lo", {6});
  c.logprobs = {logprob(6, -1.0f, {{7, -0.75f}})};
  SeqEvent eos = text_event(0, "", {2});
  eos.logprobs = {logprob(2, -2.0f, {{2, -2.0f}})};
  return {{a, b}, {finish_event(1, "length", 3, 1, 0), c}, {eos, finish_event(0, "stop", 4, 3, 2)}};
}

std::unique_ptr<ResponseFolder> folder(const json& body, int64_t created) {
  ResponseMeta meta;
  meta.id = "cmpl-7";
  meta.model = "demo";
  meta.created = created;
  return completions_protocol().make_folder(parse_ok(body), meta);
}

TEST(CompletionsProtocol, FoldsEventsIntoABody) {
  auto f = folder({{"prompt", {"a", "b"}}, {"logprobs", 1}}, 1700000000);
  for (const auto& batch : scripted_events()) f->add(batch);
  ASSERT_TRUE(f->done());
  const json b = f->body();
  EXPECT_EQ(b["id"], "cmpl-7");
  EXPECT_EQ(b["object"], "text_completion");
  EXPECT_EQ(b["created"], 1700000000);
  EXPECT_EQ(b["model"], "demo");
  ASSERT_EQ(b["choices"].size(), 2u);
  const json& c0 = b["choices"][0];
  EXPECT_EQ(c0["index"], 0);
  EXPECT_EQ(c0["text"], "Hello");
  EXPECT_EQ(c0["finish_reason"], "stop");
  EXPECT_EQ(c0["logprobs"]["tokens"], json({"5", "6", "2"}));  // no tokenizer: ids
  EXPECT_EQ(c0["logprobs"]["token_logprobs"], json({-0.5, -1.0, -2.0}));
  EXPECT_EQ(c0["logprobs"]["top_logprobs"][1], json({{"7", -0.75}}));
  EXPECT_EQ(c0["logprobs"]["text_offset"], json({0, 1, 2}));
  EXPECT_EQ(b["choices"][1]["text"], "X");
  EXPECT_EQ(b["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(b["usage"], json::parse(R"({"prompt_tokens": 7, "completion_tokens": 4,
      "total_tokens": 11, "prompt_tokens_details": {"cached_tokens": 2}})"));
}

TEST(CompletionsProtocol, FoldsEventsIntoChunks) {
  json body = {{"prompt", {"a", "b"}},
               {"logprobs", 1},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  auto f = folder(body, 1700000000);
  EXPECT_TRUE(f->stream_start().empty());  // no echo: nothing before the first token
  std::vector<SseEvent> events;
  for (const auto& batch : scripted_events()) {
    for (SseEvent& e : f->add_streaming(batch)) events.push_back(std::move(e));
  }
  ASSERT_TRUE(f->done());
  // One chunk per event with text or an end; the textless EOS brings its logprob.
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events[0].data,
            R"({"choices":[{"finish_reason":null,"index":0,"logprobs":{"text_offset":[0],)"
            R"("token_logprobs":[-0.5],"tokens":["5"],"top_logprobs":[{"5":-0.5}]},"text":"Hel"}],)"
            R"("created":1700000000,"id":"cmpl-7","model":"demo","object":"text_completion",)"
            R"("usage":null})");
  const auto chunks = sse_json(events);
  EXPECT_EQ(chunks[1]["choices"][0]["index"], 1);
  EXPECT_EQ(chunks[1]["choices"][0]["text"], "X");
  EXPECT_EQ(chunks[2]["choices"][0],
            json::parse(R"({"index":1,"text":"","logprobs":null,"finish_reason":"length"})"));
  EXPECT_EQ(chunks[3]["choices"][0]["text"], "lo");
  EXPECT_EQ(chunks[3]["choices"][0]["logprobs"]["text_offset"], json({0}));  // per chunk
  EXPECT_EQ(chunks[4]["choices"][0]["text"], "");
  EXPECT_EQ(chunks[4]["choices"][0]["logprobs"]["tokens"], json({"2"}));
  EXPECT_EQ(chunks[5]["choices"][0]["finish_reason"], "stop");
  const auto end = sse_json(f->stream_end());
  ASSERT_EQ(end.size(), 2u);
  EXPECT_EQ(end[0]["choices"], json::array());
  EXPECT_EQ(end[0]["usage"], f->body()["usage"]);
  EXPECT_EQ(end[0]["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
  EXPECT_EQ(end[1], "[DONE]");
}

TEST(CompletionsProtocol, EchoAndNoUsageChunk) {
  json body = {{"prompt", "a b"}, {"n", 2}, {"echo", true}, {"logprobs", 0}, {"stream", true}};
  auto f = folder(body, 5);
  const auto start = sse_json(f->stream_start());
  ASSERT_EQ(start.size(), 2u);  // each choice opens with its prompt
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(start[i]["choices"][0]["index"], i);
    EXPECT_EQ(start[i]["choices"][0]["text"], "a b");
    EXPECT_TRUE(start[i]["choices"][0]["logprobs"].is_null());
    EXPECT_FALSE(start[i].contains("usage"));
  }
  SeqEvent t = text_event(1, "!", {9});
  t.logprobs = {logprob(9, -1.0f, {})};
  f->add_streaming({t, finish_event(1, "length", 3, 1), finish_event(0, "cancelled", 3, 0)});
  const auto end = sse_json(f->stream_end());
  ASSERT_EQ(end.size(), 1u);
  EXPECT_EQ(end[0], "[DONE]");
  // The body (same folder, same events) carries the prompt before the text.
  const json b = f->body();
  EXPECT_EQ(b["choices"][0]["text"], "a b");
  EXPECT_EQ(b["choices"][0]["finish_reason"], "abort");
  EXPECT_EQ(b["choices"][0]["logprobs"]["tokens"], json::array());
  EXPECT_EQ(b["choices"][1]["text"], "a b!");
  EXPECT_EQ(b["choices"][1]["logprobs"]["text_offset"], json({3}));
  EXPECT_EQ(b["usage"]["prompt_tokens"], 3);  // one prompt, counted once
  EXPECT_EQ(b["usage"]["completion_tokens"], 1);
}

// Tokens whose text is held back (a possible stop string) bring nothing to say yet.
TEST(CompletionsProtocol, EventsWithoutTextYieldNoChunk) {
  auto f = folder({{"prompt", "a"}, {"stream", true}}, 5);
  EXPECT_TRUE(f->add_streaming({text_event(0, "", {40}), text_event(0, "", {41})}).empty());
  const auto out = sse_json(f->add_streaming({text_event(0, "ab", {42})}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["choices"][0]["text"], "ab");
  EXPECT_EQ(f->choices()[0].tokens, (std::vector<int32_t>{40, 41, 42}));
}

TEST(CompletionsProtocol, BodyStampedWhenRenderedWithoutCreated) {
  auto f = folder({{"prompt", "a"}}, 0);
  f->add({finish_event(0, "length", 1, 0)});
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  EXPECT_GE(f->body()["created"].get<int64_t>(), now);
  EXPECT_TRUE(f->body()["choices"][0]["logprobs"].is_null());
}

}  // namespace
}  // namespace kvserve::server
