#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "engine/generator.h"
#include "kernels/quant.h"
#include "model/gguf.h"
#include "model/llama2c.h"
#include "model/model.h"
#include "model/synth.h"
#include "test_util.h"

namespace kvserve {
namespace {

namespace fs = std::filesystem;

std::string s260(const std::string& f) {
  return test::shared_model_path("stories260K/" + f);
}

std::unique_ptr<Model> must_load(const std::string& path, const LoadOptions& opts = {}) {
  auto m = load_model(path, opts);
  EXPECT_TRUE(m.is_ok()) << m.status().to_string();
  return m.is_ok() ? std::move(m).value() : nullptr;
}

void expect_stories260k_config(const ModelConfig& c) {
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.n_embd, 64);
  EXPECT_EQ(c.n_ff, 172);
  EXPECT_EQ(c.n_layer, 5);
  EXPECT_EQ(c.n_head, 8);
  EXPECT_EQ(c.n_head_kv, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.n_vocab, 512);
  EXPECT_NEAR(c.rms_eps, 1e-5f, 1e-9f);
  EXPECT_EQ(c.rope_freq_base, 10000.0f);
  EXPECT_EQ(c.rope_style, RopeStyle::kNorm);
  EXPECT_EQ(c.rope_scaling, RopeScaling::kNone);
  EXPECT_FALSE(c.has_qkv_bias);
}

std::vector<float> dequant(const TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.n_elements()));
  for (int64_t r = 0; r < t.rows(); ++r) {
    kernels::dequantize_row(t.type, t.row(r), out.data() + r * t.cols(), t.cols());
  }
  return out;
}

void expect_same_shape(const TensorView& a, const TensorView& b) {
  EXPECT_EQ(a.cols(), b.cols()) << a.name;
  EXPECT_EQ(a.rows(), b.rows()) << a.name;
}

void expect_same_bytes(const TensorView& a, const TensorView& b) {
  SCOPED_TRACE(a.name + " vs " + b.name);
  ASSERT_TRUE(a.present() && b.present());
  expect_same_shape(a, b);
  ASSERT_EQ(a.type, DType::kF32);
  ASSERT_EQ(b.type, DType::kF32);
  ASSERT_EQ(a.n_bytes, b.n_bytes);
  EXPECT_EQ(std::memcmp(a.data, b.data, a.n_bytes), 0);
}

// Every weight of two loaded models, pairwise.
std::vector<std::pair<const TensorView*, const TensorView*>> all_weights(const Model& a,
                                                                         const Model& b) {
  std::vector<std::pair<const TensorView*, const TensorView*>> v = {
      {&a.tok_embd, &b.tok_embd}, {&a.output_norm, &b.output_norm}, {&a.output, &b.output}};
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const LayerWeights &x = a.layers[l], &y = b.layers[l];
    for (auto p : {std::pair{&x.attn_norm, &y.attn_norm},
                   {&x.wq, &y.wq},
                   {&x.wk, &y.wk},
                   {&x.wv, &y.wv},
                   {&x.wo, &y.wo},
                   {&x.ffn_norm, &y.ffn_norm},
                   {&x.w_gate, &y.w_gate},
                   {&x.w_up, &y.w_up},
                   {&x.w_down, &y.w_down}}) {
      v.push_back(p);
    }
  }
  return v;
}

