// Byte-level BPE ("gpt2"): byte alphabet, pre-tokenizers, merges by rank, round trips, GGUF.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/utf8.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "model/tokenizer_bpe.h"
#include "model/tokenizer_spm.h"

namespace kvserve {
namespace {

using Pieces = std::vector<std::string>;

Pieces split(std::string_view text, BpePreTokenizer pre) {
  Pieces out;
  for (std::string_view p : bpe_pretokenize(text, pre)) out.emplace_back(p);
  return out;
}

constexpr auto kGpt2 = BpePreTokenizer::kGpt2;
constexpr auto kLlama3 = BpePreTokenizer::kLlama3;
constexpr auto kQwen2 = BpePreTokenizer::kQwen2;
constexpr auto kSplitDigits = BpePreTokenizer::kGpt2SplitDigits;

TEST(TokenizerBpe, ByteAlphabet) {
  EXPECT_EQ(bpe_byte_to_codepoint(' '), 0x120u);   // Ġ
  EXPECT_EQ(bpe_byte_to_codepoint('\n'), 0x10Au);  // Ċ
  EXPECT_EQ(bpe_byte_to_codepoint(0), 0x100u);
  EXPECT_EQ(bpe_byte_to_codepoint('a'), static_cast<uint32_t>('a'));
  EXPECT_EQ(bpe_byte_to_codepoint(0xA1), 0xA1u);
  EXPECT_EQ(bpe_byte_to_codepoint(0xAD), 0x143u);  // the last of the 68 remapped bytes
  EXPECT_EQ(bpe_byte_to_codepoint(0x7F), 0x100u + 33);
  std::vector<bool> seen(400, false);
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = bpe_byte_to_codepoint(static_cast<uint8_t>(b));
    ASSERT_LT(cp, 400u);
    EXPECT_FALSE(seen[cp]) << b;
    seen[cp] = true;
    EXPECT_EQ(bpe_codepoint_to_byte(cp), b);
  }
  EXPECT_EQ(bpe_codepoint_to_byte(0x20), -1);
  EXPECT_EQ(bpe_codepoint_to_byte(0x4E00), -1);
  EXPECT_EQ(bpe_bytes_to_symbols(" the\n"), "\xC4\xA0the\xC4\x8A");
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(bpe_symbols_to_bytes(bpe_bytes_to_symbols(all)), all);
}

TEST(TokenizerBpe, PreTokenizeGpt2) {
  EXPECT_EQ(split("Hello world", kGpt2), (Pieces{"Hello", " world"}));
  EXPECT_EQ(split("don't stop", kGpt2), (Pieces{"don", "'t", " stop"}));
  EXPECT_EQ(
      split("we'll they've I'm he'd you're it's", kGpt2),
      (Pieces{"we", "'ll", " they", "'ve", " I", "'m", " he", "'d", " you", "'re", " it", "'s"}));
  EXPECT_EQ(split("I'M", kGpt2), (Pieces{"I", "'", "M"}));  // case-sensitive in GPT-2
  EXPECT_EQ(split("12345 678", kGpt2), (Pieces{"12345", " 678"}));
  EXPECT_EQ(split("Hello  world", kGpt2), (Pieces{"Hello", " ", " world"}));
  EXPECT_EQ(split("hi   ", kGpt2), (Pieces{"hi", "   "}));
  EXPECT_EQ(split("a\n\nb", kGpt2), (Pieces{"a", "\n", "\n", "b"}));
  EXPECT_EQ(split("hello!!! world?", kGpt2), (Pieces{"hello", "!!!", " world", "?"}));
  EXPECT_EQ(split("x = (y+1);", kGpt2), (Pieces{"x", " =", " (", "y", "+", "1", ");"}));
  EXPECT_EQ(split("\tfoo", kGpt2), (Pieces{"\t", "foo"}));
  EXPECT_EQ(split("abc123def", kGpt2), (Pieces{"abc", "123", "def"}));
  EXPECT_EQ(split("", kGpt2), Pieces{});
}

TEST(TokenizerBpe, PreTokenizeLlama3) {
  EXPECT_EQ(split("Hello world", kLlama3), (Pieces{"Hello", " world"}));
  EXPECT_EQ(split("I'M DON'T", kLlama3), (Pieces{"I", "'M", " DON", "'T"}));
  EXPECT_EQ(split("12345 678", kLlama3), (Pieces{"123", "45", " ", "678"}));
  EXPECT_EQ(split("Hi.\n\nOk", kLlama3), (Pieces{"Hi", ".\n\n", "Ok"}));
  EXPECT_EQ(split("a\n\nb", kLlama3), (Pieces{"a", "\n\n", "b"}));
  EXPECT_EQ(split("a  \n  b", kLlama3), (Pieces{"a", "  \n", " ", " b"}));
  EXPECT_EQ(split("\tfoo", kLlama3), (Pieces{"\tfoo"}));
  EXPECT_EQ(split("(foo)", kLlama3), (Pieces{"(foo", ")"}));
  EXPECT_EQ(split("hi   ", kLlama3), (Pieces{"hi", "   "}));
  EXPECT_EQ(split("x = 1;", kLlama3), (Pieces{"x", " =", " ", "1", ";"}));
  EXPECT_EQ(split("12345", kQwen2), (Pieces{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(split("abc123 def", kSplitDigits), (Pieces{"abc", "1", "2", "3", " def"}));
  EXPECT_EQ(split("a  1", kSplitDigits), (Pieces{"a", "  ", "1"}));
  EXPECT_EQ(bpe_pre_tokenizer_from_name("llama-bpe"), kLlama3);
  EXPECT_EQ(bpe_pre_tokenizer_from_name("qwen2"), kQwen2);
  EXPECT_EQ(bpe_pre_tokenizer_from_name("smollm"), kSplitDigits);
  EXPECT_EQ(bpe_pre_tokenizer_from_name("default"), kGpt2);
  EXPECT_EQ(bpe_pre_tokenizer_from_name("something-new"), kGpt2);
}

TEST(TokenizerBpe, PreTokenizeUnicode) {
  const std::string e = "\xC3\xA9", o = "\xC3\xB6";  // é ö
  EXPECT_EQ(split("h" + e + "llo w" + o + "rld", kGpt2),
            (Pieces{"h" + e + "llo", " w" + o + "rld"}));
  const std::string ru = "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82";  // Привет
  const std::string mir = "\xD0\xBC\xD0\xB8\xD1\x80";                         // мир
  EXPECT_EQ(split(ru + " " + mir, kLlama3), (Pieces{ru, " " + mir}));
  const std::string jp =
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xA7\xE3\x81\x99";  // 日本語です
  EXPECT_EQ(split(jp + "!", kGpt2), (Pieces{jp, "!"}));
  const std::string ko = "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4";  // 한국어
  EXPECT_EQ(split(" " + ko, kGpt2), (Pieces{" " + ko}));
  const std::string smile = "\xF0\x9F\x99\x82";  // 🙂 is a symbol
  EXPECT_EQ(split("hi " + smile + smile, kGpt2), (Pieces{"hi", " " + smile + smile}));
  // Invalid UTF-8 bytes stay as one-byte symbols and are kept.
  EXPECT_EQ(split("a\xFF\xFE b", kGpt2), (Pieces{"a", "\xFF\xFE", " b"}));
  EXPECT_TRUE(unicode_is_letter(0xE9));
  EXPECT_TRUE(unicode_is_letter(0x4E2D));
  EXPECT_TRUE(unicode_is_letter(0xAC00));
  EXPECT_FALSE(unicode_is_letter(0x1F642));
  EXPECT_TRUE(unicode_is_number(0xFF15));
  EXPECT_TRUE(unicode_is_space(0x3000));
  EXPECT_FALSE(unicode_is_space(0xE9));
}

TEST(TokenizerBpe, PreTokensConcatenateToText) {
  std::mt19937 rng(42);
  const std::vector<std::string> atoms = {"a",
                                          "Z",
                                          " ",
                                          "  ",
                                          "\n",
                                          "\r\n",
                                          "\t",
                                          "'",
                                          "'s",
                                          "'LL",
                                          "1",
                                          "23",
                                          ".",
                                          "!?",
                                          "\xC3\xA9",
                                          "\xE6\x97\xA5",
                                          "\xF0\x9F\x99\x82",
                                          "\xFF",
                                          "\xC3"};
  for (int iter = 0; iter < 500; ++iter) {
    std::string s;
    const int n = static_cast<int>(rng() % 30);
    for (int i = 0; i < n; ++i) s += atoms[rng() % atoms.size()];
    for (auto pre : {kGpt2, kLlama3, kQwen2, kSplitDigits}) {
      std::string joined;
      for (std::string_view p : bpe_pretokenize(s, pre)) {
        ASSERT_FALSE(p.empty());
        joined += p;
      }
      ASSERT_EQ(joined, s);
    }
  }
}

// A byte-level vocabulary: ids 0..255 are the byte symbols (id == byte value), then merges.
struct SmallBpe {
  std::vector<std::string> tokens;
  std::vector<std::string> merges;
  std::vector<int32_t> types;

  SmallBpe() {
    for (int b = 0; b < 256; ++b) tokens.push_back(bpe_bytes_to_symbols(std::string(1, char(b))));
    types.assign(256, token_type::kNormal);
  }
  int32_t add_token(const std::string& text, int32_t type = token_type::kNormal) {
    tokens.push_back(text);
    types.push_back(type);
    return static_cast<int32_t>(tokens.size()) - 1;
  }
  // Merge of two symbols; adds the merged token unless told not to.
  int32_t add_merge(const std::string& l, const std::string& r, bool add = true) {
    merges.push_back(l + " " + r);
    return add ? add_token(l + r) : -1;
  }
  int32_t id(const std::string& text) const {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] == text) return static_cast<int32_t>(i);
    }
    return -1;
  }
  BpeTokenizer make(const std::string& pre = "gpt2") const {
    BpeOptions o;
    o.pre = pre;
    return BpeTokenizer(tokens, merges, types, o);
  }
};

TEST(TokenizerBpe, MergesByRank) {
  SmallBpe v;
  const int32_t Gt = v.add_merge("\xC4\xA0", "t");  // "Ġ t"
  const int32_t he = v.add_merge("h", "e");
  const int32_t Gthe = v.add_merge("\xC4\xA0t", "he");
  const int32_t in = v.add_merge("i", "n");
  const BpeTokenizer tok = v.make();
  EXPECT_STREQ(tok.kind(), "gpt2");
  EXPECT_FALSE(tok.add_bos_default());
  EXPECT_EQ(tok.encode(" the", false), (std::vector<int32_t>{Gthe}));
  EXPECT_EQ(tok.encode("the", false), (std::vector<int32_t>{'t', he}));
  EXPECT_EQ(tok.encode(" tin the", false), (std::vector<int32_t>{Gt, in, Gthe}));
  EXPECT_EQ(tok.merge_rank("h", "e"), 1);
  EXPECT_EQ(tok.merge_rank("e", "h"), -1);
  EXPECT_EQ(tok.decode(tok.encode(" tin the", false)), " tin the");
  EXPECT_EQ(tok.decode_token(-1, Gthe), " the");
}

TEST(TokenizerBpe, LowerRankWinsAndLeftmostOnTies) {
  {
    SmallBpe v;
    const int32_t bc = v.add_merge("b", "c");
    v.add_merge("a", "b");
    EXPECT_EQ(v.make().encode("abc", false), (std::vector<int32_t>{'a', bc}));
  }
  {
    SmallBpe v;
    const int32_t ab = v.add_merge("a", "b");
    v.add_merge("b", "c");
    EXPECT_EQ(v.make().encode("abc", false), (std::vector<int32_t>{ab, 'c'}));
  }
  {
    SmallBpe v;
    const int32_t aa = v.add_merge("a", "a");
    EXPECT_EQ(v.make().encode("aaa", false), (std::vector<int32_t>{aa, 'a'}));
    EXPECT_EQ(v.make().encode("aaaaa", false), (std::vector<int32_t>{aa, aa, 'a'}));
    const int32_t aaaa = v.add_merge("aa", "aa");
    EXPECT_EQ(v.make().encode("aaaaa", false), (std::vector<int32_t>{aaaa, 'a'}));
  }
}

TEST(TokenizerBpe, MissingMergedTokenFallsBackToCharacters) {
  SmallBpe v;
  v.add_merge("x", "y", /*add=*/false);  // "xy" is not a token
  const BpeTokenizer tok = v.make();
  EXPECT_EQ(tok.encode("xy", false), (std::vector<int32_t>{'x', 'y'}));
}

TEST(TokenizerBpe, SpecialTokensAndBos) {
  SmallBpe v;
  const int32_t eot = v.add_token("<|endoftext|>", token_type::kControl);
  const int32_t user = v.add_token("<tool>", token_type::kUserDefined);
  BpeOptions o;
  o.bos = eot;
  o.eos = eot;
  o.add_bos = true;
  const BpeTokenizer tok(v.tokens, v.merges, v.types, o);
  EXPECT_TRUE(tok.add_bos_default());
  const std::vector<int32_t> ids = tok.encode("<|endoftext|>", true);
  ASSERT_GT(ids.size(), 2u);
  EXPECT_EQ(ids[0], eot);
  for (size_t i = 1; i < ids.size(); ++i) EXPECT_NE(ids[i], eot);
  EXPECT_EQ(tok.decode(ids), "<|endoftext|>");
  EXPECT_EQ(tok.decode_token(-1, eot), "");
  EXPECT_EQ(tok.decode_token(-1, user), "<tool>");
  EXPECT_EQ(tok.decode_token(-1, 9999), "");
}

TEST(TokenizerBpe, Llama3IgnoresMergesForWholeTokens) {
  SmallBpe v;
  const int32_t hello = v.add_token("\xC4\xA0hello");  // no merges lead to it
  EXPECT_EQ(v.make("llama3").encode(" hello", false), (std::vector<int32_t>{hello}));
  EXPECT_EQ(v.make("gpt2").encode(" hello", false).size(), 6u);
}

TEST(TokenizerBpe, RoundTrips) {
  SmallBpe v;
  v.add_merge("\xC4\xA0", "t");
  v.add_merge("h", "e");
  v.add_merge("\xC4\xA0t", "he");
  v.add_merge("\xC3", "\xA9");  // é as bytes C3 A9 -> symbols Ã ©
  v.add_merge("\xC4\xA0", "\xC4\xA0");
  std::mt19937 rng(3);
  const std::vector<std::string> atoms = {
      "the",      " the", " ",   "  ", "\n", "\r\n",     "\t",           "'s",
      "'LL",      "1",    "234", ".",  "!?", "\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x99\x82",
      "\xD0\xB6", "x"};
  for (const char* pre : {"gpt2", "llama3", "qwen2", "smollm"}) {
    const BpeTokenizer tok = v.make(pre);
    EXPECT_TRUE(tok.encode("", false).empty());
    for (int iter = 0; iter < 200; ++iter) {
      std::string s;
      const int n = static_cast<int>(rng() % 25);
      for (int i = 0; i < n; ++i) s += atoms[rng() % atoms.size()];
      ASSERT_TRUE(utf8_valid(s));
      ASSERT_EQ(tok.decode(tok.encode(s, false)), s) << pre;
    }
    // Random bytes (mostly invalid UTF-8) survive too.
    for (int iter = 0; iter < 50; ++iter) {
      std::string s;
      const int n = static_cast<int>(rng() % 40);
      for (int i = 0; i < n; ++i) s.push_back(static_cast<char>(rng() % 256));
      ASSERT_EQ(tok.decode(tok.encode(s, false)), s) << pre;
    }
  }
}

TEST(TokenizerBpe, LongInputs) {
  SmallBpe v;
  v.add_merge("a", "a");
  v.add_merge("aa", "aa");
  v.add_merge("\xC4\xA0", "\xC4\xA0");
  std::string text(100000, 'a');  // one 100k-byte pre-token
  text += std::string(50000, ' ') + "x\n";
  for (int i = 0; i < 5000; ++i) text += " word" + std::to_string(i) + ",";
  for (const char* pre : {"gpt2", "llama3"}) {
    const BpeTokenizer tok = v.make(pre);
    const std::vector<int32_t> ids = tok.encode(text, false);
    EXPECT_EQ(tok.decode(ids), text);
  }
}

// ---------------------------------------------------------------------------------------------
// GGUF "gpt2"

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("kvserve_bpe_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

TEST(TokenizerBpe, FromGguf) {
  SmallBpe v;
  v.add_merge("\xC4\xA0", "t");
  v.add_merge("h", "e");
  const int32_t Gthe = v.add_merge("\xC4\xA0t", "he");
  const int32_t eot = v.add_token("<|end|>", token_type::kControl);
  const std::string path = temp_path("bpe.gguf");
  auto write = [&](bool with_merges, bool with_types, const std::string& bad_merge) {
    GgufWriter w;
    w.set_string("tokenizer.ggml.model", "gpt2");
    w.set_string("tokenizer.ggml.pre", "llama-bpe");
    w.set_string_array("tokenizer.ggml.tokens", v.tokens);
    if (with_types) w.set_i32_array("tokenizer.ggml.token_type", v.types);
    std::vector<std::string> merges = v.merges;
    if (!bad_merge.empty()) merges.push_back(bad_merge);
    if (with_merges) w.set_string_array("tokenizer.ggml.merges", merges);
    w.set_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(eot));
    w.set_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(eot));
    ASSERT_TRUE(w.write(path).is_ok());
  };
  for (bool with_types : {true, false}) {
    write(true, with_types, "");
    auto g = GgufFile::open(path);
    ASSERT_TRUE(g.is_ok()) << g.status().to_string();
    auto r = tokenizer_from_gguf(**g);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    const Tokenizer& tok = **r;
    EXPECT_STREQ(tok.kind(), "gpt2");
    EXPECT_FALSE(tok.add_bos_default());  // gpt2 default
    EXPECT_EQ(tok.bos(), eot);
    EXPECT_EQ(tok.encode(" the", true), (std::vector<int32_t>{eot, Gthe}));
    EXPECT_EQ(tok.decode(tok.encode(" the 123", true)), " the 123");
    EXPECT_EQ(tok.decode_token(-1, eot), "");  // control even without token_type
    EXPECT_EQ(dynamic_cast<const BpeTokenizer&>(tok).pre_tokenizer(), kLlama3);
  }
  {
    write(false, true, "");
    auto g = GgufFile::open(path);
    ASSERT_TRUE(g.is_ok());
    const Status st = tokenizer_from_gguf(**g).status();
    EXPECT_EQ(st.code(), StatusCode::kNotFound);
    EXPECT_NE(st.message().find("tokenizer.ggml.merges"), std::string::npos) << st.message();
  }
  {
    write(true, true, "nospace");
    auto g = GgufFile::open(path);
    ASSERT_TRUE(g.is_ok());
    const Status st = tokenizer_from_gguf(**g).status();
    EXPECT_EQ(st.code(), StatusCode::kCorrupt);
    EXPECT_NE(st.message().find("tokenizer.ggml.merges"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(path), std::string::npos) << st.message();
  }
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kvserve
