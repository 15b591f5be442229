#include "model/gguf.h"

#include <gtest/gtest.h>

#include <cstring>

#include "model/model.h"
#include "test_util.h"

namespace kvserve {
namespace {

using test::TempDir;

GgufValue scalar(GgufType t, int64_t i = 0, double f = 0, bool b = false, std::string s = "") {
  GgufValue v;
  v.type = t;
  v.i = i;
  v.f = f;
  v.b = b;
  v.s = std::move(s);
  return v;
}

GgufValue int_array(GgufType elem, std::vector<int64_t> xs) {
  GgufValue v;
  v.type = GgufType::kArray;
  v.elem_type = elem;
  v.ints = std::move(xs);
  return v;
}

GgufValue float_array(GgufType elem, std::vector<double> xs) {
  GgufValue v;
  v.type = GgufType::kArray;
  v.elem_type = elem;
  v.floats = std::move(xs);
  return v;
}

std::vector<uint8_t> pattern_bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 7);
  return b;
}

void set_every_value_type(GgufWriter& w) {
  w.set_value("t.u8", scalar(GgufType::kUint8, 200));
  w.set_value("t.i8", scalar(GgufType::kInt8, -100));
  w.set_value("t.u16", scalar(GgufType::kUint16, 60000));
  w.set_value("t.i16", scalar(GgufType::kInt16, -30000));
  w.set_u32("t.u32", 4000000000u);
  w.set_i32("t.i32", -2000000000);
  w.set_u64("t.u64", (uint64_t{1} << 63) + 5);
  w.set_value("t.i64", scalar(GgufType::kInt64, -5000000000000000000ll));
  w.set_f32("t.f32", 1.5f);
  w.set_value("t.f64", scalar(GgufType::kFloat64, 0, 1e-300));
  w.set_bool("t.bool", true);
  w.set_value("t.bool_false", scalar(GgufType::kBool, 0, 0, false));
  w.set_string("t.str", "h\xc3\xa9llo \xe2\x96\x81world");
  w.set_string("t.empty_str", "");
  w.set_value("a.u8", int_array(GgufType::kUint8, {0, 255}));
  w.set_value("a.i8", int_array(GgufType::kInt8, {-128, 127}));
  w.set_value("a.u16", int_array(GgufType::kUint16, {0, 65535}));
  w.set_value("a.i16", int_array(GgufType::kInt16, {-32768, 32767}));
  w.set_value("a.u32", int_array(GgufType::kUint32, {0, 4294967295ll}));
  w.set_i32_array("a.i32", {-2147483647 - 1, 2147483647});
  w.set_value("a.u64", int_array(GgufType::kUint64, {0, 1ll << 62}));
  w.set_value("a.i64", int_array(GgufType::kInt64, {-(1ll << 62), 1ll << 62}));
  w.set_f32_array("a.f32", {0.25f, -3.0f});
  w.set_value("a.f64", float_array(GgufType::kFloat64, {1e300, -1e-300}));
  w.set_value("a.bool", int_array(GgufType::kBool, {1, 0, 1}));
  w.set_string_array("a.str", {"a", "", "\xe2\x96\x81the"});
  w.set_f32_array("a.empty", {});
}

