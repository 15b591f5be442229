#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

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
