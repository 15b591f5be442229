// End-to-end: `kvserve bench serve` on the tiny synth demo model, in-process and over HTTP
// (--http: the real server on a loopback port, streaming requests). Both print the same table
// and JSON with plausible numbers, and run the same workload.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/run_kvserve.h"
#include "test_models.h"

namespace kvserve {
namespace {

using json = nlohmann::json;
using test::last_json_line;
using test::Proc;
using test::run_kvserve;

TEST(BenchServe, HttpModeMatchesInProcessWorkload) {
  const std::string model = test::synth_model_path("demo", DType::kF32, 11);
  const std::string args = "bench serve -m " + model +
                           " --clients 1,2 --requests-per-client 2 --prompt-len 8"
                           " --gen-min 4 --gen-max 12 -t 1 --json";
  const Proc http = run_kvserve(args + " --http", false);
  ASSERT_EQ(http.rc, 0) << http.out;
  const Proc local = run_kvserve(args, false);
  ASSERT_EQ(local.rc, 0) << local.out;
  EXPECT_NE(http.out.find("over HTTP"), std::string::npos) << http.out;
  for (const char* col :
       {"scheduler", "clients", "tokens/s", "ttft p50", "ttft p99", "itl p50", "itl p99"}) {
    EXPECT_NE(http.out.find(col), std::string::npos) << col;
  }
  EXPECT_NE(http.out.find("continuous vs static, 2 clients:"), std::string::npos) << http.out;
  EXPECT_NE(http.out.find("continuous vs static-shrink, 2 clients:"), std::string::npos)
      << http.out;

  const json jh = last_json_line(http.out);
  const json jl = last_json_line(local.out);
  ASSERT_TRUE(jh.is_object()) << http.out;
  ASSERT_TRUE(jl.is_object()) << local.out;
  EXPECT_EQ(jh["transport"], "http");
  EXPECT_EQ(jl["transport"], "in-process");
  // {continuous, static, static-shrink} x {1, 2} clients
  ASSERT_EQ(jh["results"].size(), 6u);
  ASSERT_EQ(jl["results"].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    const json& r = jh["results"][i];
    const int clients = r["clients"];
    SCOPED_TRACE(r.dump());
    // The same seeded workload, generated in full (ignore_eos): the same token counts.
    EXPECT_EQ(r["scheduler"], jl["results"][i]["scheduler"]);
    EXPECT_EQ(r["tokens"], jl["results"][i]["tokens"]);
    EXPECT_GE(r["tokens"].get<int>(), clients * 2 * 4);
    EXPECT_LE(r["tokens"].get<int>(), clients * 2 * 12);
    EXPECT_GT(r["seconds"].get<double>(), 0.0);
    EXPECT_GT(r["tokens_per_s"].get<double>(), 0.0);
    const double ttft50 = r["ttft_ms_p50"], ttft99 = r["ttft_ms_p99"];
    const double itl50 = r["itl_ms_p50"], itl99 = r["itl_ms_p99"];
    EXPECT_GT(ttft50, 0.0);
    EXPECT_GE(ttft99, ttft50);
    EXPECT_LT(ttft99, 10000.0);
    EXPECT_GE(itl50, 0.0);
    EXPECT_GE(itl99, itl50);
    EXPECT_LT(itl99, 10000.0);
    EXPECT_EQ(r["preemptions"], 0);
  }
}

TEST(BenchServe, SampledWorkloadGeneratesEveryToken) {
  const std::string model = test::synth_model_path("demo", DType::kF32, 11);
  const Proc p = run_kvserve("bench serve -m " + model +
                                 " --clients 2 --schedulers continuous --requests-per-client 2"
                                 " --prompt-len 8 --gen-min 6 --gen-max 6 -t 1 --json"
                                 " --temperature 0.8 --top-p 0.9",
                             false);
  ASSERT_EQ(p.rc, 0) << p.out;
  EXPECT_NE(p.out.find("sampled: temperature 0.80, top_p 0.90"), std::string::npos) << p.out;
  const json j = last_json_line(p.out);
  ASSERT_TRUE(j.is_object()) << p.out;
  EXPECT_FLOAT_EQ(j["temperature"].get<float>(), 0.8f);
  ASSERT_EQ(j["results"].size(), 1u);
  EXPECT_EQ(j["results"][0]["tokens"], 2 * 2 * 6);  // ignore_eos: every requested token
  const Proc bad = run_kvserve("bench serve -m " + model + " --top-p 1.5");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.out.find("--top-p"), std::string::npos) << bad.out;
}

// The clients draw from one list of clients x requests-per-client requests, so a run's
// requests depend only on that product: 1 x 4, 2 x 2 and 4 x 1 send the same four requests (one
// list per client would give each split its own lengths).
TEST(BenchServe, ClientsShareOneListOfRequests) {
  const std::string model = test::synth_model_path("demo", DType::kF32, 11);
  std::vector<int> tokens;
  for (const char* split :
       {"--clients 1 --requests-per-client 4", "--clients 2 --requests-per-client 2",
        "--clients 4 --requests-per-client 1"}) {
    const Proc p = run_kvserve("bench serve -m " + model + " " + split +
                                   " --schedulers continuous --prompt-len 4 --gen-min 2"
                                   " --gen-max 40 -t 1 --json",
                               false);
    ASSERT_EQ(p.rc, 0) << p.out;
    const json j = last_json_line(p.out);
    ASSERT_TRUE(j.is_object()) << p.out;
    ASSERT_EQ(j["results"].size(), 1u);
    tokens.push_back(j["results"][0]["tokens"].get<int>());
  }
  EXPECT_EQ(tokens[1], tokens[0]);
  EXPECT_EQ(tokens[2], tokens[0]);
}

TEST(BenchServe, RejectsBadLengths) {
  const std::string model = test::synth_model_path("demo", DType::kF32, 11);
  const Proc p = run_kvserve("bench serve -m " + model + " --http --gen-min 9 --gen-max 3");
  EXPECT_NE(p.rc, 0);
  EXPECT_NE(p.out.find("--gen-min"), std::string::npos) << p.out;
  const Proc q = run_kvserve("bench serve -m " + model + " --schedulers continuous,fifo");
  EXPECT_NE(q.rc, 0);
  EXPECT_NE(q.out.find("unknown scheduler 'fifo'"), std::string::npos) << q.out;
}

}  // namespace
}  // namespace kvserve