void check_every_value_type(const GgufFile& g) {
  EXPECT_EQ(g.get_int("t.u8").value(), 200);
  EXPECT_EQ(g.find("t.u8")->type, GgufType::kUint8);
  EXPECT_EQ(g.get_int("t.i8").value(), -100);
  EXPECT_EQ(g.get_int("t.u16").value(), 60000);
  EXPECT_EQ(g.get_int("t.i16").value(), -30000);
  EXPECT_EQ(g.get_int("t.u32").value(), 4000000000ll);
  EXPECT_EQ(g.find("t.u32")->type, GgufType::kUint32);
  EXPECT_EQ(g.get_int("t.i32").value(), -2000000000);
  EXPECT_EQ(static_cast<uint64_t>(g.get_int("t.u64").value()), (uint64_t{1} << 63) + 5);
  EXPECT_EQ(g.get_int("t.i64").value(), -5000000000000000000ll);
  EXPECT_EQ(g.get_float("t.f32").value(), 1.5);
  EXPECT_EQ(g.find("t.f32")->type, GgufType::kFloat32);
  EXPECT_EQ(g.get_float("t.f64").value(), 1e-300);
  EXPECT_EQ(g.find("t.f64")->type, GgufType::kFloat64);
  EXPECT_EQ(g.get_float("t.u16").value(), 60000.0);  // integers accepted as floats
  EXPECT_TRUE(g.get_bool("t.bool").value());
  EXPECT_FALSE(g.get_bool("t.bool_false").value());
  EXPECT_EQ(g.get_string("t.str").value(), "h\xc3\xa9llo \xe2\x96\x81world");
  EXPECT_EQ(g.get_string("t.empty_str").value(), "");

  auto ints = [&](const char* k, GgufType elem) {
    const GgufValue* v = g.find(k);
    EXPECT_NE(v, nullptr) << k;
    if (!v) return std::vector<int64_t>{};
    EXPECT_TRUE(v->is_array()) << k;
    EXPECT_EQ(v->elem_type, elem) << k;
    EXPECT_EQ(v->array_size(), v->ints.size()) << k;
    return v->ints;
  };
  EXPECT_EQ(ints("a.u8", GgufType::kUint8), (std::vector<int64_t>{0, 255}));
  EXPECT_EQ(ints("a.i8", GgufType::kInt8), (std::vector<int64_t>{-128, 127}));
  EXPECT_EQ(ints("a.u16", GgufType::kUint16), (std::vector<int64_t>{0, 65535}));
  EXPECT_EQ(ints("a.i16", GgufType::kInt16), (std::vector<int64_t>{-32768, 32767}));
  EXPECT_EQ(ints("a.u32", GgufType::kUint32), (std::vector<int64_t>{0, 4294967295ll}));
  EXPECT_EQ(ints("a.i32", GgufType::kInt32), (std::vector<int64_t>{-2147483648ll, 2147483647}));
  EXPECT_EQ(ints("a.u64", GgufType::kUint64), (std::vector<int64_t>{0, 1ll << 62}));
  EXPECT_EQ(ints("a.i64", GgufType::kInt64), (std::vector<int64_t>{-(1ll << 62), 1ll << 62}));
  EXPECT_EQ(ints("a.bool", GgufType::kBool), (std::vector<int64_t>{1, 0, 1}));
  const GgufValue* f32 = g.find("a.f32");
  ASSERT_NE(f32, nullptr);
  EXPECT_EQ(f32->elem_type, GgufType::kFloat32);
  EXPECT_EQ(f32->floats, (std::vector<double>{0.25, -3.0}));
  const GgufValue* f64 = g.find("a.f64");
  ASSERT_NE(f64, nullptr);
  EXPECT_EQ(f64->floats, (std::vector<double>{1e300, -1e-300}));
  const GgufValue* strs = g.find("a.str");
  ASSERT_NE(strs, nullptr);
  EXPECT_EQ(strs->elem_type, GgufType::kString);
  EXPECT_EQ(strs->strs, (std::vector<std::string>{"a", "", "\xe2\x96\x81the"}));
  EXPECT_EQ(strs->array_size(), 3u);
  const GgufValue* empty = g.find("a.empty");
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->array_size(), 0u);
}

TEST(GgufTest, RoundTripEveryValueType) {
  TempDir dir;
  GgufWriter w;
  set_every_value_type(w);
  const std::string path = dir.file("values.gguf");
  ASSERT_TRUE(w.write(path).is_ok());
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  EXPECT_EQ((*g)->version(), 3u);
  EXPECT_EQ((*g)->alignment(), 32u);
  EXPECT_EQ((*g)->metadata().size(), 27u);
  EXPECT_TRUE((*g)->tensors().empty());
  check_every_value_type(**g);
}

TEST(GgufTest, TypedGetterErrorsNameFileAndKey) {
  TempDir dir;
  GgufWriter w;
  w.set_string("s", "x");
  w.set_u32("n", 3);
  const std::string path = dir.file("getters.gguf");
  ASSERT_TRUE(w.write(path).is_ok());
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.is_ok());
  auto missing = (*g)->get_int("no.such.key");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(path), std::string::npos);
  EXPECT_NE(missing.status().message().find("no.such.key"), std::string::npos);
  auto wrong = (*g)->get_int("s");
  ASSERT_FALSE(wrong.is_ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("'s'"), std::string::npos);
  EXPECT_FALSE((*g)->get_string("n").is_ok());
  EXPECT_FALSE((*g)->get_bool("n").is_ok());
  EXPECT_FALSE((*g)->get_float("s").is_ok());
  EXPECT_EQ((*g)->tensor("nope"), nullptr);
}

TEST(GgufTest, SetterReplacesExistingKey) {
  GgufWriter w;
  w.set_u32("k", 1);
  w.set_u32("k", 2);
  TempDir dir;
  ASSERT_TRUE(w.write(dir.file("k.gguf")).is_ok());
  auto g = GgufFile::open(dir.file("k.gguf"));
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  EXPECT_EQ((*g)->get_int("k").value(), 2);
}

