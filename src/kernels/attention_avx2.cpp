// avx2 loops of the paged attention kernel (head_dim a multiple of 8). See attention_impl.h.
#include <immintrin.h>

#include "kernels/attention_impl.h"

#define ROUND_NEAREST(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

namespace kvserve::kernels {

namespace {

constexpr int kW = 8;        // floats per vector
constexpr int kMaxChunks = 32;  // head_dim up to 256
constexpr int kHeadGroup = 8;   // query heads accumulated in registers at once

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <DType T>
inline __m256 load_row(const uint8_t* base, int e) {
  if constexpr (T == DType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(base) + e);
  } else if constexpr (T == DType::kF16) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(base) + e;
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(base) + e;
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  }
}

template <DType T>
constexpr size_t kElem = T == DType::kF32 ? 4 : 2;

template <DType T>
void scores_t(const float* q, int n_gqa, const uint8_t* k, int n, int hd, float scale, float* s,
              int s_stride) {
  const int nc = hd / kW;
  __m256 kc[kMaxChunks];
  for (int t = 0; t < n; ++t) {
    const uint8_t* row = k + static_cast<size_t>(t) * hd * kElem<T>;
    for (int c = 0; c < nc; ++c) kc[c] = load_row<T>(row, c * kW);
    for (int h = 0; h < n_gqa; ++h) {
      const float* qh = q + h * hd;
      __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(qh), kc[0]);
      for (int c = 1; c < nc; ++c) acc = _mm256_fmadd_ps(_mm256_loadu_ps(qh + c * kW), kc[c], acc);
      s[h * s_stride + t] = hsum(acc) * scale;
    }
  }
}

template <DType T>
void accum_t(const float* p, int p_stride, int n_gqa, const uint8_t* v, int n, int hd, float* out) {
  const size_t row = static_cast<size_t>(hd) * kElem<T>;
  for (int h0 = 0; h0 < n_gqa; h0 += kHeadGroup) {
    const int nh = n_gqa - h0 < kHeadGroup ? n_gqa - h0 : kHeadGroup;
    for (int e = 0; e < hd; e += kW) {
      __m256 acc[kHeadGroup];
      for (int h = 0; h < nh; ++h) acc[h] = _mm256_loadu_ps(out + (h0 + h) * hd + e);
      for (int t = 0; t < n; ++t) {
        const __m256 x = load_row<T>(v + t * row, e);
        for (int h = 0; h < nh; ++h) acc[h] = _mm256_fmadd_ps(_mm256_set1_ps(p[(h0 + h) * p_stride + t]), x, acc[h]);
      }
      for (int h = 0; h < nh; ++h) _mm256_storeu_ps(out + (h0 + h) * hd + e, acc[h]);
    }
  }
}

// exp(x) for x <= 0 (softmax arguments): 2^n * P(r), r = x - n ln2, |r| <= ln2/2, P of degree 6
// (relative error about 2e-7).
inline __m256 exp_neg(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = ROUND_NEAREST(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)));
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693145751953125f), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-1.428606765330187045e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23)));
}

float exp_sum(float* x, int n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 sum = _mm256_setzero_ps();
  int i = 0;
  for (; i + kW <= n; i += kW) {
    const __m256 e = exp_neg(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (i < n) {
    alignas(64) float tmp[kW];
    for (int j = 0; j < kW; ++j) tmp[j] = i + j < n ? x[i + j] : m;
    _mm256_storeu_ps(tmp, exp_neg(_mm256_sub_ps(_mm256_loadu_ps(tmp), vm)));
    for (int j = 0; j < kW; ++j) {
      if (i + j < n) {
        x[i + j] = tmp[j];
      } else {
        tmp[j] = 0.0f;
      }
    }
    sum = _mm256_add_ps(sum, _mm256_loadu_ps(tmp));
  }
  {
    const __m256 acc = sum;
    return hsum(acc);
  }
}

void scores(const float* q, int n_gqa, const uint8_t* k, DType type, int n, int hd, float scale,
            float* s, int s_stride) {
  switch (type) {
    case DType::kF16: return scores_t<DType::kF16>(q, n_gqa, k, n, hd, scale, s, s_stride);
    case DType::kBF16: return scores_t<DType::kBF16>(q, n_gqa, k, n, hd, scale, s, s_stride);
    default: return scores_t<DType::kF32>(q, n_gqa, k, n, hd, scale, s, s_stride);
  }
}

void accum(const float* p, int p_stride, int n_gqa, const uint8_t* v, DType type, int n, int hd,
           float* out) {
  switch (type) {
    case DType::kF16: return accum_t<DType::kF16>(p, p_stride, n_gqa, v, n, hd, out);
    case DType::kBF16: return accum_t<DType::kBF16>(p, p_stride, n_gqa, v, n, hd, out);
    default: return accum_t<DType::kF32>(p, p_stride, n_gqa, v, n, hd, out);
  }
}

}  // namespace

const AttnTileFns* attn_tile_fns_avx2() {
  static const AttnTileFns fns{scores, accum, exp_sum};
  return &fns;
}

}  // namespace kvserve::kernels
