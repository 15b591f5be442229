// Generator::score: teacher-forced logits through the decode path equal generation's (bitwise
// for unquantized KV), errors are clear and leak nothing, and the quality measures built on it
// (perplexity, KL) separate lossless-ish from lossy KV types on real weights.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "engine/generator.h"
#include "kv/kv_type.h"
#include "test_models.h"
#include "test_util.h"

namespace kvserve {
namespace {

std::string stories_gguf() {
  return test::shared_model_path("stories260K/stories260K.gguf");
}

EngineOptions options(KvType k, KvType v, int block_size = 16) {
  EngineOptions eo;
  eo.kv_type_k = k;
  eo.kv_type_v = v;
  eo.block_size = block_size;
  eo.n_threads = 2;
  eo.prefix_cache = false;
  return eo;
}

// Greedy prompt + generated tokens: score() sees at each step exactly the logits generate()
// sampled from.
void expect_score_equals_generate(const Model& m, KvType kv, int block_size) {
  auto g = Generator::create(m, options(kv, kv, block_size));
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  GenerateRequest req;
  req.prompt = m.tokenizer->encode("Once upon a time", true);
  req.n_predict = 40;
  req.ignore_eos = true;
  req.keep_logits = true;
  req.sampling.temperature = 0;
  auto r = (*g)->generate(req);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->logits.size(), 40u);

  std::vector<int32_t> all = req.prompt;
  all.insert(all.end(), r->tokens.begin(), r->tokens.end());
  const int n_vocab = m.config.n_vocab;
  const int first = static_cast<int>(req.prompt.size()) - 1;
  int n_called = 0, n_compared = 0;
  Status st = (*g)->score(all, [&](int pos, const float* lg) {
    EXPECT_EQ(pos, n_called);
    ++n_called;
    if (pos < first) return;
    const std::vector<float>& want = r->logits[pos - first];
    for (int i = 0; i < n_vocab; ++i) {
      if (lg[i] != want[i]) {
        ADD_FAILURE() << "pos " << pos << " logit " << i << ": " << lg[i] << " vs " << want[i];
        return;
      }
    }
    ++n_compared;
  });
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  EXPECT_EQ(n_called, static_cast<int>(all.size()) - 1);
  EXPECT_EQ(n_compared, 40);
  EXPECT_EQ((*g)->kv().pool().n_blocks_used(), 0);
  EXPECT_EQ((*g)->kv().n_blocks_used_peak(),
            static_cast<int>((all.size() - 1 + block_size - 1) / block_size));
}

TEST(Score, EqualsGenerateLogitsBitwiseF32Kv) {
  KV_REQUIRE_SHARED_FILE(stories_gguf());
  const Model* m = test::load_model_once(stories_gguf());
  ASSERT_NE(m, nullptr);
  expect_score_equals_generate(*m, KvType::kF32, 16);
  expect_score_equals_generate(*m, KvType::kF32, 5);
}

TEST(Score, EqualsGenerateLogitsBitwiseF16Kv) {
  KV_REQUIRE_SHARED_FILE(stories_gguf());
  const Model* m = test::load_model_once(stories_gguf());
  ASSERT_NE(m, nullptr);
  expect_score_equals_generate(*m, KvType::kF16, 16);
}

TEST(Score, BadTokensAreInvalidArgumentsAndLeakNothing) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  EngineOptions eo = options(KvType::kF32, KvType::kF32);
  eo.n_ctx = 32;
  auto g = Generator::create(*m, eo);
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  int calls = 0;
  auto count = [&](int, const float*) { ++calls; };
  const int32_t n_vocab = m->config.n_vocab;
  for (const std::vector<int32_t>& bad :
       {std::vector<int32_t>{}, std::vector<int32_t>{1}, std::vector<int32_t>{1, 5, n_vocab},
        std::vector<int32_t>{1, -1, 5}, std::vector<int32_t>(33, 5)}) {
    Status st = (*g)->score(bad, count);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad.size() << ": " << st.to_string();
  }
  EXPECT_EQ(calls, 0);
  EXPECT_EQ((*g)->kv().pool().n_blocks_used(), 0);
  // The context itself is fine: 32 tokens, 31 predictions.
  ASSERT_TRUE((*g)->score(std::vector<int32_t>(32, 5), count).is_ok());
  EXPECT_EQ(calls, 31);
  EXPECT_EQ((*g)->kv().pool().n_blocks_used(), 0);
}

TEST(Score, OutOfBlocksIsAnErrorAndLeaksNothing) {
  const Model* m = test::synth_demo_model();
  ASSERT_NE(m, nullptr);
  EngineOptions eo = options(KvType::kF16, KvType::kF16, 4);
  eo.kv_blocks = 2;  // 8 tokens
  auto g = Generator::create(*m, eo);
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  int calls = 0;
  Status st = (*g)->score(std::vector<int32_t>(20, 7), [&](int, const float*) { ++calls; });
  EXPECT_EQ(st.code(), StatusCode::kOutOfMemory) << st.to_string();
  EXPECT_EQ(calls, 8);  // positions 0..7 fit
  EXPECT_EQ((*g)->kv().pool().n_blocks_used(), 0);
}