struct TensorCase {
  const char* name;
  DType type;
  std::vector<int64_t> dims;
};

void check_tensor_round_trip(uint32_t alignment) {
  const std::vector<TensorCase> cases = {
      {"f32", DType::kF32, {5, 3}},          {"f16", DType::kF16, {7}},
      {"bf16", DType::kBF16, {3, 2, 2}},     {"q8_0", DType::kQ8_0, {64, 3}},
      {"q4_0", DType::kQ4_0, {32, 1, 2, 2}}, {"q4_k", DType::kQ4_K, {256, 2}},
      {"q6_k", DType::kQ6_K, {512}},
  };
  GgufWriter w;
  if (alignment != 32) w.set_alignment(alignment);
  w.set_string("general.name", "tensors");
  std::vector<std::vector<uint8_t>> datas;
  for (size_t i = 0; i < cases.size(); ++i) {
    size_t rows = 1;
    for (size_t d = 1; d < cases[i].dims.size(); ++d) rows *= cases[i].dims[d];
    datas.push_back(
        pattern_bytes(row_bytes(cases[i].type, cases[i].dims[0]) * rows, static_cast<uint8_t>(i)));
    w.add_tensor(cases[i].name, cases[i].type, cases[i].dims, datas.back());
  }
  TempDir dir;
  const std::string path = dir.file("tensors.gguf");
  ASSERT_TRUE(w.write(path).is_ok());
  EXPECT_EQ(test::read_file_bytes(path), w.serialize());
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  EXPECT_EQ((*g)->alignment(), alignment);
  ASSERT_EQ((*g)->tensors().size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].name);
    const TensorView* t = (*g)->tensor(cases[i].name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(&(*g)->tensors()[i], t);  // file order kept
    EXPECT_EQ(t->type, cases[i].type);
    ASSERT_EQ(t->n_dims, static_cast<int>(cases[i].dims.size()));
    for (int d = 0; d < 4; ++d) {
      EXPECT_EQ(t->ne[d], d < t->n_dims ? cases[i].dims[d] : 1);
    }
    ASSERT_EQ(t->n_bytes, datas[i].size());
    EXPECT_EQ(std::memcmp(t->data, datas[i].data(), t->n_bytes), 0);
    // The mapping is page-aligned, so file offsets and addresses agree modulo the alignment.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % alignment, 0u);
  }
}

TEST(GgufTest, RoundTripTensorsDefaultAlignment) {
  check_tensor_round_trip(32);
}
TEST(GgufTest, RoundTripTensorsAlignment64) {
  check_tensor_round_trip(64);
}
TEST(GgufTest, RoundTripTensorsAlignment8) {
  check_tensor_round_trip(8);
}

