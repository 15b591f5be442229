// The batching engine's contract, without HTTP: many concurrent greedy requests get exactly the
// tokens each gets alone (Generator), also when a tiny KV cache forces preemption and
// recomputation; every block is free afterwards; a step never exceeds its token budget and
// never leaves a decoding sequence out for a prefill chunk.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <map>

#include "engine/engine_loop.h"
#include "engine/generator.h"
#include "model/synth.h"
#include "test_models.h"
#include "test_util.h"

namespace kvserve {
namespace {

struct Outcome {
  std::vector<int32_t> tokens;
  std::string text, finish_reason;
};

// Reads a request's channel until every sequence has finished.
std::vector<Outcome> collect(Request& req) {
  std::vector<Outcome> out(req.seqs.size());
  size_t n_done = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (n_done < out.size()) {
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "request did not finish";
      break;
    }
    for (SeqEvent& e : req.channel->wait(std::chrono::milliseconds(100))) {
      Outcome& o = out[e.index];
      o.tokens.insert(o.tokens.end(), e.tokens.begin(), e.tokens.end());
      o.text += e.text;
      if (e.finished) {
        o.finish_reason = e.finish_reason;
        ++n_done;
      }
    }
  }
  return out;
}

std::vector<std::vector<int32_t>> make_prompts(const Model& m, int n, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < n; ++i) {
    const int len = 1 + static_cast<int>(rng.next() % 60);
    std::vector<int32_t> p;
    for (int j = 0; j < len; ++j)
      p.push_back(3 + static_cast<int32_t>(rng.next() % (m.config.n_vocab - 3)));
    prompts.push_back(p);
  }
  return prompts;
}

std::vector<int32_t> reference(const Model& m, const std::vector<int32_t>& prompt, int n,
                               const SamplingParams& sp = {}, const KvPolicy& policy = FullKv{}) {
  EngineOptions eo;
  eo.kv_policy = policy;
  eo.n_ctx = 256;
  eo.kv_type_k = eo.kv_type_v = KvType::kF32;
  eo.n_threads = 2;
  auto gen = Generator::create(m, eo);
  EXPECT_TRUE(gen.is_ok());
  GenerateRequest req;
  req.prompt = prompt;
  req.n_predict = n;
  req.sampling = sp;
  auto r = (*gen)->generate(req);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r->tokens;
}

struct RunStats {
  int64_t preemptions = 0, swapped = 0;
  int blocks_used_after = -1;
};

// The engine the equality tests run: room for prompts and outputs, f32 KV (the reference
// generator's), two threads.
void use_test_engine(EngineLoopOptions& o) {
  o.engine.n_ctx = 256;
  o.engine.kv_type_k = o.engine.kv_type_v = KvType::kF32;
  o.engine.n_threads = 2;
}

// Submits every prompt at once (one request each) and returns the outcomes in order.
std::vector<Outcome> run_engine(const Model& m, const std::vector<std::vector<int32_t>>& prompts,
                                const std::vector<int>& n_gen, EngineLoopOptions o,
                                RunStats* stats = nullptr) {
  use_test_engine(o);
  o.max_queue = 1000;
  auto loop = EngineLoop::create(m, o);
  EXPECT_TRUE(loop.is_ok()) << loop.status().to_string();
  std::vector<std::shared_ptr<Request>> reqs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto r = std::make_shared<Request>();
    SeqSpec s;
    s.prompt = prompts[i];
    s.max_tokens = n_gen[i];
    r->seqs.push_back(s);
    Status st = (*loop)->submit(r);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    reqs.push_back(r);
  }
  std::vector<Outcome> out;
  for (auto& r : reqs) out.push_back(collect(*r)[0]);
  // The loop updates its stats after the step that finished the last sequence.
  for (int i = 0; i < 100 && (*loop)->stats().kv_blocks_used.load() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (stats) {
    stats->preemptions = (*loop)->stats().preemptions_total.load();
    stats->swapped = (*loop)->stats().swapped_out_total.load();
    stats->blocks_used_after = (*loop)->stats().kv_blocks_used.load();
  }
  return out;
}

