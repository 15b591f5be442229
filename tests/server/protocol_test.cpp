// The protocol-independent part: engine requests from parsed ones, JSON bodies, and the
// accumulation every ResponseFolder shares (streaming or not).
#include "server/protocol.h"

#include <gtest/gtest.h>

#include "server/protocol_test_util.h"

namespace kvserve::server {
namespace {

using json = nlohmann::json;
using test::finish_event;
using test::text_event;

// A folder that records what it was asked to stream.
class RecordingFolder : public ResponseFolder {
 public:
  using ResponseFolder::ResponseFolder;
  std::vector<SseEvent> stream_start() const override { return {{"start", "s"}}; }
  std::vector<SseEvent> stream_end() const override { return {{"", "end"}}; }
  json body() const override { return json::object(); }

 protected:
  void stream_event(const SeqEvent& e, const ChoiceResult& c,
                    std::vector<SseEvent>& out) const override {
    out.push_back({"", std::to_string(e.index) + ":" + e.text + "|" + c.text});
  }
};

TEST(ProtocolEngineRequest, SequencesPerPromptWithSeeds) {
  ParsedRequest p;
  p.prompts = {{1, 2, 3}, {4, 5}};
  p.n = 2;
  p.max_tokens = 7;
  p.sampling.seed = 100;
  p.stop = {"x"};
  p.logprobs = 3;
  p.ignore_eos = true;
  p.cache_salt = "salt";
  auto req = make_engine_request(p);
  ASSERT_EQ(req->seqs.size(), 4u);
  EXPECT_EQ(req->cache_salt, "salt");
  for (int i = 0; i < 4; ++i) {
    const SeqSpec& s = req->seqs[i];
    EXPECT_EQ(s.index, i);
    EXPECT_EQ(s.prompt, p.prompts[i / 2]);
    EXPECT_EQ(s.sampling.seed, 100u + i % 2);
    EXPECT_EQ(s.max_tokens, 7);
    EXPECT_EQ(s.stop, p.stop);
    EXPECT_EQ(s.n_logprobs, 3);
    EXPECT_TRUE(s.ignore_eos);
  }
}

TEST(ProtocolJson, InvalidJsonIs400) {
  json j;
  EXPECT_FALSE(parse_json(R"({"a": [1, 2]})", j));
  EXPECT_EQ(j["a"][1], 2);
  auto e = parse_json("{not json", j);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400);
  EXPECT_EQ(e->body().dump(),
            R"({"error":{"code":"invalid_json","message":"the request body is not valid JSON",)"
            R"("param":null,"type":"invalid_request_error"}})");
  EXPECT_EQ(dump_json(json("a\xff")), "\"a\xEF\xBF\xBD\"");  // replaced, not thrown
}

TEST(ProtocolSse, WireFraming) {
  EXPECT_EQ((SseEvent{"", "[DONE]"}).wire(), "data: [DONE]\n\n");
  EXPECT_EQ((SseEvent{"message_stop", R"({"type":"message_stop"})"}).wire(),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
}

TEST(ProtocolFolder, AccumulatesPerChoiceAndCountsFinishes) {
  RecordingFolder f(2);
  f.add({text_event(1, "b", {7}), text_event(0, "a", {5}), text_event(0, "c", {6})});
  EXPECT_FALSE(f.done());
  f.add({finish_event(0, "stop", 4, 2, 1)});
  EXPECT_FALSE(f.done());
  f.add({finish_event(0, "length", 9, 9, 9)});  // a second end changes nothing
  EXPECT_FALSE(f.done());
  f.add({finish_event(1, "cancelled", 4, 1)});
  EXPECT_TRUE(f.done());
  const auto& c = f.choices();
  EXPECT_EQ(c[0].text, "ac");
  EXPECT_EQ(c[0].tokens, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(c[0].finish_reason, "stop");
  EXPECT_EQ(c[0].n_prompt_tokens, 4);
  EXPECT_EQ(c[0].n_completion_tokens, 2);
  EXPECT_EQ(c[0].n_cached_tokens, 1);
  EXPECT_EQ(c[1].text, "b");
  EXPECT_EQ(c[1].finish_reason, "abort");  // a cancelled choice reads abort
  EXPECT_THROW(f.add({text_event(2, "x")}), std::out_of_range);
}

TEST(ProtocolFolder, StreamingFoldsTheSameWayAndYieldsInEventOrder) {
  RecordingFolder f(2);
  auto out = f.add_streaming({text_event(1, "b"), text_event(0, "a"), text_event(1, "d")});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].data, "1:b|b");
  EXPECT_EQ(out[1].data, "0:a|a");
  EXPECT_EQ(out[2].data, "1:d|bd");  // the event sees its choice with the event folded in
  out = f.add_streaming({finish_event(0, "stop", 1, 1), finish_event(1, "stop", 1, 2)});
  EXPECT_EQ(out.size(), 2u);
  EXPECT_TRUE(f.done());
  EXPECT_EQ(f.choices()[1].text, "bd");
  EXPECT_TRUE(f.add_streaming({}).empty());
}

}  // namespace
}  // namespace kvserve::server
