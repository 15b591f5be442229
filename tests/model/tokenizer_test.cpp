// SentencePiece-style tokenizers: llama2.c tokenizer.bin (tok512 and the Llama 2 vocabulary),
// GGUF "llama" vocabularies, and SpmTokenizer built from vectors.

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "model/gguf.h"
#include "model/tokenizer.h"
#include "model/tokenizer_spm.h"
#include "test_util.h"

namespace kvserve {
namespace {

std::string models_dir() {
  return test::shared_models_dir();
}

#define REQUIRE_FILE(path) KV_REQUIRE_SHARED_FILE(path)

std::string tok512_path() {
  return models_dir() + "/stories260K/tok512.bin";
}
std::string llama2_path() {
  return models_dir() + "/llama2-tokenizer/tokenizer.bin";
}
std::string stories_gguf_path() {
  return models_dir() + "/stories260K/stories260K.gguf";
}

std::unique_ptr<Tokenizer> load_llama2c(const std::string& path, int vocab) {
  auto r = tokenizer_from_llama2c(path, vocab);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  if (!r.is_ok()) return nullptr;
  return std::move(r).value();
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("kvserve_tok_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// llama2.c run.c's encode(), written the slow and obvious way: look up each character (else
// bytes as id b+3), then repeatedly merge the best-scoring adjacent pair, leftmost on ties.
std::vector<int32_t> runc_encode(const Tokenizer& tok, const std::string& text, bool bos) {
  const auto& spm = dynamic_cast<const SpmTokenizer&>(tok);
  std::map<std::string, int32_t> lookup;
  for (int32_t i = 0; i < tok.n_vocab(); ++i) lookup.emplace(std::string(tok.piece(i)), i);
  auto find = [&](const std::string& s) {
    auto it = lookup.find(s);
    return it == lookup.end() ? -1 : it->second;
  };
  std::vector<int32_t> ids;
  if (!text.empty()) ids.push_back(find(" "));
  for (size_t i = 0; i < text.size();) {
    size_t j = i + 1;
    while (j < text.size() && (static_cast<uint8_t>(text[j]) & 0xC0) == 0x80 && j - i < 4) ++j;
    const int32_t id = find(text.substr(i, j - i));
    if (id >= 0) {
      ids.push_back(id);
    } else {
      for (size_t k = i; k < j; ++k) ids.push_back(static_cast<uint8_t>(text[k]) + 3);
    }
    i = j;
  }
  while (true) {
    float best = -1e10f;
    int best_i = -1, best_id = -1;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const int32_t id = find(std::string(tok.piece(ids[i])) + std::string(tok.piece(ids[i + 1])));
      if (id >= 0 && spm.score(id) > best) {
        best = spm.score(id);
        best_i = static_cast<int>(i);
        best_id = id;
      }
    }
    if (best_i < 0) break;
    ids[best_i] = best_id;
    ids.erase(ids.begin() + best_i + 1);
  }
  if (bos) ids.insert(ids.begin(), 1);
  return ids;
}

const std::vector<std::string>& round_trip_texts() {
  static const std::vector<std::string> texts = {
      "",
      "a",
      " ",
      "Once upon a time",
      " leading space",
      "trailing space ",
      "many     spaces   inside",
      "\n",
      "line one\nline two\n\n  indented\ttab\r\n",
      "caf\xC3\xA9 na\xC3\xAFve \xC3\xBC"
      "ber",                                   // é ï ü
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E",  // 日本語
      "smile \xF0\x9F\x99\x82!",               // 🙂
      "\xF0\x9F\x99\x82\xF0\x9F\x99\x82 x",    // two emoji at the start
      "Lily's mom said, \"Lily, let's go to the park.\"",
      "<0x41> <s> </s> <unk>",  // special-looking text is plain text
      "numbers 0123456789 and symbols ~!@#$%^&*()_+{}|:<>?",
  };
  return texts;
}

// Random valid UTF-8: ASCII (weighted towards letters and spaces) and some multi-byte chars.
std::string random_utf8(std::mt19937& rng, size_t n_chars) {
  static const char* kMulti[] = {"\xC3\xA9",         "\xC3\xBC",     "\xCE\xB1",
                                 "\xD0\xB6",         "\xE6\x97\xA5", "\xE2\x96\x81",
                                 "\xF0\x9F\x99\x82", "\xE2\x82\xAC"};
  static const std::string kAscii = "abcdefghijklmnopqrstuvwxyzABCDEFG     ,.!'\n\t0123456789";
  std::string s;
  for (size_t i = 0; i < n_chars; ++i) {
    if (rng() % 8 == 0) {
      s += kMulti[rng() % (sizeof(kMulti) / sizeof(kMulti[0]))];
    } else {
      s.push_back(kAscii[rng() % kAscii.size()]);
    }
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// llama2.c tokenizer.bin

TEST(TokenizerLlama2c, Tok512OnceUponATime) {
  REQUIRE_FILE(tok512_path());
  auto tok = load_llama2c(tok512_path(), 512);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->n_vocab(), 512);
  EXPECT_STREQ(tok->kind(), "llama2c");
  EXPECT_EQ(tok->bos(), 1);
  EXPECT_EQ(tok->eos(), 2);
  EXPECT_TRUE(tok->add_bos_default());
  // run.c: " Once", " upon", " a", " time".
  const std::vector<int32_t> ids = tok->encode("Once upon a time", true);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok->piece(403), " Once");
  EXPECT_EQ(tok->piece(378), " time");
  EXPECT_EQ(ids, runc_encode(*tok, "Once upon a time", true));
  EXPECT_EQ(tok->decode(ids), "Once upon a time");
  EXPECT_EQ(tok->encode("Once upon a time", false), (std::vector<int32_t>{403, 407, 261, 378}));

  // The reference generation starts with the prompt, decoded token by token as run.c does.
  const std::string ref = read_file(models_dir() + "/stories260K/reference_greedy_fp32_run.c.txt");
  ASSERT_FALSE(ref.empty());
  const std::vector<int32_t> ref_ids = tok->encode(ref, true);
  EXPECT_EQ(std::vector<int32_t>(ref_ids.begin(), ref_ids.begin() + 5), ids);
  EXPECT_EQ(tok->decode(ref_ids), ref);
}

TEST(TokenizerLlama2c, Tok512MatchesRunCOnManyStrings) {
  REQUIRE_FILE(tok512_path());
  auto tok = load_llama2c(tok512_path(), 512);
  ASSERT_TRUE(tok);
  for (const std::string& s : round_trip_texts()) {
    EXPECT_EQ(tok->encode(s, true), runc_encode(*tok, s, true)) << s;
  }
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 200; ++iter) {
    const std::string s = random_utf8(rng, 1 + rng() % 40);
    ASSERT_EQ(tok->encode(s, true), runc_encode(*tok, s, true)) << s;
  }
  // Byte fallback: 🙂 is not in the 512 vocabulary, so its four bytes become <0xF0> ... (id b+3).
  const std::vector<int32_t> emoji = tok->encode("\xF0\x9F\x99\x82", false);
  ASSERT_GE(emoji.size(), 4u);
  EXPECT_EQ(std::vector<int32_t>(emoji.end() - 4, emoji.end()),
            (std::vector<int32_t>{0xF0 + 3, 0x9F + 3, 0x99 + 3, 0x82 + 3}));
}

TEST(TokenizerLlama2c, Llama2KnownIds) {
  REQUIRE_FILE(llama2_path());
  auto tok = load_llama2c(llama2_path(), 32000);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->n_vocab(), 32000);
  EXPECT_EQ(tok->encode("Hello world", true), (std::vector<int32_t>{1, 15043, 3186}));
  EXPECT_EQ(tok->encode("Once upon a time", true), (std::vector<int32_t>{1, 9038, 2501, 263, 931}));
  // Computed with a direct port of run.c's encode (slow algorithm).
  EXPECT_EQ(tok->encode("h\xC3\xA9llo w\xC3\xB6rld \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E "
                        "\xF0\x9F\x99\x82",
                        true),
            (std::vector<int32_t>{1, 298, 3610, 417, 281, 1340, 430, 29871, 30325, 30346, 30968,
                                  29871, 243, 162, 156, 133}));
  EXPECT_EQ(tok->encode("", true), (std::vector<int32_t>{1}));
  EXPECT_TRUE(tok->encode("", false).empty());
}

TEST(TokenizerLlama2c, RoundTrips) {
  for (const auto& [path, vocab] :
       std::vector<std::pair<std::string, int>>{{tok512_path(), 512}, {llama2_path(), 32000}}) {
    REQUIRE_FILE(path);
    auto tok = load_llama2c(path, vocab);
    ASSERT_TRUE(tok);
    for (const std::string& s : round_trip_texts()) {
      EXPECT_EQ(tok->decode(tok->encode(s, true)), s) << path << ": " << s;
    }
    std::mt19937 rng(99);
    for (int iter = 0; iter < 100; ++iter) {
      const std::string s = random_utf8(rng, rng() % 60);
      ASSERT_EQ(tok->decode(tok->encode(s, true)), s) << path << ": " << s;
    }
  }
}

TEST(TokenizerLlama2c, DecodeTokenRules) {
  REQUIRE_FILE(tok512_path());
  auto tok = load_llama2c(tok512_path(), 512);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->decode_token(1, 403), "Once");     // leading space dropped after BOS
  EXPECT_EQ(tok->decode_token(378, 403), " Once");  // kept elsewhere
  EXPECT_EQ(tok->decode_token(-1, 403), " Once");
  EXPECT_EQ(tok->decode_token(-1, 1), "");  // control tokens
  EXPECT_EQ(tok->decode_token(-1, 2), "");
  EXPECT_EQ(tok->decode_token(-1, 0), "");           // <unk> decodes to nothing
  EXPECT_EQ(tok->decode_token(-1, 0x0A + 3), "\n");  // byte token <0x0A>
  EXPECT_EQ(tok->decode_token(-1, 0xF0 + 3), "\xF0");
  EXPECT_EQ(tok->decode_token(-1, -5), "");
  EXPECT_EQ(tok->decode_token(-1, 512), "");
  EXPECT_EQ(tok->piece(1), "\n<s>\n");  // as llama2.c's exporter wrote it
}