TEST(LoaderTest, Stories260KGguf) {
  const std::string path = s260("stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(path);
  auto m = must_load(path);
  ASSERT_NE(m, nullptr);
  expect_stories260k_config(m->config);
  EXPECT_EQ(m->format, "gguf");
  EXPECT_EQ(m->path, path);
  EXPECT_EQ(m->config.n_ctx_train, 2048);   // the file's metadata (trained at 512)
  EXPECT_FALSE(m->config.tied_embeddings);  // the file has its own output.weight
  EXPECT_NE(m->output.data, m->tok_embd.data);
  ASSERT_EQ(m->layers.size(), 5u);
  EXPECT_EQ(m->layers[0].wk.rows(), 32);
  EXPECT_EQ(m->layers[0].w_down.cols(), 172);
  EXPECT_FALSE(m->layers[0].bq.present());
  ASSERT_NE(m->tokenizer, nullptr);
  EXPECT_EQ(m->tokenizer->n_vocab(), 512);
  EXPECT_EQ(m->main_weight_type(), DType::kF32);
  // 2 x embeddings + final norm + per layer (2 norms + q, k, v, o + 3 ffn), all f32.
  const size_t per_layer = 2 * 64 + 64 * 64 * 2 + 32 * 64 * 2 + 172 * 64 * 3;
  EXPECT_EQ(m->weight_bytes(), 4 * (2 * 512 * 64 + 64 + 5 * per_layer));
}

TEST(LoaderTest, Stories260KBinFp32) {
  const std::string path = s260("stories260K.bin");
  KV_REQUIRE_SHARED_FILE(path);
  auto m = must_load(path);
  ASSERT_NE(m, nullptr);
  expect_stories260k_config(m->config);
  EXPECT_EQ(m->format, "llama2c");
  EXPECT_EQ(m->config.n_ctx_train, 512);
  EXPECT_TRUE(m->config.tied_embeddings);  // positive vocab_size: shared classifier
  EXPECT_EQ(m->output.data, m->tok_embd.data);
  ASSERT_NE(m->tokenizer, nullptr);  // tok512.bin beside the model
  EXPECT_EQ(m->tokenizer->n_vocab(), 512);
  EXPECT_EQ(find_llama2c_tokenizer(path), s260("tok512.bin"));
}

TEST(LoaderTest, Fp32BinAndGgufHaveIdenticalWeights) {
  const std::string bin = s260("stories260K.bin"), gguf = s260("stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(bin);
  KV_REQUIRE_SHARED_FILE(gguf);
  auto a = must_load(bin);
  auto b = must_load(gguf);
  ASSERT_TRUE(a && b);
  for (auto [x, y] : all_weights(*a, *b)) expect_same_bytes(*x, *y);
}

TEST(LoaderTest, Stories260KQ80) {
  const std::string q80 = s260("stories260K_q80.bin"), gguf = s260("stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(q80);
  KV_REQUIRE_SHARED_FILE(gguf);
  auto q = must_load(q80);
  auto f = must_load(gguf);
  ASSERT_TRUE(q && f);
  expect_stories260k_config(q->config);
  EXPECT_EQ(q->format, "llama2c");
  EXPECT_TRUE(q->config.tied_embeddings);
  ASSERT_NE(q->tokenizer, nullptr);
  EXPECT_EQ(q->tok_embd.type, DType::kQ8_0);
  EXPECT_EQ(q->layers[0].wq.type, DType::kQ8_0);
  EXPECT_EQ(q->layers[0].w_gate.type, DType::kQ8_0);
  EXPECT_EQ(q->layers[0].w_down.type, DType::kF32);  // 172 columns: groups straddle rows
  EXPECT_EQ(q->layers[0].attn_norm.type, DType::kF32);
  EXPECT_EQ(q->main_weight_type(), DType::kQ8_0);
  for (auto [x, y] : all_weights(*q, *f)) {
    SCOPED_TRACE(x->name);
    expect_same_shape(*x, *y);
    if (x->n_dims == 1) {  // norms stay fp32 and exact
      expect_same_bytes(*x, *y);
      continue;
    }
    const std::vector<float> dq = dequant(*x), ref = dequant(*y);
    float amax = 0, err = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      amax = std::max(amax, std::fabs(ref[i]));
      err = std::max(err, std::fabs(dq[i] - ref[i]));
    }
    // Round to nearest with scale <= amax / 127, plus the fp16 rounding of the scale.
    EXPECT_LE(err, amax / 127.0f * 0.5f + amax * 1e-3f);
    EXPECT_GT(amax, 0.0f);
  }
}

TEST(LoaderTest, TokenizerLookup) {
  const std::string bin = s260("stories260K.bin"), tok = s260("tok512.bin");
  KV_REQUIRE_SHARED_FILE(bin);
  KV_REQUIRE_SHARED_FILE(tok);
  test::TempDir dir;
  const std::string copy = dir.file("model.bin");
  fs::copy_file(bin, copy);
  auto m = must_load(copy);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->tokenizer, nullptr);  // nothing beside it
  EXPECT_EQ(find_llama2c_tokenizer(copy), "");

  LoadOptions opts;
  opts.tokenizer_path = tok;
  m = must_load(copy, opts);
  ASSERT_NE(m, nullptr);
  ASSERT_NE(m->tokenizer, nullptr);

  fs::copy_file(tok, dir.file("tok_custom.bin"));
  EXPECT_EQ(find_llama2c_tokenizer(copy), dir.file("tok_custom.bin"));
  fs::copy_file(tok, dir.file("tokenizer.bin"));
  EXPECT_EQ(find_llama2c_tokenizer(copy), dir.file("tokenizer.bin"));
  m = must_load(copy);
  ASSERT_NE(m, nullptr);
  EXPECT_NE(m->tokenizer, nullptr);

  opts.tokenizer_path = dir.file("missing.bin");
  auto bad = load_model(copy, opts);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("missing.bin"), std::string::npos);
}

