// Generator::score: teacher-forced next-token logits through the generation code path, for
// quality measurements of KV types and policies (`kvserve bench kv-quality`).
#include "engine/generator.h"

namespace kvserve {

Status Generator::score(const std::vector<int32_t>& tokens,
                        const std::function<void(int pos, const float* logits)>& on_logits) {
  // The limits of a prompt of these tokens (ids in range, context), as generate() applies them.
  GenerateRequest req;
  req.prompt = tokens;
  req.n_predict = 0;
  KV_RETURN_IF_ERROR(validate(req));
  if (tokens.size() < 2) return invalid_argument("scoring needs at least 2 tokens");

  kv_->reset_peak();
  const SeqId seq = next_seq_++;
  // A private sequence: scores must not depend on what earlier requests left in the cache.
  KV_RETURN_IF_ERROR(kv_->add_sequence(seq));
  SeqGuard guard(*kv_, seq);
  std::vector<int32_t> prefix;  // tokens[0..pos]
  prefix.reserve(tokens.size());
  std::vector<float> logits;  // [n_vocab]
  const int n = static_cast<int>(tokens.size());
  for (int pos = 0; pos + 1 < n; ++pos) {
    // One token per step, as decode() feeds generated tokens.
    prefix.push_back(tokens[pos]);
    KV_RETURN_IF_ERROR(prefill(seq, prefix, pos, logits, /*cacheable=*/false));
    on_logits(pos, logits.data());
  }
  return Status::ok();
}

}  // namespace kvserve