TEST(TokenizerLlama2c, LongPromptIsFast) {
  REQUIRE_FILE(llama2_path());
  auto tok = load_llama2c(llama2_path(), 32000);
  ASSERT_TRUE(tok);
  std::mt19937 rng(7);
  std::string text;
  while (text.size() < 100000) text += random_utf8(rng, 100);
  text += std::string(2000, ' ');  // a long run of spaces
  text += std::string(2000, 'a');
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok->encode(text, true);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_LT(secs, 5.0) << "encoding " << text.size() << " bytes took " << secs << " s";
}

TEST(TokenizerLlama2c, Errors) {
  EXPECT_EQ(tokenizer_from_llama2c("/nonexistent/tok.bin", 512).status().code(),
            StatusCode::kNotFound);
  REQUIRE_FILE(tok512_path());
  EXPECT_EQ(tokenizer_from_llama2c(tok512_path(), 0).status().code(), StatusCode::kInvalidArgument);
  // More tokens asked for than the file holds.
  {
    const Status st = tokenizer_from_llama2c(tok512_path(), 513).status();
    EXPECT_EQ(st.code(), StatusCode::kCorrupt);
    EXPECT_NE(st.message().find(tok512_path()), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("token 512"), std::string::npos) << st.message();
  }
  const std::string good = read_file(tok512_path());
  ASSERT_GT(good.size(), 100u);
  // Truncated in the middle of a token.
  {
    const std::string path = temp_path("trunc.bin");
    write_file(path, good.substr(0, good.size() - 3));
    const Status st = tokenizer_from_llama2c(path, 512).status();
    EXPECT_EQ(st.code(), StatusCode::kCorrupt);
    EXPECT_NE(st.message().find(path), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("token 511"), std::string::npos) << st.message();
    std::remove(path.c_str());
  }
  // Absurd length of token 0 (offset 4 + 4 for the score).
  for (int32_t bad_len : {-1, 1 << 30}) {
    std::string bytes = good;
    std::memcpy(bytes.data() + 8, &bad_len, 4);
    const std::string path = temp_path("badlen.bin");
    write_file(path, bytes);
    const Status st = tokenizer_from_llama2c(path, 512).status();
    EXPECT_EQ(st.code(), StatusCode::kCorrupt) << bad_len;
    EXPECT_NE(st.message().find("token 0"), std::string::npos) << st.message();
    std::remove(path.c_str());
  }
  // Too short for the header.
  {
    const std::string path = temp_path("short.bin");
    write_file(path, "ab");
    EXPECT_EQ(tokenizer_from_llama2c(path, 512).status().code(), StatusCode::kCorrupt);
    std::remove(path.c_str());
  }
}

