#include "model/tokenizer.h"

namespace kvserve {

std::string Tokenizer::decode(const std::vector<int32_t>& ids, int32_t prev) const {
  std::string out;
  for (int32_t id : ids) {
    out += decode_token(prev, id);
    prev = id;
  }
  return out;
}

}  // namespace kvserve
