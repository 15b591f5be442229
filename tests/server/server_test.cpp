// Black-box tests of `kvserve serve`: the real binary on a free loopback port, spoken to over
// raw HTTP. Completions, chat, streaming, n > 1, stop strings, the error cases, overload (503),
// auth (401), a client vanishing mid-stream (no leaked blocks), SIGTERM draining, a short soak,
// and the official `openai` npm client when node and the package are installed.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "model/synth.h"
#include "test_models.h"
#include "test_util.h"

#ifndef KVSERVE_BINARY
#define KVSERVE_BINARY "kvserve"
#endif
#ifndef KVSERVE_SOURCE_DIR
#define KVSERVE_SOURCE_DIR "."
#endif

namespace kvserve {
namespace {

using json = nlohmann::json;

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

const std::string& demo_model_path() {
  static const std::string path = test::synth_model_path("demo", DType::kF32, 11);
  return path;
}

// A slower model (stories15m shape, ~1 ms per token) for tests that need requests in flight.
const std::string& slow_model_path() {
  static const std::string path = test::synth_model_path("stories15m", DType::kQ8_0);
  return path;
}

// A `kvserve serve` child process.
class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> extra,
                         const std::string& model = demo_model_path(),
                         const std::string& ctx = "256")
      : port_(free_port()) {
    std::vector<std::string> args = {KVSERVE_BINARY,        "serve", "-m", model, "--port",
                                     std::to_string(port_), "-t",    "1",  "-c",  ctx};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~ServerProcess() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // Polls GET /health until 200 (false after 30 s).
  bool wait_ready() {
    for (int i = 0; i < 300; ++i) {
      httplib::Client c("127.0.0.1", port_);
      if (auto r = c.Get("/health"); r && r->status == 200) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  // SIGTERM, then the exit code (-1 if killed by a signal or not exited in 60 s).
  int terminate() {
    ::kill(pid_, SIGTERM);
    return wait_exit();
  }
  void send_sigterm() { ::kill(pid_, SIGTERM); }
  int wait_exit() {
    for (int i = 0; i < 600; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return -1;
  }
  int port() const { return port_; }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }

 private:
  int port_;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

httplib::Result post(const ServerProcess& s, const std::string& path, const json& body,
                     const httplib::Headers& h = {}) {
  return s.client().Post(path.c_str(), h, body.dump(), "application/json");
}

double metric(const ServerProcess& s, const std::string& name) {
  auto r = s.client().Get("/metrics");
  if (!r) return -1;
  std::istringstream in(r->body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

// Waits until the engine holds no blocks and runs nothing (false after 10 s).
bool no_leaks(const ServerProcess& s) {
  for (int i = 0; i < 100; ++i) {
    if (metric(s, "kvserve_kv_blocks_used") == 0 && metric(s, "kvserve_requests_running") == 0 &&
        metric(s, "kvserve_requests_in_flight") == 0) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// Sends a streaming request on a raw socket, reads about `n_bytes` of the answer, then closes.
void stream_and_vanish(int port, const json& body, size_t n_bytes) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string b = body.dump();
  const std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
      "application/json\r\nContent-Length: " +
      std::to_string(b.size()) + "\r\n\r\n" + b;
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  size_t got = 0;
  char buf[512];
  while (got < n_bytes) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
}

// Connects to the server and sends `method path` with a JSON body over HTTP/`version`; the
// open socket (the caller reads and closes it), or -1.
int send_raw(int port, const std::string& path, const json& body,
             const std::string& version = "1.1") {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  const std::string b = body.dump();
  const std::string req = "POST " + path + " HTTP/" + version +
                          "\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                          std::to_string(b.size()) + "\r\n\r\n" + b;
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// SSE body -> the JSON chunks; sets *done when it ends with [DONE].
std::vector<json> sse_chunks(const std::string& body, bool* done) {
  std::vector<json> out;
  *done = false;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("data: ", 0) != 0) continue;
    const std::string data = line.substr(6);
    if (data == "[DONE]") {
      *done = true;
      continue;
    }
    EXPECT_FALSE(*done) << "data after [DONE]";
    out.push_back(json::parse(data));
  }
  return out;
}

void expect_error(const httplib::Result& r, int status, const std::string& param = "") {
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, status) << r->body;
  json j = json::parse(r->body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r->body;
  ASSERT_TRUE(j.contains("error")) << r->body;
  EXPECT_TRUE(j["error"]["message"].is_string());
  EXPECT_TRUE(j["error"].contains("type"));
  EXPECT_TRUE(j["error"].contains("param"));
  EXPECT_TRUE(j["error"].contains("code"));
  if (!param.empty()) {
    EXPECT_EQ(j["error"]["param"], param) << r->body;
  }
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess({"--chat-template", "chatml", "--max-seqs", "8"});
    ready_ = server_->wait_ready();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(ready_) << "server did not become ready"; }
  static ServerProcess* server_;
  static bool ready_;
};
ServerProcess* ServerTest::server_ = nullptr;
bool ServerTest::ready_ = false;

json greedy(const json& prompt, int max_tokens) {
  return {{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", true}};
}

TEST_F(ServerTest, Completion) {
  auto r = post(*server_, "/v1/completions", greedy("Once upon a time", 8));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "text_completion");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_TRUE(j["choices"][0]["text"].is_string());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 8);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  // Greedy is deterministic; a token-id prompt works too.
  auto r2 = post(*server_, "/v1/completions", greedy("Once upon a time", 8));
  EXPECT_EQ(json::parse(r2->body)["choices"][0]["text"], j["choices"][0]["text"]);
  auto r3 = post(*server_, "/v1/completions", greedy(json::array({1, 50, 60, 70}), 4));
  ASSERT_EQ(r3->status, 200) << r3->body;
  EXPECT_EQ(json::parse(r3->body)["usage"]["prompt_tokens"], 4);
}

// presence_penalty and frequency_penalty reach the sampler: a story repeats words, so a greedy
// continuation changes once repeating costs something, and an unpenalised request is unchanged.
TEST_F(ServerTest, PresenceAndFrequencyPenaltiesApply) {
  auto text = [&](const json& extra) {
    json b = greedy("Once upon a time", 48);
    b.update(extra);
    auto r = post(*server_, "/v1/completions", b);
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no response");
    return json::parse(r->body)["choices"][0]["text"].get<std::string>();
  };
  const std::string plain = text(json::object());
  EXPECT_EQ(text({{"presence_penalty", 0}, {"frequency_penalty", 0}}), plain);
  EXPECT_NE(text({{"frequency_penalty", 1.5}}), plain);
  EXPECT_NE(text({{"presence_penalty", 1.5}}), plain);
}

// logit_bias adds to the logits before sampling: +100 on one token makes greedy pick it every
// time; tools with tool_choice "none" and response_format text are accepted (nothing to do).
TEST_F(ServerTest, LogitBiasAndHarmlessOptionalFields) {
  json b = greedy("Once upon a time", 4);
  b["logit_bias"] = {{"300", 100}};
  b["logprobs"] = 0;
  auto r = post(*server_, "/v1/completions", b);
  ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "no response");
  const json ch = json::parse(r->body)["choices"][0];
  const json& toks = ch["logprobs"]["tokens"];
  ASSERT_EQ(toks.size(), 4u);
  for (const json& t : toks) EXPECT_EQ(t, toks[0]);
  json plain = greedy("Once upon a time", 4);
  auto r0 = post(*server_, "/v1/completions", plain);
  ASSERT_TRUE(r0 && r0->status == 200);
  EXPECT_NE(json::parse(r0->body)["choices"][0]["text"], ch["text"]);
  json chat = {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
               {"max_tokens", 2},
               {"response_format", {{"type", "text"}}},
               {"tools", json::array({{{"type", "function"}}})},
               {"tool_choice", "none"}};
  auto rc = post(*server_, "/v1/chat/completions", chat);
  ASSERT_TRUE(rc);
  EXPECT_EQ(rc->status, 200) << rc->body;
}

// The prefix cache serves full blocks of a repeated prompt (the last block is always
// recomputed), never across cache salts, and outputs are unchanged by it.
TEST_F(ServerTest, PrefixCacheCachedTokensAndSaltIsolation) {
  json prompt = json::array({1});
  for (int i = 0; i < 39; ++i) prompt.push_back(300 + i);  // 40 tokens: 2 full blocks reusable
  auto ask = [&](const std::string& salt) {
    json body = greedy(prompt, 6);
    if (!salt.empty()) body["cache_salt"] = salt;
    auto r = post(*server_, "/v1/completions", body);
    EXPECT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
    return json::parse(r->body);
  };
  const double hits_before = metric(*server_, "kvserve_prefix_cache_hits_total");
  json first = ask("");
  EXPECT_EQ(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  json again = ask("");
  EXPECT_EQ(again["usage"]["prompt_tokens_details"]["cached_tokens"], 32);
  EXPECT_EQ(again["choices"][0]["text"], first["choices"][0]["text"]);
  json tenant = ask("tenant-a");
  EXPECT_EQ(tenant["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_EQ(tenant["choices"][0]["text"], first["choices"][0]["text"]);
  json tenant_again = ask("tenant-a");
  EXPECT_EQ(tenant_again["usage"]["prompt_tokens_details"]["cached_tokens"], 32);
  EXPECT_GE(metric(*server_, "kvserve_prefix_cache_hits_total"), hits_before + 64);
  EXPECT_GT(metric(*server_, "kvserve_kv_blocks_cached"), 0);
  EXPECT_TRUE(no_leaks(*server_));
}

TEST_F(ServerTest, BatchPromptsEchoAndLogprobs) {
  json b = greedy(json::array({"a b c", "d e f"}), 4);
  b["echo"] = true;
  b["logprobs"] = 3;
  auto r = post(*server_, "/v1/completions", b);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][1]["index"], 1);
  EXPECT_EQ(j["choices"][0]["text"].get<std::string>().rfind("a b c", 0), 0u);
  auto lp = j["choices"][0]["logprobs"];
  ASSERT_EQ(lp["token_logprobs"].size(), 4u);
  EXPECT_LE(lp["token_logprobs"][0].get<double>(), 0.0);
  EXPECT_EQ(lp["top_logprobs"][0].size(), 3u);
}

// Logprobs are the model's raw distribution, before the repetition penalty, temperature and
// truncation (vLLM's default, logprobs_mode=raw_logprobs): the first token's alternatives are
// the same whatever the request samples with.
TEST_F(ServerTest, LogprobsAreRawModelLogprobs) {
  auto first_logprobs = [&](const json& sampling) {
    json b = greedy(json::array({1, 50, 60, 70, 50, 60, 50}), 1);
    b["logprobs"] = 5;
    b.update(sampling);
    auto r = post(*server_, "/v1/completions", b);
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no response");
    return json::parse(r->body)["choices"][0]["logprobs"];
  };
  const json raw = first_logprobs(json::object());
  const json& top = raw["top_logprobs"][0];
  ASSERT_EQ(top.size(), 5u);
  double p_sum = 0;
  for (const auto& [token, lp] : top.items()) p_sum += std::exp(lp.get<double>());
  EXPECT_LE(p_sum, 1.0 + 1e-5);
  // Greedy picks the most likely token: its logprob is the best alternative's.
  double best = -1e30;
  for (const auto& [token, lp] : top.items()) best = std::max(best, lp.get<double>());
  EXPECT_NEAR(raw["token_logprobs"][0].get<double>(), best, 1e-5);

  const json variants[] = {{{"temperature", 1.7}, {"seed", 3}},
                           {{"temperature", 0.3}, {"top_k", 2}, {"seed", 4}},
                           {{"repetition_penalty", 3.0}},
                           {{"presence_penalty", 1.5}, {"frequency_penalty", 1.5}}};
  for (const json& v : variants) {
    const json got = first_logprobs(v);
    const json& got_top = got["top_logprobs"][0];
    ASSERT_EQ(got_top.size(), top.size()) << v.dump();
    for (const auto& [token, lp] : top.items()) {
      ASSERT_TRUE(got_top.contains(token)) << v.dump() << " lacks " << token;
      EXPECT_NEAR(got_top[token].get<double>(), lp.get<double>(), 1e-5) << v.dump();
    }
    // Whatever token was sampled, its logprob is the raw one (when it is in the top 5).
    const std::string t = got["tokens"][0];
    if (top.contains(t)) {
      EXPECT_NEAR(got["token_logprobs"][0].get<double>(), top[t].get<double>(), 1e-5) << v.dump();
    }
  }
}

TEST_F(ServerTest, Chat) {
  json b = {
      {"messages",
       {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hello"}}}},
      {"max_tokens", 6},
      {"temperature", 0},
      {"logprobs", true},
      {"top_logprobs", 2}};
  auto r = post(*server_, "/v1/chat/completions", b);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_TRUE(j["choices"][0]["message"]["content"].is_string());
  EXPECT_TRUE(j["choices"][0]["logprobs"]["content"].is_array());
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

TEST_F(ServerTest, StreamingMatchesNonStreaming) {
  json b = greedy("The cat", 12);
  auto full = post(*server_, "/v1/completions", b);
  ASSERT_EQ(full->status, 200);
  b["stream"] = true;
  b["stream_options"] = {{"include_usage", true}};
  auto r = post(*server_, "/v1/completions", b);
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  bool done = false;
  auto chunks = sse_chunks(r->body, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(chunks.size(), 2u);
  std::string text;
  std::string finish;
  for (auto& c : chunks) {
    for (auto& ch : c["choices"]) {
      text += ch["text"].get<std::string>();
      if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
    }
  }
  EXPECT_EQ(text, json::parse(full->body)["choices"][0]["text"].get<std::string>());
  EXPECT_EQ(finish, "length");
  EXPECT_TRUE(chunks.back()["choices"].empty());
  EXPECT_EQ(chunks.back()["usage"]["completion_tokens"], 12);
  EXPECT_EQ(chunks.back()["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

TEST_F(ServerTest, ChatStreaming) {
  json b = {
      {"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 5}, {"stream", true}};
  auto r = post(*server_, "/v1/chat/completions", b);
  ASSERT_EQ(r->status, 200);
  bool done = false;
  auto chunks = sse_chunks(r->body, &done);
  EXPECT_TRUE(done);
  ASSERT_FALSE(chunks.empty());
  EXPECT_EQ(chunks[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(chunks[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_FALSE(chunks.back()["choices"][0]["finish_reason"].is_null());
}

TEST_F(ServerTest, NChoicesWithSeeds) {
  json b = {{"prompt", "x y"},    {"max_tokens", 6}, {"n", 3},
            {"temperature", 1.0}, {"seed", 5},       {"ignore_eos", true}};
  auto r = post(*server_, "/v1/completions", b);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  ASSERT_EQ(j["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(j["choices"][i]["index"], i);
  EXPECT_EQ(j["usage"]["completion_tokens"], 18);
  // Same seed, same choices.
  auto r2 = post(*server_, "/v1/completions", b);
  EXPECT_EQ(json::parse(r2->body)["choices"], j["choices"]);
}

TEST_F(ServerTest, StopString) {
  auto full = post(*server_, "/v1/completions", greedy("one two", 24));
  ASSERT_EQ(full->status, 200);
  const std::string text = json::parse(full->body)["choices"][0]["text"];
  // A printable two-character stop string from the middle of the greedy text.
  size_t at = std::string::npos;
  for (size_t i = text.size() / 3; i + 2 <= text.size(); ++i) {
    if (std::isgraph(static_cast<unsigned char>(text[i])) &&
        std::isgraph(static_cast<unsigned char>(text[i + 1]))) {
      at = i;
      break;
    }
  }
  if (at == std::string::npos) GTEST_SKIP() << "no printable text to stop on: " << text;
  const std::string stop = text.substr(at, 2);
  for (bool stream : {false, true}) {
    json b = greedy("one two", 24);
    b["stop"] = json::array({"\x01never", stop});
    b["stream"] = stream;
    auto r = post(*server_, "/v1/completions", b);
    ASSERT_EQ(r->status, 200);
    std::string got, finish;
    if (stream) {
      bool done = false;
      for (auto& c : sse_chunks(r->body, &done)) {
        for (auto& ch : c["choices"]) {
          got += ch["text"].get<std::string>();
          if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
        }
      }
    } else {
      json j = json::parse(r->body);
      got = j["choices"][0]["text"];
      finish = j["choices"][0]["finish_reason"];
    }
    EXPECT_EQ(got, text.substr(0, text.find(stop))) << "stream " << stream;
    EXPECT_EQ(finish, "stop");
  }
}

TEST_F(ServerTest, BadRequests) {
  auto c = server_->client();
  expect_error(c.Post("/v1/completions", "{not json", "application/json"), 400);
  expect_error(post(*server_, "/v1/completions", json::array({1, 2})), 400);
  expect_error(post(*server_, "/v1/completions", {{"max_tokens", 4}}), 400, "prompt");
  expect_error(post(*server_, "/v1/completions", {{"prompt", 5}}), 400, "prompt");
  expect_error(post(*server_, "/v1/completions", {{"prompt", "a"}, {"max_tokens", "x"}}), 400,
               "max_tokens");
  expect_error(post(*server_, "/v1/completions", {{"prompt", "a"}, {"max_tokens", -1}}), 400,
               "max_tokens");
  expect_error(post(*server_, "/v1/completions", {{"prompt", "a"}, {"max_tokens", 1000000000}}),
               400, "max_tokens");
  expect_error(post(*server_, "/v1/completions", {{"prompt", "a"}, {"temperature", -0.5}}), 400,
               "temperature");
  expect_error(post(*server_, "/v1/completions", {{"prompt", "a"}, {"top_p", 1.5}}), 400, "top_p");
  expect_error(post(*server_, "/v1/completions", {{"prompt", "a"}, {"top_p", 0}}), 400, "top_p");
  expect_error(post(*server_, "/v1/completions", {{"prompt", "a"}, {"n", 0}}), 400, "n");
  expect_error(post(*server_, "/v1/completions", {{"prompt", "a"}, {"stop", 3}}), 400, "stop");
  expect_error(post(*server_, "/v1/completions", {{"prompt", json::array({1, 999999})}}), 400,
               "prompt");
  std::vector<int> long_prompt(300, 5);
  auto r = post(*server_, "/v1/completions", {{"prompt", long_prompt}});
  expect_error(r, 400, "prompt");
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "context_length_exceeded");
  expect_error(post(*server_, "/v1/chat/completions", {{"messages", json::array()}}), 400,
               "messages");
  expect_error(post(*server_, "/v1/chat/completions",
                    {{"messages", {{{"role", "wizard"}, {"content", "x"}}}}}),
               400, "messages");
  // Fields that would change the answer and that kvserve does not implement are refused.
  const json chat_hi = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  for (const auto& [field, value] :
       std::vector<std::pair<std::string, json>>{{"response_format", {{"type", "json_object"}}},
                                                 {"tools", json::array({{{"type", "function"}}})},
                                                 {"functions", json::array({{{"name", "f"}}})}}) {
    json b = chat_hi;
    b[field] = value;
    expect_error(post(*server_, "/v1/chat/completions", b), 400, field);
  }
  expect_error(post(*server_, "/v1/chat/completions", {{"messages", {{{"role", "user"}}}}}), 400,
               "messages");
  expect_error(post(*server_, "/v1/completions", {{"prompt", "a"}, {"suffix", "b"}}), 400,
               "suffix");
  expect_error(post(*server_, "/v1/completions", {{"prompt", "a"}, {"best_of", 3}}), 400,
               "best_of");
  expect_error(post(*server_, "/v1/completions", {{"prompt", "a"}, {"logit_bias", {{"x", 1}}}}),
               400, "logit_bias");
  expect_error(post(*server_, "/v1/completions", {{"prompt", "a"}, {"logit_bias", {{"5", 101}}}}),
               400, "logit_bias");
  expect_error(c.Get("/v1/nothing"), 404);
  // Bodies over the limit (8 MiB) are refused.
  std::string big(9u << 20, 'a');
  auto rb = c.Post("/v1/completions", big, "application/json");
  ASSERT_TRUE(rb);
  EXPECT_EQ(rb->status, 413);
}

TEST_F(ServerTest, ModelsHealthMetrics) {
  auto c = server_->client();
  auto m = c.Get("/v1/models");
  ASSERT_EQ(m->status, 200);
  EXPECT_EQ(json::parse(m->body)["data"][0]["id"], "demo");
  EXPECT_EQ(c.Get("/health")->status, 200);
  auto r = c.Get("/metrics");
  ASSERT_EQ(r->status, 200);
  for (const char* name :
       {"kvserve_kv_usage_ratio", "kvserve_kv_blocks_used", "kvserve_kv_blocks_free",
        "kvserve_kv_blocks_cached", "kvserve_prefix_cache_queries_total",
        "kvserve_prefix_cache_hits_total", "kvserve_requests_running", "kvserve_requests_waiting",
        "kvserve_preemptions_total", "kvserve_generated_tokens_total"}) {
    EXPECT_NE(r->body.find(std::string("# TYPE ") + name + " "), std::string::npos) << name;
    EXPECT_NE(r->body.find(std::string("# HELP ") + name + " "), std::string::npos) << name;
  }
  for (const char* h :
       {"kvserve_time_to_first_token_seconds", "kvserve_inter_token_latency_seconds"}) {
    EXPECT_NE(r->body.find(std::string("# TYPE ") + h + " histogram"), std::string::npos);
    EXPECT_NE(r->body.find(std::string(h) + "_bucket{le=\"+Inf\"}"), std::string::npos);
    EXPECT_NE(r->body.find(std::string(h) + "_sum "), std::string::npos);
    EXPECT_NE(r->body.find(std::string(h) + "_count "), std::string::npos);
  }
}

TEST_F(ServerTest, SoakWithRandomDisconnects) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  std::atomic<int> n_ok{0}, n_bad{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 6; ++t) {
    clients.emplace_back([&, t] {
      std::mt19937 rng(t);
      while (std::chrono::steady_clock::now() < until) {
        json b = greedy("soak " + std::to_string(rng() % 100), 4 + static_cast<int>(rng() % 40));
        b["temperature"] = (rng() % 2) ? 0.0 : 0.8;
        const int kind = static_cast<int>(rng() % 3);
        if (kind == 0) {
          b["stream"] = true;
          stream_and_vanish(server_->port(), b, 100 + rng() % 400);
          continue;
        }
        b["stream"] = kind == 1;
        auto r = post(*server_, "/v1/completions", b);
        (r && r->status == 200 ? n_ok : n_bad)++;
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_GT(n_ok.load(), 0);
  EXPECT_EQ(n_bad.load(), 0);
  EXPECT_TRUE(no_leaks(*server_));
}

// The official openai npm client against the server (tests/server/setup_node.sh installs it).
TEST_F(ServerTest, OpenAINodeClient) {
  const std::string dir = std::string(KVSERVE_SOURCE_DIR) + "/tests/server";
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "node not installed";
  if (!std::filesystem::exists(dir + "/node/node_modules/openai")) {
    GTEST_SKIP() << "openai npm package missing: run tests/server/setup_node.sh";
  }
  const std::string cmd = "KVSERVE_URL=http://127.0.0.1:" + std::to_string(server_->port()) +
                          "/v1 NODE_PATH=" + dir + "/node/node_modules node --test " + dir +
                          "/openai_client.test.mjs 2>&1";
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0);
}

// A second server: API key, no chat template, one slot and no queue.
TEST(ServerLimits, AuthQueueFullAndNoTemplate) {
  ServerProcess s({"--api-key", "sekret", "--max-seqs", "1", "--max-queue", "0"}, slow_model_path(),
                  "1100");
  ASSERT_TRUE(s.wait_ready());
  const httplib::Headers auth = {{"Authorization", "Bearer sekret"}};
  expect_error(post(s, "/v1/completions", greedy("a", 2)), 401);
  expect_error(post(s, "/v1/completions", greedy("a", 2), {{"Authorization", "Bearer nope"}}), 401);
  EXPECT_EQ(s.client().Get("/health")->status, 200);  // not behind the key
  auto ok = post(s, "/v1/completions", greedy("a", 2), auth);
  ASSERT_EQ(ok->status, 200) << ok->body;
  auto chat =
      post(s, "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "x"}}}}}, auth);
  expect_error(chat, 400, "messages");
  EXPECT_NE(json::parse(chat->body)["error"]["message"].get<std::string>().find("--chat-template"),
            std::string::npos);

  // Occupy the only slot with a long stream, then a second request is refused with 503.
  std::atomic<bool> stop{false};
  std::thread holder([&] {
    json b = greedy("hold", 1000);
    b["stream"] = true;
    httplib::Client c("127.0.0.1", s.port());
    c.set_read_timeout(60, 0);
    httplib::Headers h = auth;
    c.Post("/v1/completions", h, b.dump(), "application/json");
  });
  bool saw_503 = false;
  for (int i = 0; i < 100 && !saw_503; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    auto r = post(s, "/v1/completions", greedy("b", 2), auth);
    if (r && r->status == 503) {
      saw_503 = true;
      EXPECT_FALSE(r->get_header_value("Retry-After").empty());
      expect_error(r, 503);
    }
  }
  EXPECT_TRUE(saw_503);
  holder.join();
  EXPECT_TRUE(no_leaks(s));
}

// A streaming client that vanishes: its sequence is cancelled early and its blocks freed.
TEST(ServerLifecycle, DisconnectMidStreamFreesBlocks) {
  ServerProcess s({}, slow_model_path(), "1100");
  ASSERT_TRUE(s.wait_ready());
  json b = greedy("Once upon", 1000);
  b["stream"] = true;
  stream_and_vanish(s.port(), b, 600);
  EXPECT_TRUE(no_leaks(s));
  const double n_generated = metric(s, "kvserve_generated_tokens_total");
  EXPECT_GT(n_generated, 0);
  EXPECT_LT(n_generated, 1000) << "the request ran to the end instead of being cancelled";
}

// A non-streaming client that hangs up while its answer is being generated: the server notices
// while it waits for the result, cancels the sequence and frees its blocks long before the
// request would have finished (it would run all 1000 tokens otherwise).
TEST(ServerLifecycle, DisconnectNonStreamingAbortsRequest) {
  ServerProcess s({}, slow_model_path(), "1100");
  ASSERT_TRUE(s.wait_ready());
  const int n_max = 1000;
  const int fd = send_raw(s.port(), "/v1/completions", greedy("Once upon", n_max));
  ASSERT_GE(fd, 0);
  // Hang up once the request is running and has produced a few tokens.
  for (int i = 0; i < 500 && metric(s, "kvserve_generated_tokens_total") < 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_GE(metric(s, "kvserve_requests_running"), 1) << "the request finished too early";
  ::close(fd);
  EXPECT_TRUE(no_leaks(s));
  const double n_generated = metric(s, "kvserve_generated_tokens_total");
  EXPECT_GT(n_generated, 0);
  EXPECT_LT(n_generated, n_max / 2) << "the request ran on after its client left";
  EXPECT_EQ(metric(s, "kvserve_requests_running"), 0);
  EXPECT_GT(metric(s, "kvserve_kv_blocks_free") + metric(s, "kvserve_kv_blocks_cached"), 0);
  // The server still answers.
  auto r = post(s, "/v1/completions", greedy("again", 4));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

// Non-streaming answers use chunked encoding (so the server can watch the connection while it
// waits); an HTTP/1.0 client, which cannot take chunks, gets a Content-Length body.
TEST_F(ServerTest, NonStreamingFraming) {
  for (const std::string version : {"1.1", "1.0"}) {
    const int fd = send_raw(server_->port(), "/v1/completions", greedy("frame", 5), version);
    ASSERT_GE(fd, 0);
    std::string got;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      got.append(buf, static_cast<size_t>(n));
      if (version == "1.1" && got.find("\r\n0\r\n\r\n") != std::string::npos) break;
    }
    ::close(fd);
    ASSERT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got;
    const size_t body_at = got.find("\r\n\r\n");
    ASSERT_NE(body_at, std::string::npos);
    const std::string head = got.substr(0, body_at);
    std::string body = got.substr(body_at + 4);
    if (version == "1.1") {
      EXPECT_NE(head.find("Transfer-Encoding: chunked"), std::string::npos) << head;
      std::string joined;  // the chunks' payloads
      for (size_t at = 0;;) {
        const size_t eol = body.find("\r\n", at);
        ASSERT_NE(eol, std::string::npos) << body;
        const size_t n = std::stoul(body.substr(at, eol - at), nullptr, 16);
        if (n == 0) break;
        joined += body.substr(eol + 2, n);
        at = eol + 2 + n + 2;
      }
      body = joined;
    } else {
      EXPECT_NE(head.find("Content-Length: "), std::string::npos) << head;
    }
    const json j = json::parse(body);
    EXPECT_EQ(j["usage"]["completion_tokens"], 5);
    EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  }
}

TEST(ServerLifecycle, SigtermDrainsInFlightRequests) {
  ServerProcess s({}, slow_model_path(), "1100");
  ASSERT_TRUE(s.wait_ready());
  std::atomic<int> status{0};
  std::string body;
  std::thread t([&] {
    auto r = post(s, "/v1/completions", greedy("drain me", 1000));
    if (r) {
      status = r->status;
      body = r->body;
    }
  });
  for (int i = 0; i < 200 && metric(s, "kvserve_requests_running") < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  s.send_sigterm();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  // Draining: not ready, and new work is refused.
  auto h = s.client().Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 503);
  expect_error(post(s, "/v1/completions", greedy("late", 2)), 503);
  const int rc = s.wait_exit();
  t.join();
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(status.load(), 200);
  if (status.load() == 200) {
    EXPECT_EQ(json::parse(body)["usage"]["completion_tokens"], 1000);
  }
}

}  // namespace
}  // namespace kvserve
