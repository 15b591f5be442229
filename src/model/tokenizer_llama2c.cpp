// llama2.c tokenizer.bin: int32 max_token_length, then per token: float32 score, int32 length,
// length bytes (no terminator). Pieces hold real spaces (the exporter replaced U+2581), BOS and
// EOS are stored as "\n<s>\n" and "\n</s>\n", and ids 3..258 are the byte pieces
// "<0x00>".."<0xFF>".

#include <cstring>
#include <fstream>
#include <iterator>

#include "model/tokenizer.h"
#include "model/tokenizer_spm.h"

namespace kvserve {

Result<std::unique_ptr<Tokenizer>> tokenizer_from_llama2c(const std::string& path, int vocab_size) {
  if (vocab_size <= 0) {
    return invalid_argument(path + ": vocab_size must be positive, got " +
                            std::to_string(vocab_size));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found(path + ": cannot open tokenizer file");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return io_error(path + ": read failed");

  size_t pos = 0;
  auto read_i32 = [&](int32_t* v) {
    if (data.size() - pos < 4) return false;
    std::memcpy(v, data.data() + pos, 4);
    pos += 4;
    return true;
  };
  int32_t max_token_length = 0;
  if (!read_i32(&max_token_length)) {
    return corrupt(path + ": truncated header (" + std::to_string(data.size()) + " bytes)");
  }
  if (max_token_length < 0) {
    return corrupt(path + ": negative max_token_length " + std::to_string(max_token_length));
  }

  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> types;
  pieces.reserve(vocab_size);
  scores.reserve(vocab_size);
  types.reserve(vocab_size);
  for (int i = 0; i < vocab_size; ++i) {
    const std::string where =
        path + ": token " + std::to_string(i) + " of " + std::to_string(vocab_size);
    if (data.size() - pos < 8) return corrupt(where + ": file truncated");
    float score = 0;
    std::memcpy(&score, data.data() + pos, 4);
    pos += 4;
    int32_t len = 0;
    (void)read_i32(&len);
    if (len < 0 || static_cast<size_t>(len) > data.size() - pos) {
      return corrupt(where + ": length " + std::to_string(len) + " exceeds the " +
                     std::to_string(data.size() - pos) + " bytes left");
    }
    pieces.emplace_back(data, pos, static_cast<size_t>(len));
    pos += static_cast<size_t>(len);
    scores.push_back(score);
    uint8_t b = 0;
    if (i <= 2) {
      types.push_back(token_type::kControl);  // <unk>, <s>, </s>
    } else if (parse_byte_piece(pieces.back(), &b)) {
      types.push_back(token_type::kByte);
    } else {
      types.push_back(token_type::kNormal);
    }
  }

  SpmOptions opts;
  opts.bos = vocab_size > 1 ? 1 : -1;
  opts.eos = vocab_size > 2 ? 2 : -1;
  opts.unk = 0;
  opts.add_bos = true;
  opts.add_space_prefix = true;
  opts.space_symbol = " ";
  opts.kind = "llama2c";
  return std::unique_ptr<Tokenizer>(std::make_unique<SpmTokenizer>(
      std::move(pieces), std::move(scores), std::move(types), std::move(opts)));
}

}  // namespace kvserve