void expect_batch_invariant(const Model& m, EngineLoopOptions o, bool expect_preemption) {
  const int n = 32;
  auto prompts = make_prompts(m, n, 99);
  std::vector<int> n_gen;
  for (int i = 0; i < n; ++i) n_gen.push_back(4 + (i * 7) % 37);
  RunStats st;
  auto got = run_engine(m, prompts, n_gen, o, &st);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(got[i].tokens, reference(m, prompts[i], n_gen[i], {}, o.engine.kv_policy))
        << "request " << i;
  }
  EXPECT_EQ(st.blocks_used_after, 0);
  if (expect_preemption) {
    EXPECT_GT(st.preemptions, 0);
    // Swap mode swaps (the demo's K/V fit the default swap space); recompute mode never does.
    if (o.sched.preemption == PreemptionMode::kSwap) {
      EXPECT_GT(st.swapped, 0);
    } else {
      EXPECT_EQ(st.swapped, 0);
    }
  }
}

TEST(SchedulerEngine, BatchInvarianceDemo) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  EngineLoopOptions o;
  o.sched.max_batch_tokens = 64;  // forces chunked prefill
  o.sched.max_seqs = 16;
  expect_batch_invariant(*m, o, false);
}

TEST(SchedulerEngine, BatchInvarianceStories260K) {
  const std::string path = test::shared_model_path("stories260K/stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(path);
  const Model* m = test::load_model_once(path);
  ASSERT_NE(m, nullptr);
  EngineLoopOptions o;
  o.sched.max_batch_tokens = 48;
  o.sched.max_seqs = 32;
  expect_batch_invariant(*m, o, false);
}

// 160 tokens of KV for 32 sequences of up to 100: constant preemption.
EngineLoopOptions tiny_cache(PreemptionMode mode) {
  EngineLoopOptions o;
  o.engine.block_size = 4;
  o.engine.kv_blocks = 40;
  o.sched.max_batch_tokens = 64;
  o.sched.max_seqs = 16;
  o.sched.preemption = mode;
  return o;
}

TEST(SchedulerEngine, PreemptionGivesTheSameTokens) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  expect_batch_invariant(*m, tiny_cache(PreemptionMode::kRecompute), true);
}

TEST(SchedulerEngine, SwapPreemptionGivesTheSameTokens) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  expect_batch_invariant(*m, tiny_cache(PreemptionMode::kSwap), true);
}

// Sliding window with sinks in the batching engine: each sequence's tokens equal a lone run's,
// blocks outside the windows are released as sequences move on, and nothing leaks.
TEST(SchedulerEngine, WindowWithSinksGivesTheSameTokens) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  EngineLoopOptions o;
  o.engine.block_size = 4;
  o.engine.kv_policy = WindowKv{20, 4};
  o.sched.max_batch_tokens = 64;
  o.sched.max_seqs = 16;
  expect_batch_invariant(*m, o, false);
}

TEST(SchedulerEngine, StaticSchedulersGiveTheSameTokens) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  for (SchedulerKind k : {SchedulerKind::kStatic, SchedulerKind::kStaticShrink}) {
    SCOPED_TRACE(scheduler_kind_name(k));
    EngineLoopOptions o;
    o.sched.kind = k;
    o.sched.max_seqs = 8;
    expect_batch_invariant(*m, o, false);
  }
}