// ---------------------------------------------------------------------------------------------
// GGUF "llama"

TEST(TokenizerGguf, Stories260KMatchesTok512) {
  REQUIRE_FILE(stories_gguf_path());
  REQUIRE_FILE(tok512_path());
  auto gguf = GgufFile::open(stories_gguf_path());
  ASSERT_TRUE(gguf.is_ok()) << gguf.status().to_string();
  auto r = tokenizer_from_gguf(**gguf);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const Tokenizer& tok = **r;
  auto bin = load_llama2c(tok512_path(), 512);
  ASSERT_TRUE(bin);
  EXPECT_STREQ(tok.kind(), "llama");
  EXPECT_EQ(tok.n_vocab(), 512);
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_EQ(tok.eos(), 2);
  EXPECT_EQ(tok.encode("Once upon a time", true), (std::vector<int32_t>{1, 403, 407, 261, 378}));
  for (const std::string& s : round_trip_texts()) {
    const std::vector<int32_t> ids = tok.encode(s, true);
    EXPECT_EQ(ids, bin->encode(s, true)) << s;
    EXPECT_EQ(tok.decode(ids), s) << s;
  }
  std::mt19937 rng(5);
  for (int iter = 0; iter < 100; ++iter) {
    const std::string s = random_utf8(rng, rng() % 50);
    // A literal U+2581 in the text reads as a space with a GGUF vocabulary (as in SentencePiece
    // and llama.cpp), but as an ordinary character with tokenizer.bin (pieces hold real spaces).
    if (s.find(kSpmSpaceSymbol) != std::string::npos) continue;
    ASSERT_EQ(tok.encode(s, true), bin->encode(s, true)) << s;
  }
  EXPECT_EQ(tok.encode("a\xE2\x96\x81"
                       "b",
                       false),
            tok.encode("a b", false));
  for (int32_t id = 0; id < 512; ++id) {
    EXPECT_EQ(tok.decode_token(7, id), bin->decode_token(7, id)) << id;
    EXPECT_EQ(tok.decode_token(1, id), bin->decode_token(1, id)) << id;
  }
}