// The v0 file with vocab_size negated and a separate classifier appended.
TEST(LoaderTest, Llama2cUnsharedClassifier) {
  const std::string bin = s260("stories260K.bin");
  KV_REQUIRE_SHARED_FILE(bin);
  std::vector<uint8_t> b = test::read_file_bytes(bin);
  const int32_t neg = -512;
  std::memcpy(b.data() + 20, &neg, 4);
  const size_t emb = 512 * 64 * 4;
  std::vector<uint8_t> wcls(b.begin() + 28, b.begin() + 28 + emb);
  std::reverse(wcls.begin(), wcls.end());  // bytes that differ from the embedding
  b.insert(b.end(), wcls.begin(), wcls.end());
  test::TempDir dir;
  test::write_file_bytes(dir.file("unshared.bin"), b);
  auto m = must_load(dir.file("unshared.bin"));
  ASSERT_NE(m, nullptr);
  EXPECT_FALSE(m->config.tied_embeddings);
  EXPECT_EQ(m->config.n_vocab, 512);
  ASSERT_NE(m->output.data, m->tok_embd.data);
  ASSERT_EQ(m->output.n_bytes, emb);
  EXPECT_EQ(std::memcmp(m->output.data, wcls.data(), emb), 0);
}

// A llama2.c v1 (fp32, "ak42") file rebuilt from the v0 one loads with the same weights.
TEST(LoaderTest, Llama2cVersion1) {
  const std::string bin = s260("stories260K.bin");
  KV_REQUIRE_SHARED_FILE(bin);
  auto v0 = must_load(bin);
  ASSERT_NE(v0, nullptr);
  std::vector<uint8_t> b(256, 0);
  const uint32_t magic = kLlama2cMagic;
  const int32_t version = 1;
  std::memcpy(b.data(), &magic, 4);
  std::memcpy(b.data() + 4, &version, 4);
  const std::vector<uint8_t> orig = test::read_file_bytes(bin);
  std::memcpy(b.data() + 8, orig.data(), 28);
  b[36] = 1;  // shared classifier
  auto append = [&](const TensorView& t) {
    const uint8_t* p = static_cast<const uint8_t*>(t.data);
    b.insert(b.end(), p, p + t.n_bytes);
  };
  for (const auto& l : v0->layers) append(l.attn_norm);
  for (const auto& l : v0->layers) append(l.ffn_norm);
  append(v0->output_norm);
  append(v0->tok_embd);
  for (auto get : {&LayerWeights::wq, &LayerWeights::wk, &LayerWeights::wv, &LayerWeights::wo,
                   &LayerWeights::w_gate, &LayerWeights::w_down, &LayerWeights::w_up}) {
    for (const auto& l : v0->layers) append(l.*get);
  }
  test::TempDir dir;
  test::write_file_bytes(dir.file("v1.bin"), b);
  auto v1 = must_load(dir.file("v1.bin"));
  ASSERT_NE(v1, nullptr);
  EXPECT_TRUE(v1->config.tied_embeddings);
  for (auto [x, y] : all_weights(*v0, *v1)) expect_same_bytes(*x, *y);
}

TEST(LoaderTest, SynthDemoEveryDtype) {
  test::TempDir dir;
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0}) {
    SCOPED_TRACE(dtype_name(t));
    const std::string path = dir.file(std::string("demo_") + dtype_name(t) + ".gguf");
    ASSERT_TRUE(write_synth_model({"demo", t, path, 1}).is_ok());
    auto m = must_load(path);
    ASSERT_NE(m, nullptr);
    const ModelConfig want = synth_preset("demo").value();
    EXPECT_EQ(m->config.name, "kvserve-synth-demo");
    EXPECT_EQ(m->config.n_embd, want.n_embd);
    EXPECT_EQ(m->config.n_layer, want.n_layer);
    EXPECT_EQ(m->config.n_head_kv, want.n_head_kv);
    EXPECT_EQ(m->config.n_vocab, want.n_vocab);
    EXPECT_EQ(m->config.tied_embeddings, want.tied_embeddings);
    EXPECT_EQ(m->tok_embd.type, t);
    EXPECT_EQ(m->layers[1].w_down.type, t);
    EXPECT_EQ(m->layers[0].attn_norm.type, DType::kF32);
    EXPECT_EQ(m->main_weight_type(), t);
    ASSERT_NE(m->tokenizer, nullptr);
    EXPECT_EQ(m->tokenizer->n_vocab(), want.n_vocab);
    const std::vector<float> wq = dequant(m->layers[0].wq);
    float amax = 0;
    for (float x : wq) amax = std::max(amax, std::fabs(x));
    EXPECT_GT(amax, 0.01f);
    EXPECT_LT(amax, 0.04f);
    const std::vector<float> norm = dequant(m->layers[0].ffn_norm);
    EXPECT_TRUE(std::all_of(norm.begin(), norm.end(), [](float x) { return x == 1.0f; }));
  }
}

