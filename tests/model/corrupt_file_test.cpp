// Corrupted variants of the real stories260K files: every one must give a clear Status (naming the
// file and what is wrong), never a crash, a hang or a huge allocation.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "model/gguf.h"
#include "model/model.h"
#include "test_util.h"

namespace kvserve {
namespace {

using Bytes = std::vector<uint8_t>;

template <typename T>
T get(const Bytes& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

template <typename T>
void put(Bytes& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof(T));
}

// Byte offsets of the parts of a GGUF header, found by walking it (the test's own parser, so
// that the reader under test is not trusted to describe what it then has to reject).
struct Layout {
  struct Kv {
    std::string key;
    size_t key_off = 0;    // the key's length field
    size_t type_off = 0;   // value type (uint32)
    size_t value_off = 0;  // value (for arrays: element type, then count)
  };
  struct TensorInfo {
    std::string name;
    size_t name_off = 0;
    size_t n_dims_off = 0;
    size_t ne_off = 0;
    size_t type_off = 0;
    size_t offset_off = 0;
    uint64_t offset = 0;
  };
  std::vector<Kv> kvs;
  std::vector<TensorInfo> tensors;
  size_t infos_begin = 0;
  size_t header_end = 0;
  size_t data_begin = 0;

  const Kv& kv(const std::string& key) const {
    for (const Kv& k : kvs) {
      if (k.key == key) return k;
    }
    ADD_FAILURE() << "no key " << key;
    return kvs.front();
  }
  const TensorInfo& tensor(const std::string& name) const {
    for (const TensorInfo& t : tensors) {
      if (t.name == name) return t;
    }
    ADD_FAILURE() << "no tensor " << name;
    return tensors.front();
  }
};

size_t scalar_bytes(uint32_t t) {
  switch (t) {
    case 0:
    case 1:
    case 7:
      return 1;
    case 2:
    case 3:
      return 2;
    case 4:
    case 5:
    case 6:
      return 4;
    default:
      return 8;  // 10, 11, 12
  }
}

Layout walk(const Bytes& b) {
  Layout l;
  size_t p = 24;
  auto str = [&](std::string* out) {
    const uint64_t n = get<uint64_t>(b, p);
    out->assign(reinterpret_cast<const char*>(b.data() + p + 8), n);
    p += 8 + n;
  };
  const uint64_t n_tensors = get<uint64_t>(b, 8), n_kv = get<uint64_t>(b, 16);
  for (uint64_t i = 0; i < n_kv; ++i) {
    Layout::Kv kv;
    kv.key_off = p;
    str(&kv.key);
    kv.type_off = p;
    const uint32_t t = get<uint32_t>(b, p);
    p += 4;
    kv.value_off = p;
    std::string s;
    if (t == 8) {
      str(&s);
    } else if (t == 9) {
      const uint32_t et = get<uint32_t>(b, p);
      const uint64_t n = get<uint64_t>(b, p + 4);
      p += 12;
      for (uint64_t j = 0; j < n; ++j) {
        if (et == 8) {
          str(&s);
        } else {
          p += scalar_bytes(et);
        }
      }
    } else {
      p += scalar_bytes(t);
    }
    l.kvs.push_back(kv);
  }
  l.infos_begin = p;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    Layout::TensorInfo t;
    t.name_off = p;
    str(&t.name);
    t.n_dims_off = p;
    const uint32_t nd = get<uint32_t>(b, p);
    t.ne_off = p + 4;
    p += 4 + 8 * nd;
    t.type_off = p;
    t.offset_off = p + 4;
    t.offset = get<uint64_t>(b, p + 4);
    p += 12;
    l.tensors.push_back(t);
  }
  l.header_end = p;
  l.data_begin = (p + 31) / 32 * 32;
  return l;
}

struct Variant {
  std::string name;
  Bytes bytes;
  std::vector<std::string> words;  // each must appear in the error message
};

Bytes truncated(const Bytes& b, size_t n) {
  return Bytes(b.begin(), b.begin() + n);
}

// Replaces a string in place by one of the same length.
void rename(Bytes& b, size_t len_off, const std::string& to) {
  ASSERT_EQ(get<uint64_t>(b, len_off), to.size());
  std::memcpy(b.data() + len_off + 8, to.data(), to.size());
}

std::vector<Variant> gguf_variants(const Bytes& orig) {
  const Layout l = walk(orig);
  std::vector<Variant> v;
  auto patched = [&](const std::string& name, std::vector<std::string> words,
                     const std::function<void(Bytes&)>& patch) {
    Bytes b = orig;
    patch(b);
    v.push_back({name, std::move(b), std::move(words)});
  };
  const uint64_t k2_40 = uint64_t{1} << 40;

  v.push_back({"truncated_in_magic", truncated(orig, 3), {"truncated"}});
  v.push_back({"truncated_in_header", truncated(orig, 12), {"truncated"}});
  v.push_back({"truncated_in_counts", truncated(orig, 20), {"truncated"}});
  const Layout::Kv& tokens = l.kv("tokenizer.ggml.tokens");
  v.push_back({"truncated_in_metadata", truncated(orig, tokens.value_off + 2000), {"truncated"}});
  v.push_back(
      {"truncated_in_key", truncated(orig, l.kv("llama.block_count").key_off + 12), {"truncated"}});
  v.push_back(
      {"truncated_in_tensor_infos", truncated(orig, l.tensors[10].name_off + 5), {"truncated"}});
  v.push_back({"truncated_before_data", truncated(orig, l.header_end), {"truncated"}});
  v.push_back({"truncated_in_data", truncated(orig, l.data_begin + 300000), {"truncated"}});
  v.push_back({"truncated_last_byte",
               truncated(orig, orig.size() - 1),
               {"truncated", l.tensors.back().name}});
  v.push_back({"zero_bytes", {}, {"empty"}});

  patched("wrong_magic", {"magic"}, [](Bytes& b) { b[0] = 'X'; });
  patched("version_1", {"version 1"}, [](Bytes& b) { put<uint32_t>(b, 4, 1); });
  patched("version_99", {"version 99"}, [](Bytes& b) { put<uint32_t>(b, 4, 99); });
  patched("tensor_count_2^40", {"tensor count"}, [&](Bytes& b) { put<uint64_t>(b, 8, k2_40); });
  patched("kv_count_2^40", {"KV count"}, [&](Bytes& b) { put<uint64_t>(b, 16, k2_40); });
  patched("tensor_count_plus_one", {"tensor"}, [&](Bytes& b) {
    put<uint64_t>(b, 8, l.tensors.size() + 1);  // plausible count, but the infos run out
  });
  patched("key_length_2^40", {"key of metadata entry #3"},
          [&](Bytes& b) { put<uint64_t>(b, l.kvs[3].key_off, k2_40); });
  patched("string_length_2^40", {"general.name", "length"},
          [&](Bytes& b) { put<uint64_t>(b, l.kv("general.name").value_off, k2_40); });
  patched("array_length_2^40", {"tokenizer.ggml.tokens", "1099511627776"},
          [&](Bytes& b) { put<uint64_t>(b, tokens.value_off + 4, k2_40); });
  patched("array_length_max", {"tokenizer.ggml.scores"}, [&](Bytes& b) {
    put<uint64_t>(b, l.kv("tokenizer.ggml.scores").value_off + 4, ~uint64_t{0});
  });
  patched("nested_array", {"tokenizer.ggml.token_type", "nested"},
          [&](Bytes& b) { put<uint32_t>(b, l.kv("tokenizer.ggml.token_type").value_off, 9); });
  patched("unknown_value_type", {"llama.block_count", "value type"},
          [&](Bytes& b) { put<uint32_t>(b, l.kv("llama.block_count").type_off, 13); });
  patched("unknown_array_elem_type", {"tokenizer.ggml.scores", "element type"},
          [&](Bytes& b) { put<uint32_t>(b, l.kv("tokenizer.ggml.scores").value_off, 77); });
  patched("duplicate_key", {"duplicate", "tokenizer.ggml.eos_token_id"}, [&](Bytes& b) {
    rename(b, l.kv("tokenizer.ggml.bos_token_id").key_off, "tokenizer.ggml.eos_token_id");
  });
  patched("missing_key_block_count", {"llama.block_count"},
          [&](Bytes& b) { rename(b, l.kv("llama.block_count").key_off, "llama.block_coun_"); });
  patched("missing_key_architecture", {"general.architecture"}, [&](Bytes& b) {
    rename(b, l.kv("general.architecture").key_off, "general.architectur_");
  });
  patched("unknown_architecture", {"llamX", "architecture"},
          [&](Bytes& b) { rename(b, l.kv("general.architecture").value_off, "llamX"); });
  patched("block_count_zero", {"llama.block_count"},
          [&](Bytes& b) { put<uint32_t>(b, l.kv("llama.block_count").value_off, 0); });
  patched("block_count_too_high", {"blk.5.attn_norm.weight"},
          [&](Bytes& b) { put<uint32_t>(b, l.kv("llama.block_count").value_off, 6); });
  patched("heads_not_multiple_of_kv_heads", {"head_count"},
          [&](Bytes& b) { put<uint32_t>(b, l.kv("llama.attention.head_count_kv").value_off, 3); });
  patched("unknown_tensor_type", {"unknown tensor type 13", "token_embd.weight"},
          [&](Bytes& b) { put<uint32_t>(b, l.tensor("token_embd.weight").type_off, 13); });
  patched("tensor_type_1000", {"unknown tensor type 1000", "blk.2.attn_v.weight"},
          [&](Bytes& b) { put<uint32_t>(b, l.tensor("blk.2.attn_v.weight").type_off, 1000); });
  patched("not_block_multiple", {"blk.0.ffn_down.weight", "block size"}, [&](Bytes& b) {
    put<uint32_t>(b, l.tensor("blk.0.ffn_down.weight").type_off, 8);  // q8_0, ne[0] = 172
  });
  patched("norm_not_f32", {"output_norm.weight", "f32"},
          [&](Bytes& b) { put<uint32_t>(b, l.tensor("output_norm.weight").type_off, 1); });
  patched("offset_out_of_bounds", {"blk.4.ffn_norm.weight", "out of bounds"},
          [&](Bytes& b) { put<uint64_t>(b, l.tensor("blk.4.ffn_norm.weight").offset_off, k2_40); });
  patched("offset_wraps_around", {"blk.1.attn_q.weight", "out of bounds"}, [&](Bytes& b) {
    put<uint64_t>(b, l.tensor("blk.1.attn_q.weight").offset_off, ~uint64_t{31});
  });
  patched("offset_misaligned", {"output.weight", "misaligned"}, [&](Bytes& b) {
    const auto& t = l.tensor("output.weight");
    put<uint64_t>(b, t.offset_off, t.offset + 4);
  });
  patched("shape_mismatch", {"blk.0.attn_q.weight", "shape [64, 32], expected [64, 64]"},
          [&](Bytes& b) { put<uint64_t>(b, l.tensor("blk.0.attn_q.weight").ne_off + 8, 32); });
  patched("dim_zero", {"blk.3.ffn_up.weight", "dimension 1"},
          [&](Bytes& b) { put<uint64_t>(b, l.tensor("blk.3.ffn_up.weight").ne_off + 8, 0); });
  patched("element_count_overflow", {"token_embd.weight", "overflow"}, [&](Bytes& b) {
    const auto& t = l.tensor("token_embd.weight");
    put<uint64_t>(b, t.ne_off, uint64_t{1} << 32);
    put<uint64_t>(b, t.ne_off + 8, uint64_t{1} << 32);
  });
  patched("tensor_bigger_than_file", {"token_embd.weight"}, [&](Bytes& b) {
    put<uint64_t>(b, l.tensor("token_embd.weight").ne_off + 8, uint64_t{1} << 40);
  });
  patched("n_dims_5", {"blk.0.attn_k.weight", "n_dims 5"},
          [&](Bytes& b) { put<uint32_t>(b, l.tensor("blk.0.attn_k.weight").n_dims_off, 5); });
  patched("n_dims_0", {"blk.0.attn_k.weight", "n_dims 0"},
          [&](Bytes& b) { put<uint32_t>(b, l.tensor("blk.0.attn_k.weight").n_dims_off, 0); });
  patched("tensor_name_length_2^40", {"name of tensor #7"},
          [&](Bytes& b) { put<uint64_t>(b, l.tensors[7].name_off, k2_40); });
  patched("duplicate_tensor_name", {"duplicate", "blk.0.attn_q.weight"}, [&](Bytes& b) {
    rename(b, l.tensor("blk.0.attn_k.weight").name_off, "blk.0.attn_q.weight");
  });
  patched("missing_tensor", {"output_norm.weight", "not found"}, [&](Bytes& b) {
    rename(b, l.tensor("output_norm.weight").name_off, "output_norm.weighX");
  });
  return v;
}

class CorruptFileTest : public ::testing::Test {
 protected:
  void expect_rejected(const Variant& var) {
    SCOPED_TRACE(var.name);
    const std::string path = dir_.file(var.name + ".bin");
    test::write_file_bytes(path, var.bytes);
    auto m = load_model(path);
    ASSERT_FALSE(m.is_ok()) << "variant " << var.name << " loaded";
    const std::string msg = m.status().message();
    if (std::getenv("KVSERVE_TEST_VERBOSE")) std::printf("%s: %s\n", var.name.c_str(), msg.c_str());
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    std::string rest = msg;  // the message without the path, which holds the variant's name
    for (size_t at; (at = rest.find(path)) != std::string::npos;) rest.erase(at, path.size());
    for (const std::string& w : var.words) {
      EXPECT_NE(rest.find(w), std::string::npos) << "'" << w << "' not in: " << msg;
    }
  }
  test::TempDir dir_;
};

TEST_F(CorruptFileTest, GgufVariants) {
  const std::string path = test::shared_model_path("stories260K/stories260K.gguf");
  KV_REQUIRE_SHARED_FILE(path);
  const Bytes orig = test::read_file_bytes(path);
  {
    // The untouched copy loads: the variants fail because of their one change.
    const std::string copy = dir_.file("original.gguf");
    test::write_file_bytes(copy, orig);
    auto m = load_model(copy);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  }
  const std::vector<Variant> variants = gguf_variants(orig);
  EXPECT_GE(variants.size(), 20u);
  for (const Variant& v : variants) expect_rejected(v);
}

TEST_F(CorruptFileTest, BadAlignment) {
  // general.alignment that is not a power of two: built from scratch with the writer.
  GgufWriter w;
  w.set_u32("general.alignment", 24);
  w.add_tensor("t", DType::kF32, {2}, std::vector<uint8_t>(8));
  expect_rejected({"alignment_24", w.serialize(), {"general.alignment"}});
  GgufWriter w0;
  w0.set_u32("general.alignment", 0);
  expect_rejected({"alignment_0", w0.serialize(), {"general.alignment"}});
}

TEST_F(CorruptFileTest, Llama2cVariants) {
  const std::string path = test::shared_model_path("stories260K/stories260K.bin");
  KV_REQUIRE_SHARED_FILE(path);
  const Bytes orig = test::read_file_bytes(path);
  std::vector<Variant> v;
  auto patched = [&](const std::string& name, std::vector<std::string> words, int field,
                     int32_t value) {
    Bytes b = orig;
    put<int32_t>(b, 4 * field, value);
    v.push_back({name, std::move(b), std::move(words)});
  };
  patched("l2c_negative_dim", {"llama2.c v0 header", "'dim' = -64"}, 0, -64);
  patched("l2c_zero_layers", {"llama2.c v0 header", "n_layers"}, 2, 0);
  patched("l2c_negative_heads", {"n_heads"}, 3, -8);
  patched("l2c_huge_hidden", {"hidden_dim"}, 1, 1 << 30);
  patched("l2c_kv_heads_not_divisor", {"n_kv_heads"}, 4, 3);
  patched("l2c_zero_vocab", {"vocab_size"}, 5, 0);
  patched("l2c_zero_seq_len", {"seq_len"}, 6, 0);
  patched("l2c_bigger_vocab", {"truncated"}, 5, 1000);  // header fine, file too short
  patched("l2c_unshared_without_wcls", {"truncated"}, 5, -512);
  v.push_back({"l2c_truncated_header", truncated(orig, 20), {"too short"}});
  v.push_back({"l2c_truncated", truncated(orig, 100000), {"truncated"}});
  v.push_back({"l2c_truncated_last_byte", truncated(orig, orig.size() - 1), {"truncated"}});
  Bytes longer = orig;
  longer.push_back(0);
  v.push_back({"l2c_trailing_byte", longer, {"size mismatch"}});
  Bytes text(200, 'x');
  v.push_back({"text_file", text, {"not a GGUF or llama2.c file"}});
  for (const Variant& var : v) expect_rejected(var);
}

TEST_F(CorruptFileTest, Llama2cQ80Variants) {
  const std::string path = test::shared_model_path("stories260K/stories260K_q80.bin");
  KV_REQUIRE_SHARED_FILE(path);
  const Bytes orig = test::read_file_bytes(path);
  std::vector<Variant> v;
  v.push_back({"q80_truncated_header", truncated(orig, 100), {"truncated"}});
  v.push_back({"q80_truncated", truncated(orig, orig.size() / 2), {"truncated"}});
  Bytes gs = orig;
  put<int32_t>(gs, 37, 64);
  v.push_back({"q80_group_size_64", gs, {"group size 64"}});
  Bytes ver = orig;
  put<int32_t>(ver, 4, 3);
  v.push_back({"q80_version_3", ver, {"version 3"}});
  Bytes dim = orig;
  put<int32_t>(dim, 8, -1);
  v.push_back({"q80_negative_dim", dim, {"'dim' = -1"}});
  Bytes unshared = orig;
  unshared[36] = 0;  // claims a separate classifier that is not there
  v.push_back({"q80_unshared_without_wcls", unshared, {"truncated"}});
  for (const Variant& var : v) expect_rejected(var);
}

}  // namespace
}  // namespace kvserve
