// The benchmark library (src/bench) called directly, as the CLI calls it: reports and their
// progress callbacks on tiny shapes, argument errors, and the helpers the tables print.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "bench/attention.h"
#include "bench/batch.h"
#include "bench/decode.h"
#include "bench/prefix.h"
#include "bench/serve.h"
#include "engine/generator.h"
#include "model/synth.h"
#include "test_models.h"

namespace kvserve::bench {
namespace {

ModelLoader demo_loader() {
  return [] { return load_model(test::synth_model_path("demo", DType::kF32, 11)); };
}

TEST(BenchAttentionLib, RowsFollowProgressAndShape) {
  AttentionOptions o;
  o.preset = "demo";
  o.seqs = {1, 2};
  o.contexts = {17};
  o.repeat = 2;
  o.n_threads = 1;
  int calls = 0;
  auto r = run_attention(o, [&](const AttentionReport& p) {
    EXPECT_EQ(static_cast<int>(p.rows.size()), calls);  // once before the rows, then per row
    ++calls;
  });
  ASSERT_TRUE(r) << r.status().to_string();
  EXPECT_EQ(calls, 3);
  ASSERT_EQ(r->rows.size(), 2u);
  auto cfg = synth_preset("demo");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(r->n_layer, cfg->n_layer);
  const KvLayout L = kv_layout_for(*cfg, EngineOptions{});
  EXPECT_DOUBLE_EQ(r->rows[1].mb, 2 * 17 * L.bytes_per_token() / 1e6);
  EXPECT_LE(r->rows[1].min_ms, r->rows[1].ms);
}

TEST(BenchAttentionLib, MixedContextsLongestFirst) {
  EXPECT_EQ(contexts_of(4, 30, true), (std::vector<int>{48, 36, 24, 12}));
  EXPECT_EQ(contexts_of(3, 5, true), (std::vector<int>{8, 8, 8}));  // at least 8
  EXPECT_EQ(contexts_of(2, 30, false), (std::vector<int>{30, 30}));
}

TEST(BenchAttentionLib, Errors) {
  AttentionOptions o;
  o.preset = "demo";
  o.repeat = 0;
  EXPECT_EQ(run_attention(o).status().code(), StatusCode::kInvalidArgument);
  o.repeat = 1;
  o.preset = "nope";
  EXPECT_FALSE(run_attention(o));
}

TEST(BenchBatchLib, ChecksOptionsBeforeLoadingTheModel) {
  BatchOptions o;
  bool loaded = false;
  o.load_model = [&]() -> Result<std::unique_ptr<Model>> {
    loaded = true;
    return not_found("no model");
  };
  o.steps = 0;
  EXPECT_EQ(run_batch(o).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(loaded);
  o.steps = 1;
  EXPECT_EQ(run_batch(o).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(loaded);
}

TEST(BenchBatchLib, OpTable) {
  EXPECT_STREQ(op_label(kNumOps), "other");
  EXPECT_STREQ(op_label(0), op_name(static_cast<Op>(0)));
  BatchRow r;
  r.step_ms = 10;
  EXPECT_EQ(op_ms(r, 0), 0.0);  // no op times
  r.ops.forwards = 2;           // two steps of 10 ms: 20 ms, 12 of them in op 0
  r.ops.seconds[0] = 0.012;
  EXPECT_DOUBLE_EQ(op_ms(r, 0), 6.0);
  EXPECT_DOUBLE_EQ(op_ms(r, kNumOps), 4.0);
}

TEST(BenchBatchLib, RunsOnTheDemoModel) {
  BatchOptions o;
  o.load_model = demo_loader();
  o.batches = {2};
  o.context = 4;
  o.steps = 2;
  o.warmup = 0;
  o.n_threads = 1;
  auto r = run_batch(o);
  ASSERT_TRUE(r) << r.status().to_string();
  ASSERT_EQ(r->rows.size(), 1u);
  EXPECT_GT(r->rows[0].step_ms, 0.0);
  EXPECT_EQ(r->model.find("demo"), 0u) << r->model;
}

TEST(BenchDecodeLib, GrowthAndRoofline) {
  DecodeReport rep;
  DecodeRow a{"m", 100, true, 0, 50, 20, 1e6};
  DecodeRow b{"m", 400, true, 0, 25, 40, 2e6};
  DecodeRow c{"m", 100, false, 0, 10, 100, 1e6};
  rep.rows = {a, b, c};
  const auto g = decode_growth(rep);
  ASSERT_EQ(g.size(), 1u);  // one uncached context: no growth
  EXPECT_TRUE(g[0].cache);
  EXPECT_EQ(g[0].lo_ctx, 100);
  EXPECT_EQ(g[0].hi_ctx, 400);
  EXPECT_DOUBLE_EQ(g[0].ratio, 2.0);
  EXPECT_DOUBLE_EQ(decode_bytes_per_s(a), 5e7);
  EXPECT_DOUBLE_EQ(roofline_fraction(a, 1e8), 0.5);
  EXPECT_EQ(decode_bytes_per_s(c), 0.0);  // reads without the cache are not modelled
  EXPECT_EQ(roofline_fraction(a, 0), 0.0);
}

TEST(BenchPrefixLib, PercentileIsNearestRank) {
  EXPECT_EQ(percentile_nearest_rank({}, 50), 0.0);
  EXPECT_EQ(percentile_nearest_rank({4, 1, 3, 2}, 50), 2.0);
  EXPECT_EQ(percentile_nearest_rank({4, 1, 3, 2}, 95), 4.0);
  EXPECT_EQ(percentile_nearest_rank({4, 1, 3, 2}, 0), 1.0);
}

TEST(BenchPrefixLib, SharedPromptHitsTheCache) {
  PrefixOptions o;
  o.load_model = demo_loader();
  o.engine.n_threads = 1;
  o.n_shared = 32;
  o.n_suffix = 4;
  o.n_requests = 3;
  auto r = run_prefix(o);
  ASSERT_TRUE(r) << r.status().to_string();
  ASSERT_EQ(r->on.cached.size(), 3u);
  EXPECT_EQ(r->on.cached[0], 0);
  EXPECT_EQ(r->on.cached[2], 32);  // two full blocks of 16
  EXPECT_EQ(r->off.cached[2], 0);
  // (N - 1) * floor(S / B) * B / (N * (S + U)) = 2 * 32 / (3 * 36)
  EXPECT_DOUBLE_EQ(r->hit_rate_optimum, 2.0 * 32 / (3 * 36));
  o.n_requests = 1;
  EXPECT_EQ(run_prefix(o).status().code(), StatusCode::kInvalidArgument);
}

TEST(BenchServeLib, ChecksAndFind) {
  ServeOptions o;
  o.gen_min = 9;
  o.gen_max = 3;
  EXPECT_EQ(check_serve_options(o).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(run_serve(o).status().code(), StatusCode::kInvalidArgument);
  ServeReport rep;
  rep.rows.push_back({"continuous", "recompute", 2});
  rep.rows.push_back({"continuous", "swap", 2});
  EXPECT_EQ(rep.find("continuous", 2), &rep.rows[0]);
  EXPECT_EQ(rep.find("continuous", 2, "swap"), &rep.rows[1]);
  EXPECT_EQ(rep.find("static", 2), nullptr);
}

TEST(BenchServeLib, InProcessRunGeneratesEveryToken) {
  ServeOptions o;
  o.load_model = demo_loader();
  o.clients = {2};
  o.schedulers = {SchedulerKind::kContinuous};
  o.requests_per_client = 2;
  o.prompt_len = 4;
  o.gen_min = o.gen_max = 5;
  o.n_threads = 1;
  auto r = run_serve(o);
  ASSERT_TRUE(r) << r.status().to_string();
  ASSERT_EQ(r->rows.size(), 1u);
  EXPECT_EQ(r->rows[0].tokens, 2 * 2 * 5);
  EXPECT_EQ(r->rows[0].scheduler, "continuous");
}

}  // namespace
}  // namespace kvserve::bench