TEST(GgufTest, StreamingWriteMatchesSerialize) {
  GgufWriter direct, streamed;
  const std::vector<uint8_t> a = pattern_bytes(4 * 10, 1), b = pattern_bytes(34 * 2, 2);
  for (GgufWriter* w : {&direct, &streamed}) w->set_u32("x", 9);
  direct.add_tensor("a", DType::kF32, {10}, a);
  direct.add_tensor("b", DType::kQ8_0, {32, 2}, b);
  streamed.add_tensor("a", DType::kF32, {10}, a);
  streamed.add_tensor_deferred("b", DType::kQ8_0, {32, 2});
  TempDir dir;
  const std::string path = dir.file("s.gguf");
  Status st = streamed.write_streaming(path, [&](size_t i, const GgufWriter::ByteSink& sink) {
    EXPECT_EQ(i, 1u);
    KV_RETURN_IF_ERROR(sink(b.data(), 10));
    return sink(b.data() + 10, b.size() - 10);
  });
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  EXPECT_EQ(test::read_file_bytes(path), direct.serialize());

  // A producer that writes the wrong number of bytes is an error and leaves no file.
  st = streamed.write_streaming(
      path, [&](size_t, const GgufWriter::ByteSink& sink) { return sink(b.data(), 3); });
  EXPECT_FALSE(st.is_ok());
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(GgufTest, Version2Accepted) {
  GgufWriter w;
  set_every_value_type(w);
  w.add_tensor("t", DType::kF32, {4, 2}, pattern_bytes(32, 3));
  std::vector<uint8_t> bytes = w.serialize();
  const uint32_t v2 = 2;
  std::memcpy(bytes.data() + 4, &v2, 4);  // v2 has the same layout (uint64 counts) as v3
  TempDir dir;
  const std::string path = dir.file("v2.gguf");
  test::write_file_bytes(path, bytes);
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  EXPECT_EQ((*g)->version(), 2u);
  check_every_value_type(**g);
  ASSERT_NE((*g)->tensor("t"), nullptr);
  EXPECT_EQ((*g)->tensor("t")->n_bytes, 32u);
}

TEST(GgufTest, Version1Rejected) {
  GgufWriter w;
  w.set_u32("x", 1);
  std::vector<uint8_t> bytes = w.serialize();
  const uint32_t v1 = 1;
  std::memcpy(bytes.data() + 4, &v1, 4);
  TempDir dir;
  const std::string path = dir.file("v1.gguf");
  test::write_file_bytes(path, bytes);
  auto g = GgufFile::open(path);
  ASSERT_FALSE(g.is_ok());
  EXPECT_EQ(g.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(g.status().message().find("version 1"), std::string::npos);
}

TEST(GgufTest, MissingFileIsNotFound) {
  auto g = GgufFile::open("/nonexistent/dir/model.gguf");
  ASSERT_FALSE(g.is_ok());
  EXPECT_EQ(g.status().code(), StatusCode::kNotFound);
  EXPECT_NE(g.status().message().find("/nonexistent/dir/model.gguf"), std::string::npos);
}

// A tiny llama model built with the writer; `tied` leaves out output.weight.
GgufWriter tiny_llama(bool tied) {
  const int64_t d = 32, ff = 64, V = 16, L = 1, kv = 16;
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", "tiny");
  w.set_u32("llama.context_length", 128);
  w.set_u32("llama.embedding_length", d);
  w.set_u32("llama.feed_forward_length", ff);
  w.set_u32("llama.block_count", L);
  w.set_u32("llama.attention.head_count", 2);
  w.set_u32("llama.attention.head_count_kv", 1);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  auto f32 = [](size_t n, uint8_t s) { return pattern_bytes(n * 4, s); };
  w.add_tensor("token_embd.weight", DType::kF32, {d, V}, f32(d * V, 1));
  w.add_tensor("output_norm.weight", DType::kF32, {d}, f32(d, 2));
  if (!tied) w.add_tensor("output.weight", DType::kF32, {d, V}, f32(d * V, 3));
  w.add_tensor("blk.0.attn_norm.weight", DType::kF32, {d}, f32(d, 4));
  w.add_tensor("blk.0.attn_q.weight", DType::kF32, {d, d}, f32(d * d, 5));
  w.add_tensor("blk.0.attn_k.weight", DType::kF32, {d, kv}, f32(d * kv, 6));
  w.add_tensor("blk.0.attn_v.weight", DType::kF32, {d, kv}, f32(d * kv, 7));
  w.add_tensor("blk.0.attn_output.weight", DType::kF32, {d, d}, f32(d * d, 8));
  w.add_tensor("blk.0.ffn_norm.weight", DType::kF32, {d}, f32(d, 9));
  w.add_tensor("blk.0.ffn_gate.weight", DType::kF32, {d, ff}, f32(d * ff, 10));
  w.add_tensor("blk.0.ffn_up.weight", DType::kF32, {d, ff}, f32(d * ff, 11));
  w.add_tensor("blk.0.ffn_down.weight", DType::kF32, {ff, d}, f32(d * ff, 12));
  return w;
}

TEST(GgufTest, TiedOutputSharesTokenEmbedding) {
  TempDir dir;
  for (bool tied : {true, false}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    const std::string path = dir.file(tied ? "tied.gguf" : "untied.gguf");
    ASSERT_TRUE(tiny_llama(tied).write(path).is_ok());
    auto m = load_model(path);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    const Model& model = **m;
    EXPECT_EQ(model.format, "gguf");
    EXPECT_EQ(model.config.tied_embeddings, tied);
    EXPECT_EQ(model.config.name, "tiny");
    EXPECT_EQ(model.config.n_vocab, 16);
    EXPECT_EQ(model.config.head_dim, 16);
    EXPECT_FLOAT_EQ(model.config.rms_eps, 1e-6f);
    EXPECT_FLOAT_EQ(model.config.rope_freq_base, 10000.0f);
    EXPECT_EQ(model.tokenizer, nullptr);  // no tokenizer.ggml.* keys
    ASSERT_TRUE(model.output.present());
    EXPECT_EQ(model.output.data == model.tok_embd.data, tied);
    const size_t emb = 32 * 16 * 4;
    EXPECT_EQ(model.weight_bytes(),
              (tied ? emb : 2 * emb) + 4 * (32 * 3 + 32 * 32 * 2 + 32 * 16 * 2 + 32 * 64 * 3));
    EXPECT_EQ(model.main_weight_type(), DType::kF32);
  }
}

}  // namespace
}  // namespace kvserve
