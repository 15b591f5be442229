// Byte-level BPE tokenizer ("gpt2" in GGUF): the text is split by a GPT-2 / Llama 3 style
// pre-tokenizer, each piece's bytes are mapped to GPT-2's printable byte alphabet, and the pair
// with the lowest merge rank is merged (leftmost first on ties) until no merge applies.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/tokenizer.h"

namespace kvserve {

enum class BpePreTokenizer {
  kGpt2,             // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kLlama3,           // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
                     //  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kQwen2,            // as kLlama3 with single digits (\p{N})
  kGpt2SplitDigits,  // every digit alone, then kGpt2 on the text between (smollm, starcoder)
};

// tokenizer.ggml.pre -> pre-tokenizer. "default", "gpt2" and unknown names give kGpt2;
// "llama3", "llama-bpe", "llama-v3", "dbrx", "smaug-bpe", "falcon3", ... give kLlama3; "qwen2",
// "deepseek-r1-qwen" give kQwen2; "smollm", "starcoder", "refact" give kGpt2SplitDigits.
BpePreTokenizer bpe_pre_tokenizer_from_name(std::string_view name);

// Splits text into pre-tokens (views into text; their concatenation is text). Bytes that are not
// valid UTF-8 are kept, each as a one-byte character of no Unicode class.
std::vector<std::string_view> bpe_pretokenize(std::string_view text, BpePreTokenizer pre);

// GPT-2's byte <-> printable character mapping: bytes 33..126, 161..172, 174..255 map to the code
// point of the same value, the other 68 bytes to 256, 257, ... in byte order (space -> U+0120 'Ġ').
uint32_t bpe_byte_to_codepoint(uint8_t b);
// Inverse; -1 for code points outside the alphabet.
int bpe_codepoint_to_byte(uint32_t cp);
// Bytes -> UTF-8 string in the byte alphabet, and back (characters outside the alphabet are kept
// as their UTF-8 bytes).
std::string bpe_bytes_to_symbols(std::string_view bytes);
std::string bpe_symbols_to_bytes(std::string_view symbols);

struct BpeOptions {
  int32_t bos = -1, eos = -1, unk = -1;  // -1: none
  bool add_bos = false;
  std::string pre = "default";  // tokenizer.ggml.pre
};

class BpeTokenizer final : public Tokenizer {
 public:
  // tokens are in the byte alphabet; merges are "left right" (rank = index; a malformed entry is
  // skipped); types may be shorter than tokens (missing: normal). Never fails.
  BpeTokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
               std::vector<int32_t> types, BpeOptions opts);
  BpeTokenizer(const BpeTokenizer&) = delete;  // the lookup table points into tokens_
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  // Control/user-defined/unused tokens are never produced from text. A merged symbol missing from
  // the vocabulary falls back to one token per character (then unk, else it is dropped).
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override;
  // Control, unknown and unused tokens decode to ""; user-defined tokens to their text verbatim;
  // others through the byte alphabet back to raw bytes. prev is not used.
  std::string decode_token(int32_t prev, int32_t token) const override;
  int32_t n_vocab() const override { return static_cast<int32_t>(tokens_.size()); }
  std::string_view piece(int32_t token) const override;
  const char* kind() const override { return "gpt2"; }

  BpePreTokenizer pre_tokenizer() const { return pre_; }
  int32_t token_type(int32_t token) const;
  // Rank of merging left+right, or -1.
  int32_t merge_rank(std::string_view left, std::string_view right) const;
  int32_t find_token(std::string_view text) const;  // matchable tokens only; -1 if absent

 private:
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  std::vector<std::string> tokens_;
  std::vector<int32_t> types_;
  std::unordered_map<std::string_view, int32_t> matchable_;
  std::unordered_map<std::string, int32_t> ranks_;  // left + '\0' + right -> rank
  int32_t unk_ = -1;
  BpePreTokenizer pre_ = BpePreTokenizer::kGpt2;
  bool ignore_merges_ = false;  // llama3: a pre-token that is a whole token is taken as is
};

}  // namespace kvserve
