// Tokenizers: SentencePiece-style ("llama", merges by score with byte fallback), byte-level BPE
// ("gpt2", merges by rank), and the llama2.c tokenizer.bin (SentencePiece-style).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace kvserve {

class GgufFile;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text to ids; prepends BOS when add_bos. Never fails: unknown bytes use byte fallback or <unk>.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos) const = 0;
  // The bytes of one token as it appears after `prev` (SentencePiece drops the leading space of
  // the first piece after BOS, as llama2.c's run.c does). Byte tokens give their raw byte.
  virtual std::string decode_token(int32_t prev, int32_t token) const = 0;
  // Concatenation of decode_token over ids (prev of ids[0] is `prev`).
  std::string decode(const std::vector<int32_t>& ids, int32_t prev = -1) const;

  virtual int32_t n_vocab() const = 0;
  virtual std::string_view piece(int32_t token) const = 0;  // raw vocabulary string
  int32_t bos() const { return bos_; }
  int32_t eos() const { return eos_; }
  bool add_bos_default() const { return add_bos_; }
  virtual const char* kind() const = 0;  // "llama", "gpt2", "llama2c"

 protected:
  int32_t bos_ = 1, eos_ = 2;
  bool add_bos_ = true;
};

// From GGUF metadata tokenizer.ggml.* (model "llama" or "gpt2").
Result<std::unique_ptr<Tokenizer>> tokenizer_from_gguf(const GgufFile& gguf);
// From a llama2.c tokenizer.bin. vocab_size is taken from the model header.
Result<std::unique_ptr<Tokenizer>> tokenizer_from_llama2c(const std::string& path, int vocab_size);

}  // namespace kvserve