struct SmallSpmVocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> types;
};

// <unk> <s> </s>, then ▁ a b c ▁a ab bc abc
SmallSpmVocab small_spm_vocab() {
  const std::string sp(kSpmSpaceSymbol);
  SmallSpmVocab v;
  v.pieces = {"<unk>", "<s>", "</s>", sp, "a", "b", "c", sp + "a", "ab", "bc", "abc"};
  v.scores = {0, 0, 0, -1, -2, -3, -4, -5, -6, -7, -8};
  v.types = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  return v;
}

void write_spm_gguf(const std::string& path, const SmallSpmVocab& v,
                    const std::function<void(GgufWriter&)>& extra) {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string_array("tokenizer.ggml.tokens", v.pieces);
  w.set_f32_array("tokenizer.ggml.scores", v.scores);
  w.set_i32_array("tokenizer.ggml.token_type", v.types);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  if (extra) extra(w);
  ASSERT_TRUE(w.write(path).is_ok());
}

Status load_gguf_tokenizer(const std::string& path) {
  auto g = GgufFile::open(path);
  if (!g) return g.status();
  return tokenizer_from_gguf(**g).status();
}

TEST(TokenizerGguf, SmallVocabAndDefaults) {
  const std::string path = temp_path("spm.gguf");
  write_spm_gguf(path, small_spm_vocab(), nullptr);
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  auto r = tokenizer_from_gguf(**g);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const Tokenizer& tok = **r;
  EXPECT_TRUE(tok.add_bos_default());
  // "▁ab c": pairs ▁a (-5) and ab (-6), bc (-7): ▁a wins, then "▁a" "b" "▁" "c".
  EXPECT_EQ(tok.encode("ab c", true), (std::vector<int32_t>{1, 7, 5, 3, 6}));
  EXPECT_EQ(tok.decode(tok.encode("ab c", true)), "ab c");
  std::remove(path.c_str());
}

