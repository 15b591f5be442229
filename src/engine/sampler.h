// Token sampling: greedy, temperature, top-k, top-p, min-p, and the repetition, frequency and
// presence penalties, with a seeded generator of our own so the same seed gives the same tokens
// on every platform.
//
// Order (as vLLM): the penalties on the raw logits (repetition over the recent history,
// frequency and presence over the tokens this sampler has produced, as OpenAI defines them:
// logit -= frequency * count + presence * (count > 0)), then the logit bias; greedy argmax if
// temperature == 0;
// else logits / temperature, softmax, then top-k, top-p and min-p filters, renormalise, draw.
// Cost: one vectorised pass over the vocabulary; only the tokens a filter can keep are sorted,
// and with no filter none are (a full sort of 50K logits per token would cost milliseconds).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/cpu_features.h"
#include "core/status.h"

namespace kvserve {

struct SamplingParams {
  float temperature = 0.0f;        // 0 = greedy
  int top_k = 0;                   // 0 = off
  float top_p = 1.0f;              // 1 = off
  float min_p = 0.0f;              // 0 = off; keeps tokens with p >= min_p * p_max
  float repeat_penalty = 1.0f;     // 1 = off; divides positive logits, multiplies negative ones
  int repeat_last_n = 64;          // how many recent tokens the penalty looks at (-1 = all)
  float frequency_penalty = 0.0f;  // [-2, 2], 0 = off: per time a token was generated
  float presence_penalty = 0.0f;   // [-2, 2], 0 = off: once a token was generated at all
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token, added to its logit) [-100, 100]
  uint64_t seed = 0;

  Status validate() const;  // invalid_argument naming the first out-of-range field
};

// xoshiro256** seeded through splitmix64.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  float uniform();  // [0, 1) with 24 bits

 private:
  uint64_t s_[4];
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Picks the next token from logits[n_vocab]; history is every token of the sequence so far.
  // Modifies logits in place (penalties). Deterministic for a given seed and call sequence. The
  // token returned counts as generated (frequency and presence penalties).
  int32_t sample(float* logits, int n_vocab, const std::vector<int32_t>& history);

  const SamplingParams& params() const { return params_; }

 private:
  // sample() without counting the token.
  int32_t pick(float* logits, int n_vocab, const std::vector<int32_t>& history);
  // Repetition, frequency and presence penalties, then logit_bias, in place.
  void apply_penalties(float* logits, int n_vocab, const std::vector<int32_t>& history) const;
  // cand_ = what top-k (keep), top-p and min-p leave of prob[n_vocab], most likely first.
  void keep_candidates(const float* prob, int n_vocab, size_t keep);
  // One of cand_, in proportion to its probability.
  int32_t draw_candidates();
  // One token from the whole distribution prob[n_vocab], walked in token order.
  int32_t draw_all(const float* prob, int n_vocab);

  SamplingParams params_;
  Rng rng_;
  std::unordered_map<int32_t, int> generated_;   // token -> times returned by sample()
  std::vector<std::pair<float, int32_t>> cand_;  // scratch: (prob, id)
  std::vector<float> span_sum_;                  // scratch: draw_all's span sums
};

}  // namespace kvserve
