#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace kvserve {

Status SamplingParams::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    return invalid_argument("temperature must be >= 0");
  if (top_k < 0) return invalid_argument("top_k must be >= 0");
  if (!(top_p > 0.0f && top_p <= 1.0f)) return invalid_argument("top_p must be in (0, 1]");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return invalid_argument("min_p must be in [0, 1]");
  if (!(repeat_penalty > 0.0f) || !std::isfinite(repeat_penalty))
    return invalid_argument("repetition penalty must be > 0");
  return Status::ok();
}

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
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

float Rng::uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }

int32_t argmax(const float* x, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

int32_t Sampler::sample(float* logits, int n_vocab, const std::vector<int32_t>& history) {
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
  if (p.temperature == 0.0f) return argmax(logits, n_vocab);

  // Softmax of logits / T over all tokens, then sort by probability for the filters.
  const float mx = logits[argmax(logits, n_vocab)];
  cand_.resize(n_vocab);
  double sum = 0;
  for (int i = 0; i < n_vocab; ++i) {
    const float e = std::exp((logits[i] - mx) / p.temperature);
    cand_[i] = {e, i};
    sum += e;
  }
  size_t keep = cand_.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < keep) keep = p.top_k;
  // Stable order: probability descending, then id ascending, so ties never depend on the sort.
  auto by_prob = [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  if (keep < cand_.size()) {
    std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), by_prob);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_prob);
  }
  cand_.resize(keep);
  const float inv = static_cast<float>(1.0 / sum);
  for (auto& c : cand_) c.first *= inv;

  if (p.top_p < 1.0f) {
    float cum = 0;
    size_t n = 0;
    while (n < cand_.size()) {
      cum += cand_[n++].first;
      if (cum >= p.top_p) break;
    }
    cand_.resize(std::max<size_t>(1, n));
  }
  if (p.min_p > 0.0f) {
    const float floor = p.min_p * cand_[0].first;
    size_t n = 1;
    while (n < cand_.size() && cand_[n].first >= floor) ++n;
    cand_.resize(n);
  }
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

}  // namespace kvserve
