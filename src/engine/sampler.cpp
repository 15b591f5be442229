#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "kernels/attention.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define KVSERVE_SAMPLER_X86 1
#endif

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

namespace {

// The reference loop; continues a scan of x[0, n) from index `from` whose best so far is `best`.
int32_t argmax_scalar(const float* x, int n, int from, int32_t best) {
  for (int i = from; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

#if KVSERVE_SAMPLER_X86
// The SIMD scans keep w lanes (several registers side by side): lane j sees x[j], x[j + w],
// x[j + 2w], ... and keeps the largest (ordered > : NaN never replaces) with the round r in
// which it first saw it, i.e. element r * w + j. The first index of the maximum of the scanned
// part is then the smallest such index among the lanes holding the maximum, as in the loop.
// A lane still at -inf saw only -inf and NaN and is never picked (not > m, nor at an index
// < 0); if all are, every scanned element is -inf or NaN and, x[0] not being NaN, the answer
// is 0. The caller finishes the tail with the loop.
int32_t reduce_lanes(const float* val, const int32_t* round, int w) {
  float m = -INFINITY;
  int32_t best = 0;
  for (int j = 0; j < w; ++j) {
    const int32_t i = round[j] * w + j;
    if (val[j] > m || (val[j] == m && i < best)) {
      m = val[j];
      best = i;
    }
  }
  return best;
}

// Requires n >= 64 and x[0] not NaN.
__attribute__((target("avx512f,avx512bw,avx512vl"))) int32_t argmax_avx512(const float* x, int n) {
  constexpr int kAcc = 4, kW = 16 * kAcc;
  __m512 best[kAcc];
  __m512i round[kAcc];
  for (int k = 0; k < kAcc; ++k) {
    best[k] = _mm512_set1_ps(-INFINITY);
    round[k] = _mm512_setzero_si512();
  }
  __m512i r = _mm512_setzero_si512();
  const __m512i one = _mm512_set1_epi32(1);
  int i = 0;
  for (; i + kW <= n; i += kW) {
    for (int k = 0; k < kAcc; ++k) {
      const __m512 v = _mm512_loadu_ps(x + i + 16 * k);
      const __mmask16 gt = _mm512_cmp_ps_mask(v, best[k], _CMP_GT_OQ);
      best[k] = _mm512_mask_mov_ps(best[k], gt, v);
      round[k] = _mm512_mask_mov_epi32(round[k], gt, r);
    }
    r = _mm512_add_epi32(r, one);
  }
  alignas(64) float val[kW];
  alignas(64) int32_t rnd[kW];
  for (int k = 0; k < kAcc; ++k) {
    _mm512_store_ps(val + 16 * k, best[k]);
    _mm512_store_si512(rnd + 16 * k, round[k]);
  }
  return argmax_scalar(x, n, i, reduce_lanes(val, rnd, kW));
}

// Requires n >= 32 and x[0] not NaN.
__attribute__((target("avx2"))) int32_t argmax_avx2(const float* x, int n) {
  constexpr int kAcc = 4, kW = 8 * kAcc;
  __m256 best[kAcc];
  __m256 round[kAcc];  // int32 rounds, blended as floats
  for (int k = 0; k < kAcc; ++k) {
    best[k] = _mm256_set1_ps(-INFINITY);
    round[k] = _mm256_setzero_ps();
  }
  __m256i r = _mm256_setzero_si256();
  const __m256i one = _mm256_set1_epi32(1);
  int i = 0;
  for (; i + kW <= n; i += kW) {
    const __m256 rf = _mm256_castsi256_ps(r);
    for (int k = 0; k < kAcc; ++k) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * k);
      const __m256 gt = _mm256_cmp_ps(v, best[k], _CMP_GT_OQ);
      best[k] = _mm256_blendv_ps(best[k], v, gt);
      round[k] = _mm256_blendv_ps(round[k], rf, gt);
    }
    r = _mm256_add_epi32(r, one);
  }
  alignas(32) float val[kW];
  alignas(32) int32_t rnd[kW];
  for (int k = 0; k < kAcc; ++k) {
    _mm256_store_ps(val + 8 * k, best[k]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(rnd + 8 * k), _mm256_castps_si256(round[k]));
  }
  return argmax_scalar(x, n, i, reduce_lanes(val, rnd, kW));
}
#endif

}  // namespace

int32_t argmax(const float* x, int n, CpuLevel level) {
  if (n <= 1 || std::isnan(x[0])) return 0;
#if KVSERVE_SAMPLER_X86
  level = std::min(level, cpu_level());
  if (level == CpuLevel::kAvx512 && n >= 64) return argmax_avx512(x, n);
  if (level >= CpuLevel::kAvx2 && n >= 32) return argmax_avx2(x, n);
#endif
  return argmax_scalar(x, n, 1, 0);
}

int32_t argmax(const float* x, int n) {
  return argmax(x, n, cpu_level());
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
  if (p.temperature == 0.0f) return argmax(logits, n_vocab);

  // Softmax of logits / T, in place: probabilities in token order, no copy.
  const float inv_t = 1.0f / p.temperature;
  for (int i = 0; i < n_vocab; ++i) logits[i] *= inv_t;
  const int32_t top = argmax(logits, n_vocab);
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
  const float p_max = prob[argmax(prob, n_vocab)];  // exact, whatever exp's rounding did
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