// Request-level (static) batching computes a finished row until its batch's longest sequence
// ends; static-shrink and continuous drop it. Two prompts of 5 tokens, outputs of 3 and 160:
// one prefill step of 10 tokens, then 159 decode steps of 2 rows (static) or 2 + 157 of 1.
TEST(SchedulerEngine, StaticBatchKeepsFinishedRowsComputing) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  const auto prompts = make_prompts(*m, 20, 5);
  std::vector<std::vector<int32_t>> two;
  for (const auto& p : prompts)
    if (p.size() >= 5 && two.size() < 2) two.emplace_back(p.begin(), p.begin() + 5);
  ASSERT_EQ(two.size(), 2u);
  const int n_gen[2] = {3, 160};
  // {kind, KV blocks, tokens through the forward pass}. With 16 blocks the padding row runs
  // out of room first and is dropped (not preempted), so fewer than 328 go through.
  struct Case {
    SchedulerKind kind;
    int kv_blocks;
    int min_tokens, max_tokens;
  };
  for (const Case& c : {Case{SchedulerKind::kStatic, 64, 328, 328},
                        Case{SchedulerKind::kStaticShrink, 64, 171, 171},
                        Case{SchedulerKind::kContinuous, 64, 171, 171},
                        Case{SchedulerKind::kStatic, 16, 172, 327}}) {
    const SchedulerKind kind = c.kind;
    SCOPED_TRACE(std::string(scheduler_kind_name(kind)) + ", " + std::to_string(c.kv_blocks) +
                 " blocks");
    EngineLoopOptions o;
    use_test_engine(o);
    o.sched.kind = kind;
    o.sched.max_seqs = 2;
    o.sched.static_wait_ms = 10000;  // the batch forms when both are queued
    o.engine.kv_blocks = c.kv_blocks;
    auto loop = EngineLoop::create(*m, o);
    ASSERT_TRUE(loop.is_ok());
    std::vector<std::shared_ptr<Request>> reqs;
    for (int i = 0; i < 2; ++i) {
      auto r = std::make_shared<Request>();
      SeqSpec s;
      s.prompt = two[i];
      s.max_tokens = n_gen[i];
      s.ignore_eos = true;
      r->seqs.push_back(s);
      reqs.push_back(r);
    }
    for (auto& r : reqs) ASSERT_TRUE((*loop)->submit(r).is_ok());
    for (int i = 0; i < 2; ++i) {
      auto out = collect(*reqs[i]);
      if (i == 0) {
        // Two steps after the short one was answered (the long one has 150 to go), only the
        // long one counts as running: a padding row is not a request.
        const int64_t s0 = (*loop)->stats().steps_total.load();
        for (int k = 0; k < 1000 && (*loop)->stats().steps_total.load() < s0 + 2; ++k)
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        EXPECT_LE((*loop)->stats().seqs_running.load(), 1);
      }
      EXPECT_EQ(out[0].tokens, reference(*m, two[i], n_gen[i])) << i;
      EXPECT_EQ(out[0].finish_reason, "length");
    }
    EXPECT_GE((*loop)->stats().batch_tokens_total.load(), c.min_tokens);
    EXPECT_LE((*loop)->stats().batch_tokens_total.load(), c.max_tokens);
    EXPECT_EQ((*loop)->stats().generated_tokens_total.load(), 163);
    EXPECT_EQ((*loop)->stats().preemptions_total.load(), 0);
    // Padding rows are freed when their batch ends.
    for (int i = 0; i < 100 && (*loop)->stats().kv_blocks_used.load() != 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ((*loop)->stats().kv_blocks_used.load(), 0);
  }
}

// n samples of one prompt in one request (as the server sends n > 1): sampling `sp` with seeds
// seed0, seed0 + 1, ...
std::shared_ptr<Request> samples_of(const std::vector<int32_t>& prompt, int n, int max_tokens,
                                    SamplingParams sp, uint64_t seed0) {
  auto req = std::make_shared<Request>();
  for (int i = 0; i < n; ++i) {
    SeqSpec s;
    s.prompt = prompt;
    s.max_tokens = max_tokens;
    s.sampling = sp;
    s.sampling.seed = seed0 + i;
    s.index = i;
    req->seqs.push_back(s);
  }
  return req;
}

// Each sample of `req` equals a lone generator run with its seed.
void expect_samples_match_generator(const Model& m, Request& req) {
  auto got = collect(req);
  for (size_t i = 0; i < req.seqs.size(); ++i) {
    const SeqSpec& s = req.seqs[i];
    EXPECT_EQ(got[i].tokens, reference(m, s.prompt, s.max_tokens, s.sampling)) << i;
  }
}