// Weights laid out at load (packed q8_0 / q4_0, the rest moved into huge pages, the file's
// pages dropped) hold the same values and give bitwise the logits of the model as mapped.
TEST(LoaderTest, PrepackedWeightsSameBytesAndLogits) {
  test::TempDir dir;
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0}) {
    SCOPED_TRACE(dtype_name(t));
    const std::string path = dir.file(std::string("pp_") + dtype_name(t) + ".gguf");
    ASSERT_TRUE(write_synth_model({"demo", t, path, 3}).is_ok());
    LoadOptions plain;
    plain.prepack_weights = false;
    auto a = load_model(path, plain);
    auto b = load_model(path);
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    const Model &ma = **a, &mb = **b;
    EXPECT_EQ(mb.packed.size(), 1u);  // one arena for every copy
    auto same = [](const TensorView& x, const TensorView& y) {
      ASSERT_EQ(x.n_bytes, y.n_bytes);
      EXPECT_EQ(std::memcmp(x.data, y.data, x.n_bytes), 0) << x.name;
      EXPECT_EQ(x.packed, nullptr);
    };
    for (size_t l = 0; l < ma.layers.size(); ++l) {
      same(ma.layers[l].wq, mb.layers[l].wq);
      same(ma.layers[l].w_down, mb.layers[l].w_down);
    }
    same(ma.output, mb.output);
    EXPECT_EQ(mb.output.data == mb.tok_embd.data, ma.output.data == ma.tok_embd.data);
    EngineOptions eo;
    eo.n_ctx = 64;
    auto ga = Generator::create(ma, eo);
    auto gb = Generator::create(mb, eo);
    ASSERT_TRUE(ga.is_ok() && gb.is_ok());
    GenerateRequest req;
    req.prompt = {1, 5, 9, 13, 17, 21, 25, 29, 33};
    req.n_predict = 6;
    req.ignore_eos = true;
    req.keep_logits = true;
    auto ra = (*ga)->generate(req);
    auto rb = (*gb)->generate(req);
    ASSERT_TRUE(ra.is_ok() && rb.is_ok());
    EXPECT_EQ(ra->tokens, rb->tokens);
    ASSERT_EQ(ra->logits.size(), rb->logits.size());
    for (size_t i = 0; i < ra->logits.size(); ++i)
      ASSERT_EQ(std::memcmp(ra->logits[i].data(), rb->logits[i].data(), ra->logits[i].size() * 4),
                0)
          << "token " << i;
  }
}

