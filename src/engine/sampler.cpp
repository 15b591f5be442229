#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "kernels/reduce.h"

namespace kvserve {

Status SamplingParams::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    return invalid_argument("temperature must be >= 0");
  if (top_k < 0) return invalid_argument("top_k must be >= 0");
  if (!(top_p > 0.0f && top_p <= 1.0f)) return invalid_argument("top_p must be in (0, 1]");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return invalid_argument("min_p must be in [0, 1]");
  if (!(repeat_penalty > 0.0f) || !std::isfinite(repeat_penalty))
    return invalid_argument("repetition penalty must be > 0");
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
    return invalid_argument("frequency penalty must be in [-2, 2]");
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
    return invalid_argument("presence penalty must be in [-2, 2]");
  for (const auto& [t, bias] : logit_bias) {
    if (t < 0 || !(bias >= -100.0f && bias <= 100.0f))
      return invalid_argument("logit bias entries need a token id >= 0 and a bias in [-100, 100]");
  }
  return Status::ok();
}

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}
}  // namespace

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) s = splitmix64(seed);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

float Rng::uniform() {
  return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

int32_t Sampler::sample(float* logits, int n_vocab, const std::vector<int32_t>& history) {
  const int32_t t = pick(logits, n_vocab, history);
  if (params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f) ++generated_[t];
  return t;
}

void Sampler::apply_penalties(float* logits, int n_vocab,
                              const std::vector<int32_t>& history) const {
  const SamplingParams& p = params_;
  if (p.repeat_penalty != 1.0f && !history.empty()) {
    const size_t n_hist = history.size();
    const size_t from =
        p.repeat_last_n < 0 ? 0 : n_hist - std::min<size_t>(n_hist, p.repeat_last_n);
    std::unordered_set<int32_t> seen(history.begin() + from, history.end());
    for (int32_t t : seen) {
      if (t < 0 || t >= n_vocab) continue;
      logits[t] = logits[t] > 0 ? logits[t] / p.repeat_penalty : logits[t] * p.repeat_penalty;
    }
  }
  for (const auto& [t, count] : generated_) {
    if (t < 0 || t >= n_vocab) continue;
    logits[t] -= p.frequency_penalty * static_cast<float>(count) + p.presence_penalty;
  }
  for (const auto& [t, bias] : p.logit_bias) {
    if (t >= 0 && t < n_vocab) logits[t] += bias;
  }
}

int32_t Sampler::pick(float* logits, int n_vocab, const std::vector<int32_t>& history) {
  const SamplingParams& p = params_;
  apply_penalties(logits, n_vocab, history);
  if (p.temperature == 0.0f) return kernels::argmax(logits, n_vocab);

  // Softmax of logits / T, in place: probabilities in token order, no copy.
  const float inv_t = 1.0f / p.temperature;
  for (int i = 0; i < n_vocab; ++i) logits[i] *= inv_t;
  const int32_t top = kernels::argmax(logits, n_vocab);
  const float sum = kernels::exp_shift_sum(logits, n_vocab, logits[top]);
  const float inv = 1.0f / sum;
  float* prob = logits;  // [n_vocab]
  for (int i = 0; i < n_vocab; ++i) prob[i] *= inv;

  const size_t keep = p.top_k > 0 && p.top_k < n_vocab ? static_cast<size_t>(p.top_k) : n_vocab;
  if (keep == static_cast<size_t>(n_vocab) && p.top_p >= 1.0f && p.min_p <= 0.0f) {
    return draw_all(prob, n_vocab);  // nothing truncated: no order needed
  }
  keep_candidates(prob, n_vocab, keep);
  return draw_candidates();
}

void Sampler::keep_candidates(const float* prob, int n_vocab, size_t keep) {
  const SamplingParams& p = params_;
  // The filters keep a prefix of the order (probability descending, id ascending), and the
  // shortest of the three prefixes decides. Only the candidates with p >= theta, a prefix of that
  // order, are sorted; theta falls until the kept prefix lies inside them. A peaked
  // distribution sorts a few dozen tokens, not the vocabulary.
  auto by_prob = [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  const float p_max = prob[kernels::argmax(prob, n_vocab)];  // exact, whatever exp's rounding did
  for (int shift = 4;; shift *= 2) {
    const float theta = shift >= 128 ? 0.0f : std::ldexp(p_max, -shift);
    cand_.clear();
    for (int i = 0; i < n_vocab; ++i) {
      if (prob[i] >= theta) cand_.push_back({prob[i], i});
    }
    // The kept prefix ends inside the candidates whatever top-p does: they are every token
    // (theta 0), or top-k ends inside, or min-p does (every other token is below its floor).
    const bool decided = theta == 0.0f || cand_.size() >= keep || p.min_p * p_max >= theta;
    if (!decided) {
      // Only top-p could end inside, if the candidates reach its mass.
      float mass = 0;
      for (const auto& c : cand_) mass += c.first;
      if (p.top_p >= 1.0f || mass < p.top_p) continue;
    }
    if (cand_.size() > keep) {
      std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), by_prob);
      cand_.resize(keep);
    } else {
      std::sort(cand_.begin(), cand_.end(), by_prob);
    }
    size_t n = cand_.size();
    if (p.top_p < 1.0f) {
      float cum = 0;
      size_t np = 0;
      while (np < n) {
        cum += cand_[np++].first;
        if (cum >= p.top_p) break;
      }
      // Not reached inside a strict prefix of the order: the kept prefix may go on past it.
      if (cum < p.top_p && !decided) continue;
      n = std::max<size_t>(1, np);
    }
    if (p.min_p > 0.0f) {
      const float floor = p.min_p * cand_[0].first;
      size_t nm = 1;
      while (nm < n && cand_[nm].first >= floor) ++nm;
      n = nm;
    }
    cand_.resize(n);
    return;
  }
}

int32_t Sampler::draw_candidates() {
  float total = 0;
  for (const auto& c : cand_) total += c.first;
  const float r = rng_.uniform() * total;
  float cum = 0;
  for (const auto& c : cand_) {
    cum += c.first;
    if (r < cum) return c.second;
  }
  return cand_.back().second;
}

int32_t Sampler::draw_all(const float* prob, int n_vocab) {
  // Two levels: sums of spans of kSpan, then the tokens of the span where r falls. Rounding can
  // leave r just past the last sum: then the last token with any probability.
  constexpr int kSpan = 256;
  float total = 0;
  span_sum_.clear();
  for (int b = 0; b < n_vocab; b += kSpan) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int e = std::min(n_vocab, b + kSpan);
    int i = b;
    for (; i + 8 <= e; i += 8) {
      for (int j = 0; j < 8; ++j) acc[j] += prob[i + j];
    }
    for (; i < e; ++i) acc[0] += prob[i];
    const float s =
        ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    span_sum_.push_back(s);
    total += s;
  }
  const float r = rng_.uniform() * total;
  float cum = 0;
  for (size_t k = 0; k < span_sum_.size(); ++k) {
    if (r >= cum + span_sum_[k] && k + 1 < span_sum_.size()) {
      cum += span_sum_[k];
      continue;
    }
    const int b = static_cast<int>(k) * kSpan, e = std::min(n_vocab, b + kSpan);
    for (int i = b; i < e; ++i) {
      cum += prob[i];
      if (r < cum) return i;
    }
    break;
  }
  int32_t last = n_vocab - 1;
  while (last > 0 && !(prob[last] > 0.0f)) --last;
  return last;
}

}  // namespace kvserve