TEST(TokenizerGguf, Errors) {
  const std::string path = temp_path("bad.gguf");
  const SmallSpmVocab v = small_spm_vocab();
  auto expect = [&](StatusCode code, const std::string& key,
                    const std::function<void(GgufWriter&)>& extra, const SmallSpmVocab& vv) {
    write_spm_gguf(path, vv, extra);
    const Status st = load_gguf_tokenizer(path);
    EXPECT_EQ(st.code(), code) << st.to_string();
    EXPECT_NE(st.message().find(path), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(key), std::string::npos) << st.message();
  };
  expect(
      StatusCode::kUnsupported, "bert",
      [](GgufWriter& w) { w.set_string("tokenizer.ggml.model", "bert"); }, v);
  expect(
      StatusCode::kNotFound, "tokenizer.ggml.model",
      [](GgufWriter& w) { w.set_string("tokenizer.ggml.model", "none"); }, v);
  expect(
      StatusCode::kCorrupt, "tokenizer.ggml.bos_token_id",
      [](GgufWriter& w) { w.set_u32("tokenizer.ggml.bos_token_id", 11); }, v);
  expect(
      StatusCode::kCorrupt, "tokenizer.ggml.unknown_token_id",
      [](GgufWriter& w) { w.set_i32("tokenizer.ggml.unknown_token_id", -1); }, v);
  SmallSpmVocab short_scores = v;
  short_scores.scores.pop_back();
  expect(StatusCode::kCorrupt, "tokenizer.ggml.scores", nullptr, short_scores);
  SmallSpmVocab short_types = v;
  short_types.types.push_back(1);
  expect(StatusCode::kCorrupt, "tokenizer.ggml.token_type", nullptr, short_types);
  SmallSpmVocab bad_type = v;
  bad_type.types[4] = 9;
  expect(StatusCode::kCorrupt, "tokenizer.ggml.token_type", nullptr, bad_type);
  expect(
      StatusCode::kInvalidArgument, "tokenizer.ggml.scores",
      [](GgufWriter& w) { w.set_string("tokenizer.ggml.scores", "x"); }, v);

  // No tokenizer.ggml.model at all.
  {
    GgufWriter w;
    w.set_string("general.architecture", "llama");
    ASSERT_TRUE(w.write(path).is_ok());
    const Status st = load_gguf_tokenizer(path);
    EXPECT_EQ(st.code(), StatusCode::kNotFound);
    EXPECT_NE(st.message().find("tokenizer.ggml.model"), std::string::npos);
  }
  // No tokens.
  {
    GgufWriter w;
    w.set_string("tokenizer.ggml.model", "llama");
    ASSERT_TRUE(w.write(path).is_ok());
    const Status st = load_gguf_tokenizer(path);
    EXPECT_EQ(st.code(), StatusCode::kNotFound);
    EXPECT_NE(st.message().find("tokenizer.ggml.tokens"), std::string::npos);
  }
  std::remove(path.c_str());
}

// ---------------------------------------------------------------------------------------------
// SpmTokenizer from vectors