// A tiny model in another architecture, built by hand: qwen2 with biases, llama3 rope scaling.
GgufWriter tiny(const std::string& arch, bool bias, DType bias_type = DType::kF32) {
  const int64_t d = 32, ff = 64, V = 8, kv = 16;
  GgufWriter w;
  const std::string a = arch + ".";
  w.set_string("general.architecture", arch);
  w.set_u32(a + "context_length", 64);
  w.set_u32(a + "embedding_length", d);
  w.set_u32(a + "feed_forward_length", ff);
  w.set_u32(a + "block_count", 1);
  w.set_u32(a + "attention.head_count", 4);
  w.set_u32(a + "attention.head_count_kv", 2);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-6f);
  w.set_f32(a + "rope.freq_base", 1000000.0f);
  w.set_u32(a + "attention.sliding_window", 32);
  w.set_string(a + "rope.scaling.type", "llama3");
  w.set_f32(a + "rope.scaling.factor", 8.0f);
  w.set_u32(a + "rope.scaling.original_context_length", 8192);
  w.set_f32(a + "rope.scaling.low_freq_factor", 1.0f);
  w.set_f32(a + "rope.scaling.high_freq_factor", 4.0f);
  auto f32 = [](int64_t n) { return std::vector<uint8_t>(n * 4, 0); };
  w.add_tensor("token_embd.weight", DType::kF32, {d, V}, f32(d * V));
  w.add_tensor("output_norm.weight", DType::kF32, {d}, f32(d));
  w.add_tensor("blk.0.attn_norm.weight", DType::kF32, {d}, f32(d));
  w.add_tensor("blk.0.attn_q.weight", DType::kF32, {d, d}, f32(d * d));
  w.add_tensor("blk.0.attn_k.weight", DType::kF32, {d, kv}, f32(d * kv));
  w.add_tensor("blk.0.attn_v.weight", DType::kF32, {d, kv}, f32(d * kv));
  if (bias) {
    w.add_tensor("blk.0.attn_q.bias", bias_type, {d},
                 std::vector<uint8_t>(row_bytes(bias_type, d)));
    w.add_tensor("blk.0.attn_k.bias", DType::kF32, {kv}, f32(kv));
    w.add_tensor("blk.0.attn_v.bias", DType::kF32, {kv}, f32(kv));
  }
  w.add_tensor("blk.0.attn_output.weight", DType::kF32, {d, d}, f32(d * d));
  w.add_tensor("blk.0.ffn_norm.weight", DType::kF32, {d}, f32(d));
  w.add_tensor("blk.0.ffn_gate.weight", DType::kF32, {d, ff}, f32(d * ff));
  w.add_tensor("blk.0.ffn_up.weight", DType::kF32, {d, ff}, f32(d * ff));
  w.add_tensor("blk.0.ffn_down.weight", DType::kF32, {ff, d}, f32(d * ff));
  return w;
}

TEST(LoaderTest, Qwen2WithBiasesAndRopeScaling) {
  test::TempDir dir;
  const std::string path = dir.file("qwen2.gguf");
  ASSERT_TRUE(tiny("qwen2", true).write(path).is_ok());
  auto m = must_load(path);
  ASSERT_NE(m, nullptr);
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.arch, "qwen2");
  EXPECT_EQ(c.rope_style, RopeStyle::kNeox);
  EXPECT_TRUE(c.has_qkv_bias);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.kv_dim(), 16);
  EXPECT_EQ(c.sliding_window, 32);
  EXPECT_EQ(c.rope_freq_base, 1000000.0f);
  EXPECT_EQ(c.rope_scaling, RopeScaling::kLlama3);
  EXPECT_EQ(c.rope_scale_factor, 8.0f);
  EXPECT_EQ(c.rope_orig_ctx, 8192);
  EXPECT_EQ(c.rope_high_freq_factor, 4.0f);
  EXPECT_TRUE(m->layers[0].bq.present());
  EXPECT_EQ(m->layers[0].bk.n_bytes, 16u * 4);
  EXPECT_TRUE(m->layers[0].bv.present());
}

TEST(LoaderTest, MistralArchIsLlama) {
  test::TempDir dir;
  const std::string path = dir.file("mistral.gguf");
  ASSERT_TRUE(tiny("mistral", false).write(path).is_ok());
  auto m = must_load(path);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->config.rope_style, RopeStyle::kNorm);
  EXPECT_FALSE(m->config.has_qkv_bias);
  EXPECT_FALSE(m->layers[0].bq.present());
}

TEST(LoaderTest, RejectsUnsupportedArchAndBiasType) {
  test::TempDir dir;
  const std::string phi = dir.file("phi.gguf");
  ASSERT_TRUE(tiny("phi3", false).write(phi).is_ok());
  auto m = load_model(phi);
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(m.status().message().find("phi3"), std::string::npos);

  const std::string f16bias = dir.file("f16bias.gguf");
  ASSERT_TRUE(tiny("qwen2", true, DType::kF16).write(f16bias).is_ok());
  m = load_model(f16bias);
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(m.status().message().find("blk.0.attn_q.bias"), std::string::npos);

  GgufWriter yarn = tiny("llama", false);
  yarn.set_string("llama.rope.scaling.type", "yarn");
  const std::string yarn_path = dir.file("yarn.gguf");
  ASSERT_TRUE(yarn.write(yarn_path).is_ok());
  m = load_model(yarn_path);
  ASSERT_FALSE(m.is_ok());
  EXPECT_NE(m.status().message().find("yarn"), std::string::npos);
}

TEST(LoaderTest, MissingFileIsNotFound) {
  auto m = load_model("/nonexistent/model.gguf");
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("/nonexistent/model.gguf"), std::string::npos);
}

}  // namespace
}  // namespace kvserve
