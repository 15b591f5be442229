// SentencePiece-style tokenizer ("llama" in GGUF, and llama2.c's tokenizer.bin): the text is split
// into UTF-8 characters (byte fallback for characters not in the vocabulary), then the adjacent
// pair whose concatenation is a piece with the highest score is merged, leftmost first on ties,
// until no merge applies. This reproduces llama2.c run.c's encode() and llama.cpp's SPM tokenizer.
// Also holds the token-type constants shared by all tokenizers.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/tokenizer.h"

namespace kvserve {

// GGUF tokenizer.ggml.token_type values (0 is treated like kNormal).
namespace token_type {
inline constexpr int32_t kNormal = 1;
inline constexpr int32_t kUnknown = 2;
inline constexpr int32_t kControl = 3;
inline constexpr int32_t kUserDefined = 4;
inline constexpr int32_t kUnused = 5;
inline constexpr int32_t kByte = 6;
}  // namespace token_type

// "<0xXX>" (exactly 6 characters, hex digits in either case) -> true and the byte value.
bool parse_byte_piece(std::string_view piece, uint8_t* byte);

// U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's stand-in for a space inside pieces.
inline constexpr std::string_view kSpmSpaceSymbol = "\xE2\x96\x81";

struct SpmOptions {
  int32_t bos = 1, eos = 2, unk = 0;  // -1: none
  bool add_bos = true;
  // Prepend one space to non-empty text before encoding (SentencePiece's dummy prefix); decoding
  // then drops the leading space of the first piece after BOS.
  bool add_space_prefix = true;
  // How a space is written inside pieces: U+2581 in GGUF / SentencePiece vocabularies, a plain
  // " " in llama2.c tokenizer.bin files (its exporter already replaced U+2581 by spaces).
  std::string space_symbol = std::string(kSpmSpaceSymbol);
  const char* kind = "llama";  // returned by kind(); must be a string literal
};

class SpmTokenizer final : public Tokenizer {
 public:
  // scores and types may be shorter than pieces (missing entries: score 0, type normal). Pieces of
  // the form "<0xXX>" with a normal (or 0) type are treated as byte tokens. Ids out of range are
  // treated as absent (-1). Never fails; validate inputs before (tokenizer_from_gguf does).
  SpmTokenizer(std::vector<std::string> pieces, std::vector<float> scores,
               std::vector<int32_t> types, SpmOptions opts);
  SpmTokenizer(const SpmTokenizer&) = delete;  // the lookup table points into pieces_
  SpmTokenizer& operator=(const SpmTokenizer&) = delete;

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override;
  // Control, unknown and unused tokens decode to ""; byte tokens to their raw byte; user-defined
  // tokens to their piece verbatim; normal tokens to their piece with the space symbol replaced
  // by ' ', minus one leading space when prev is BOS and add_space_prefix is set.
  std::string decode_token(int32_t prev, int32_t token) const override;
  int32_t n_vocab() const override { return static_cast<int32_t>(pieces_.size()); }
  std::string_view piece(int32_t token) const override;
  const char* kind() const override { return kind_; }

  int32_t unk() const { return unk_; }
  int32_t token_type(int32_t token) const;
  float score(int32_t token) const;
  bool add_space_prefix() const { return add_space_prefix_; }
  // Id of the piece that text matching may produce (normal tokens only), or -1.
  int32_t find_piece(std::string_view piece) const;

 private:
  struct Symbol;  // a span of the normalized text and its token (tokenizer_spm.cpp)
  // text with the space prefix (add_space_prefix_) and each ' ' written as space_.
  std::string normalize(std::string_view text) const;
  // norm (non-empty) as linked symbols, one per UTF-8 character in the vocabulary, else one per
  // byte (its byte token, or unk).
  std::vector<Symbol> split_chars(const std::string& norm) const;
  // Merges the adjacent pair of highest score (leftmost on ties) of syms until none applies.
  void merge_symbols(const std::string& norm, std::vector<Symbol>& syms) const;

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<int32_t> types_;
  std::unordered_map<std::string_view, int32_t> matchable_;  // normal pieces -> id
  std::array<int32_t, 256> byte_tokens_{};
  int32_t unk_ = 0;
  bool add_space_prefix_ = true;
  std::string space_;
  const char* kind_ = "llama";
  size_t max_piece_len_ = 0;
};

}  // namespace kvserve
