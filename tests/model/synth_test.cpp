#include "model/synth.h"

#include <gtest/gtest.h>

#include <set>

#include "model/model.h"
#include "test_util.h"

namespace kvserve {
namespace {

struct Shape {
  const char* preset;
  const char* arch;
  int n_embd, n_ff, n_layer, n_head, n_head_kv, n_vocab, n_ctx;
  float rope_base;
  bool tied, bias;
  int sliding_window;
};

// Published shapes (config.json / params.json of the real models).
const Shape kShapes[] = {
    {"stories15m", "llama", 288, 768, 6, 6, 6, 32000, 256, 10000.0f, true, false, 0},
    {"smollm-135m", "llama", 576, 1536, 30, 9, 3, 49152, 2048, 10000.0f, true, false, 0},
    {"qwen2.5-0.5b", "qwen2", 896, 4864, 24, 14, 2, 151936, 32768, 1000000.0f, true, true, 0},
    {"tinyllama-1.1b", "llama", 2048, 5632, 22, 32, 4, 32000, 2048, 10000.0f, false, false, 0},
    {"mistral-7b", "llama", 4096, 14336, 32, 32, 8, 32000, 32768, 10000.0f, false, false, 4096},
    {"llama-3-8b", "llama", 4096, 14336, 32, 32, 8, 128256, 8192, 500000.0f, false, false, 0},
    {"demo", "llama", 64, 128, 2, 4, 2, 512, 256, 10000.0f, false, false, 0},
};

TEST(SynthTest, PresetsMatchPublishedShapes) {
  EXPECT_EQ(synth_preset_names().size(), std::size(kShapes));
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(s.preset);
    auto r = synth_preset(s.preset);
    ASSERT_TRUE(r.is_ok());
    const ModelConfig& c = *r;
    EXPECT_EQ(c.arch, s.arch);
    EXPECT_EQ(c.name, std::string("kvserve-synth-") + s.preset);
    EXPECT_EQ(c.n_embd, s.n_embd);
    EXPECT_EQ(c.n_ff, s.n_ff);
    EXPECT_EQ(c.n_layer, s.n_layer);
    EXPECT_EQ(c.n_head, s.n_head);
    EXPECT_EQ(c.n_head_kv, s.n_head_kv);
    EXPECT_EQ(c.head_dim, s.n_embd / s.n_head);
    EXPECT_EQ(c.n_vocab, s.n_vocab);
    EXPECT_EQ(c.n_ctx_train, s.n_ctx);
    EXPECT_EQ(c.rope_freq_base, s.rope_base);
    EXPECT_EQ(c.tied_embeddings, s.tied);
    EXPECT_EQ(c.has_qkv_bias, s.bias);
    EXPECT_EQ(c.sliding_window, s.sliding_window);
    EXPECT_EQ(c.rope_style, std::string(s.arch) == "qwen2" ? RopeStyle::kNeox : RopeStyle::kNorm);
  }
  EXPECT_EQ(synth_preset("qwen2.5-0.5b")->rms_eps, 1e-6f);
  EXPECT_FALSE(synth_preset("gpt-5").is_ok());
}

TEST(SynthTest, Deterministic) {
  test::TempDir dir;
  const std::string a = dir.file("a.gguf"), b = dir.file("b.gguf"), c = dir.file("c.gguf");
  ASSERT_TRUE(write_synth_model({"demo", DType::kQ4_0, a, 7}).is_ok());
  ASSERT_TRUE(write_synth_model({"demo", DType::kQ4_0, b, 7}).is_ok());
  ASSERT_TRUE(write_synth_model({"demo", DType::kQ4_0, c, 8}).is_ok());
  const std::vector<uint8_t> ba = test::read_file_bytes(a);
  EXPECT_GT(ba.size(), 50000u);
  EXPECT_EQ(ba, test::read_file_bytes(b));
  EXPECT_NE(ba, test::read_file_bytes(c));
}

TEST(SynthTest, Errors) {
  test::TempDir dir;
  Status st = write_synth_model({"nope", DType::kF32, dir.file("x.gguf"), 0});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("nope"), std::string::npos);
  st = write_synth_model({"demo", DType::kQ4_K, dir.file("x.gguf"), 0});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  st = write_synth_model({"demo", DType::kF32, dir.file("no/such/dir/x.gguf"), 0});
  EXPECT_EQ(st.code(), StatusCode::kIoError);
}

TEST(SynthTest, VocabularyIsUniqueAndOrdered) {
  for (int n : {512, 32000, 151936}) {
    SCOPED_TRACE(n);
    const SynthVocab v = synth_vocab(n);
    ASSERT_EQ(v.tokens.size(), static_cast<size_t>(n));
    ASSERT_EQ(v.scores.size(), v.tokens.size());
    ASSERT_EQ(v.types.size(), v.tokens.size());
    EXPECT_EQ(v.tokens[0], "<unk>");
    EXPECT_EQ(v.types[0], 2);
    EXPECT_EQ(v.tokens[1], "<s>");
    EXPECT_EQ(v.tokens[2], "</s>");
    EXPECT_EQ(v.types[2], 3);
    EXPECT_EQ(v.tokens[3], "<0x00>");
    EXPECT_EQ(v.tokens[258], "<0xFF>");
    EXPECT_EQ(v.types[258], 6);
    EXPECT_EQ(v.tokens[259], "\xe2\x96\x81");
    EXPECT_EQ(v.types[259], 1);
    std::set<std::string> unique(v.tokens.begin(), v.tokens.end());
    EXPECT_EQ(unique.size(), v.tokens.size());
    EXPECT_TRUE(unique.count("\xe2\x96\x81the"));
    for (size_t i = 260; i < v.tokens.size(); ++i) ASSERT_LT(v.scores[i], v.scores[i - 1]);
  }
}

TEST(SynthTest, Stories15mLoads) {
  test::TempDir dir;
  const std::string path = dir.file("stories15m.gguf");
  ASSERT_TRUE(write_synth_model({"stories15m", DType::kQ8_0, path, 0}).is_ok());
  auto m = load_model(path);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ((*m)->config.n_vocab, 32000);
  EXPECT_EQ((*m)->config.n_layer, 6);
  EXPECT_TRUE((*m)->config.tied_embeddings);
  EXPECT_EQ((*m)->output.data, (*m)->tok_embd.data);
  ASSERT_NE((*m)->tokenizer, nullptr);
  EXPECT_EQ((*m)->tokenizer->n_vocab(), 32000);
  // The vocabulary is usable: plain English text round-trips through it.
  const std::string text = "Once upon a time, the little dog was happy.";
  const std::vector<int32_t> ids = (*m)->tokenizer->encode(text, true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  EXPECT_LT(ids.size(), text.size());  // words merge into pieces
  EXPECT_EQ((*m)->tokenizer->decode(std::vector<int32_t>(ids.begin() + 1, ids.end()), 1), text);
}

}  // namespace
}  // namespace kvserve