TEST(SchedulerEngine, SeededSamplingMatchesGenerator) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  EngineLoopOptions o;
  use_test_engine(o);
  auto loop = EngineLoop::create(*m, o);
  ASSERT_TRUE(loop.is_ok());
  SamplingParams sp;
  sp.temperature = 0.9f;
  sp.top_p = 0.95f;
  auto req = samples_of(make_prompts(*m, 1, 5)[0], 3, 12, sp, 10);  // n = 3: seeds 10, 11, 12
  ASSERT_TRUE((*loop)->submit(req).is_ok());
  expect_samples_match_generator(*m, *req);
}

// A model slow enough (stories15m shape, ~1 ms per token) that a long request is still running
// when the test cancels it.
const Model* slow_model() {
  return test::load_model_once(test::synth_model_path("stories15m", DType::kQ8_0));
}

// n > 1 samples of one prompt: the first computes the prompt, the others start from its cached
// blocks (shared, copy-on-write) and compute only the last partial block; outputs equal lone runs.
TEST(SchedulerEngine, SamplesOfOnePromptShareItsBlocks) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  EngineLoopOptions o;
  use_test_engine(o);
  auto loop = EngineLoop::create(*m, o);
  ASSERT_TRUE(loop.is_ok());
  std::vector<int32_t> prompt;
  for (int i = 0; i < 70; ++i) prompt.push_back(3 + (i * 13) % 400);
  SamplingParams sp;
  sp.temperature = 0.8f;
  auto req = samples_of(prompt, 4, 10, sp, 40);
  ASSERT_TRUE((*loop)->submit(req).is_ok());
  expect_samples_match_generator(*m, *req);
  // The three siblings were forked from the leader's whole prompt (70 tokens, the partial last
  // block too): the forward passes computed the prompt once, then 9 decode tokens per sample.
  for (int i = 0; i < 100 && (*loop)->stats().kv_blocks_used.load() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ((*loop)->stats().batch_tokens_total.load(), 70 + 4 * 9);
  EXPECT_EQ((*loop)->stats().prefix_cache_hits_total.load(), 0);  // nothing to look up
  EXPECT_EQ((*loop)->stats().kv_blocks_used.load(), 0);
}