// A window policy sees everything until the window fills, so its first logits are full KV's;
// then it differs, and its memory stays bounded while the full run's grows.
TEST(Score, WindowPolicyEqualsFullUntilTheWindowFillsThenStaysBounded) {
  KV_REQUIRE_SHARED_FILE(stories_gguf());
  const Model* m = test::load_model_once(stories_gguf());
  ASSERT_NE(m, nullptr);
  std::vector<int32_t> tokens = {1};
  for (int i = 0; i < 319; ++i) tokens.push_back(3 + (i * 37) % 500);  // 20x the window
  const int n_vocab = m->config.n_vocab;
  const int window = 16;
  auto full = Generator::create(*m, options(KvType::kF16, KvType::kF16, 4));
  ASSERT_TRUE(full.is_ok());
  std::vector<std::vector<float>> ref;
  ASSERT_TRUE((*full)
                  ->score(tokens, [&](int, const float* lg) { ref.emplace_back(lg, lg + n_vocab); })
                  .is_ok());
  EngineOptions eo = options(KvType::kF16, KvType::kF16, 4);
  eo.kv_policy = WindowKv{window, 0};
  auto win = Generator::create(*m, eo);
  ASSERT_TRUE(win.is_ok()) << win.status().to_string();
  int n_same = 0, n_differ = 0;
  ASSERT_TRUE((*win)
                  ->score(tokens,
                          [&](int pos, const float* lg) {
                            const bool same = std::equal(lg, lg + n_vocab, ref[pos].begin());
                            if (pos < window) {
                              EXPECT_TRUE(same) << pos;
                              n_same += same;
                            } else {
                              n_differ += !same;
                            }
                          })
                  .is_ok());
  EXPECT_EQ(n_same, window);
  EXPECT_GT(n_differ, 250);
  EXPECT_EQ((*full)->kv().n_blocks_used_peak(), 80);  // 319 positions written, blocks of 4
  EXPECT_LE((*win)->kv().n_blocks_used_peak(), window / 4 + 2);
  EXPECT_EQ((*win)->kv().pool().n_blocks_used(), 0);
}

// Perplexity and mean KL(p_ref || p) of `tokens` under k/v against f32 KV.
struct Quality {
  double ppl, ref_ppl, kl;
};

double log_sum_exp(const float* x, int n) {
  double mx = x[0];
  for (int i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(x[i]));
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp(x[i] - mx);
  return mx + std::log(s);
}

Quality measure(const Model& m, const std::vector<int32_t>& tokens, KvType kv, int block_size) {
  const int n_vocab = m.config.n_vocab;
  std::vector<std::vector<float>> ref;
  auto gr = Generator::create(m, options(KvType::kF32, KvType::kF32));
  EXPECT_TRUE(gr.is_ok());
  double ref_nll = 0, nll = 0, kl = 0;
  EXPECT_TRUE((*gr)
                  ->score(tokens,
                          [&](int pos, const float* lg) {
                            ref.emplace_back(lg, lg + n_vocab);
                            ref_nll += log_sum_exp(lg, n_vocab) - lg[tokens[pos + 1]];
                          })
                  .is_ok());
  auto g = Generator::create(m, options(kv, kv, block_size));
  EXPECT_TRUE(g.is_ok()) << g.status().to_string();
  EXPECT_TRUE((*g)->score(tokens,
                          [&](int pos, const float* lg) {
                            const double lse = log_sum_exp(lg, n_vocab);
                            const double ref_lse = log_sum_exp(ref[pos].data(), n_vocab);
                            nll += lse - lg[tokens[pos + 1]];
                            for (int i = 0; i < n_vocab; ++i) {
                              const double lp_ref = ref[pos][i] - ref_lse;
                              kl += std::exp(lp_ref) * (lp_ref - (lg[i] - lse));
                            }
                          })
                  .is_ok());
  const double n = static_cast<double>(tokens.size() - 1);
  return {std::exp(nll / n), std::exp(ref_nll / n), kl / n};
}

TEST(Score, F16PerplexityCloseToF32AndQ4Diverges) {
  KV_REQUIRE_SHARED_FILE(stories_gguf());
  const Model* m = test::load_model_once(stories_gguf());
  ASSERT_NE(m, nullptr);
  std::ifstream in(std::string(KVSERVE_SOURCE_DIR) + "/bench/data/kv_quality.txt");
  std::stringstream ss;
  ss << in.rdbuf();
  ASSERT_GT(ss.str().size(), 1000u);
  std::vector<int32_t> tokens = m->tokenizer->encode(ss.str(), true);
  tokens.resize(256);

  const Quality f16 = measure(*m, tokens, KvType::kF16, 16);
  EXPECT_GT(f16.ref_ppl, 1.0);
  EXPECT_LT(f16.ref_ppl, 30.0);  // a story model on a story: far below the vocab of 512
  EXPECT_LT(std::abs(f16.ppl / f16.ref_ppl - 1), 0.01);
  const Quality q4 = measure(*m, tokens, KvType::kQ4, 32);
  EXPECT_GT(q4.kl, 0.0);
  EXPECT_GT(q4.kl, f16.kl);
  EXPECT_NE(q4.ppl, q4.ref_ppl);
}

}  // namespace
}  // namespace kvserve