TEST(TokenizerSpm, MergesByScoreLeftmostOnTies) {
  SmallSpmVocab v = small_spm_vocab();
  SpmOptions opts;
  opts.add_space_prefix = false;
  {
    SpmTokenizer tok(v.pieces, v.scores, v.types, opts);
    // ab (-6) beats bc (-7); then "ab"+"c" = abc.
    EXPECT_EQ(tok.encode("abc", false), (std::vector<int32_t>{10}));
    EXPECT_EQ(tok.encode("bc", false), (std::vector<int32_t>{9}));
  }
  {
    // bc scores higher than ab (and abc is gone): "a" "bc".
    SmallSpmVocab w = v;
    w.scores[9] = -1;  // bc
    w.pieces[10] = "xyz";
    SpmTokenizer tok(w.pieces, w.scores, w.types, opts);
    EXPECT_EQ(tok.encode("abc", false), (std::vector<int32_t>{4, 9}));
  }
  {
    // Equal scores: the leftmost pair merges first. "aaa" with "aa": (aa)a.
    SpmTokenizer tok({"<unk>", "<s>", "</s>", "a", "aa"}, {0, 0, 0, -1, -1}, {2, 3, 3, 1, 1}, opts);
    EXPECT_EQ(tok.encode("aaa", false), (std::vector<int32_t>{4, 3}));
    EXPECT_EQ(tok.encode("aaaa", false), (std::vector<int32_t>{4, 4}));
  }
}

TEST(TokenizerSpm, ByteFallbackAndUnknown) {
  SmallSpmVocab v = small_spm_vocab();
  {
    // No byte pieces: unknown characters map to <unk>, one per byte.
    SpmTokenizer tok(v.pieces, v.scores, v.types, SpmOptions{});
    EXPECT_EQ(tok.encode("a\xC3\xA9", true), (std::vector<int32_t>{1, 7, 0, 0}));
    EXPECT_EQ(tok.decode(tok.encode("a\xC3\xA9", true)), "a");  // <unk> decodes to ""
  }
  {
    SmallSpmVocab w = v;
    w.pieces.push_back("<0xC3>");
    w.pieces.push_back("<0xa9>");  // lower-case hex, type left as normal: still a byte piece
    w.scores.push_back(0);
    w.scores.push_back(0);
    w.types.push_back(6);
    w.types.push_back(1);
    SpmTokenizer tok(w.pieces, w.scores, w.types, SpmOptions{});
    EXPECT_EQ(tok.encode("a\xC3\xA9", true), (std::vector<int32_t>{1, 7, 11, 12}));
    EXPECT_EQ(tok.decode(tok.encode("a\xC3\xA9", true)), "a\xC3\xA9");
    EXPECT_EQ(tok.token_type(12), token_type::kByte);
  }
}

TEST(TokenizerSpm, SpacePrefixAndSpecialPieces) {
  SmallSpmVocab v = small_spm_vocab();
  v.pieces.push_back("ca");  // user-defined: never produced from text
  v.scores.push_back(100);
  v.types.push_back(4);
  SpmOptions opts;
  opts.add_space_prefix = false;
  SpmTokenizer tok(v.pieces, v.scores, v.types, opts);
  EXPECT_EQ(tok.encode("ca", false), (std::vector<int32_t>{6, 4}));
  EXPECT_EQ(tok.encode(" a", true), (std::vector<int32_t>{1, 7}));
  // Without a dummy prefix, decoding keeps the space after BOS.
  EXPECT_EQ(tok.decode(tok.encode(" a", true)), " a");
  EXPECT_EQ(tok.decode_token(-1, 11), "ca");  // user-defined: verbatim
  EXPECT_EQ(tok.decode_token(-1, 1), "");
  EXPECT_EQ(tok.encode("<s>", false), (std::vector<int32_t>{0, 0, 0}));  // not matched as BOS

  SpmTokenizer with_prefix(v.pieces, v.scores, v.types, SpmOptions{});
  EXPECT_EQ(with_prefix.encode("a", true), (std::vector<int32_t>{1, 7}));
  EXPECT_EQ(with_prefix.decode(with_prefix.encode(" a", true)), " a");
  EXPECT_EQ(with_prefix.decode_token(1, 7), "a");
}

}  // namespace
}  // namespace kvserve