TEST(SchedulerEngine, CancellationFreesBlocks) {
  const Model* m = slow_model();
  ASSERT_NE(m, nullptr);
  EngineLoopOptions o;
  o.engine.n_ctx = 1100;
  o.engine.n_threads = 1;
  auto loop = EngineLoop::create(*m, o);
  ASSERT_TRUE(loop.is_ok());
  auto req = std::make_shared<Request>();
  SeqSpec s;
  s.prompt = make_prompts(*m, 1, 3)[0];
  s.max_tokens = 1000;
  s.ignore_eos = true;
  req->seqs.push_back(s);
  ASSERT_TRUE((*loop)->submit(req).is_ok());
  auto first = req->channel->wait(std::chrono::milliseconds(5000));  // the first tokens
  ASSERT_FALSE(first.empty());
  ASSERT_FALSE(first.back().finished);
  (*loop)->cancel(req);
  auto got = collect(*req);
  EXPECT_EQ(got[0].finish_reason, "cancelled");
  EXPECT_LT(got[0].tokens.size() + first.size(), 1000u);
  for (int i = 0; i < 100 && (*loop)->stats().kv_blocks_used.load() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ((*loop)->stats().kv_blocks_used.load(), 0);
  EXPECT_EQ((*loop)->n_in_flight(), 0);
}

TEST(SchedulerEngine, RejectsBadRequestsAndFullQueue) {
  const Model* m = slow_model();
  ASSERT_NE(m, nullptr);
  EngineLoopOptions o;
  o.engine.n_ctx = 2048;
  o.engine.n_threads = 1;
  o.sched.max_seqs = 1;
  o.max_queue = 0;
  auto loop = EngineLoop::create(*m, o);
  ASSERT_TRUE(loop.is_ok());
  auto bad = std::make_shared<Request>();
  bad->seqs.push_back(SeqSpec{});
  EXPECT_EQ((*loop)->submit(bad).code(), StatusCode::kInvalidArgument);  // empty prompt
  bad->seqs[0].prompt.assign(2049, 5);
  EXPECT_EQ((*loop)->submit(bad).code(), StatusCode::kInvalidArgument);  // over the context
  // a runs for about 2 s on the slow model (until cancelled), so the queue is surely full while
  // it does, however this thread is scheduled.
  auto a = std::make_shared<Request>();
  SeqSpec s;
  s.prompt = {5, 6, 7};
  s.max_tokens = 2000;
  s.ignore_eos = true;
  a->seqs.push_back(s);
  ASSERT_TRUE((*loop)->submit(a).is_ok());
  auto b = std::make_shared<Request>();
  s.max_tokens = 5;
  b->seqs.push_back(s);
  EXPECT_EQ((*loop)->submit(b).code(), StatusCode::kOutOfMemory);  // queue full
  (*loop)->cancel(a);
  EXPECT_EQ(collect(*a)[0].finish_reason, "cancelled");
  EXPECT_TRUE((*loop)->submit(b).is_ok());
  EXPECT_EQ(collect(*b)[0].finish_reason, "length");
}

// Scheduler alone (no model): budgets and chunking.
// One layer, one kv head of 4 dims, blocks of 4 tokens: a cache with no model behind it.
KvLayout tiny_layout() {
  return {.n_layer = 1,
          .n_head_kv = 1,
          .head_dim = 4,
          .block_size = 4,
          .k_type = KvType::kF32,
          .v_type = KvType::kF32};
}

TEST(Scheduler, ChunkedPrefillRespectsBudgetAndKeepsDecodes) {
  const KvLayout layout = tiny_layout();
  auto kv = KvCacheManager::create(layout, 1000);
  ASSERT_TRUE(kv.is_ok());
  SchedulerOptions so;
  so.max_batch_tokens = 32;
  so.max_seqs = 4;
  Scheduler sched(**kv, so);
  auto req = std::make_shared<Request>();
  for (int i = 0; i < 3; ++i) {
    SeqSpec s;
    s.prompt.assign(i == 0 ? 5 : 100, 7);
    s.max_tokens = 100;
    req->seqs.push_back(s);
  }
  for (int i = 0; i < 3; ++i) sched.add(std::make_unique<Sequence>(i, req, &req->seqs[i]));

  int steps = 0;
  while (steps < 20) {
    auto plan = sched.schedule();
    ASSERT_FALSE(plan.empty());
    int total = 0;
    for (auto& c : plan) total += c.n_tokens;
    EXPECT_LE(total, so.max_batch_tokens);
    sched.commit(plan);
    // Sequence 0 decodes from the second step on: it is in every plan, with one token.
    bool seq0 = false;
    for (auto& c : plan) {
      if (c.samples()) c.seq->tokens.push_back(9);  // pretend to sample
      if (c.seq->id == 0) {
        seq0 = true;
        if (steps > 0) {
          EXPECT_EQ(c.n_tokens, 1);
        }
      }
    }
    EXPECT_TRUE(seq0) << "step " << steps;
    ++steps;
  }
  for (Sequence* s : sched.all()) sched.finish(s);
  EXPECT_EQ((*kv)->pool().n_blocks_used(), 0);
}

TEST(Scheduler, AdmissionWaitsForBlocks) {
  const KvLayout layout = tiny_layout();
  auto kv = KvCacheManager::create(layout, 10);  // 40 tokens
  ASSERT_TRUE(kv.is_ok());
  SchedulerOptions so;
  Scheduler sched(**kv, so);
  auto req = std::make_shared<Request>();
  for (int i = 0; i < 2; ++i) {
    SeqSpec s;
    s.prompt.assign(24, 7);  // 6 blocks each: both cannot be admitted
    req->seqs.push_back(s);
  }
  for (int i = 0; i < 2; ++i) sched.add(std::make_unique<Sequence>(i, req, &req->seqs[i]));
  auto plan = sched.schedule();
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(sched.n_running(), 1);
  EXPECT_EQ(sched.n_waiting(), 1);
  sched.finish(plan[0].seq);
  plan = sched.schedule();
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].seq->id, 1);
}

}  // namespace
}  // namespace kvserve
