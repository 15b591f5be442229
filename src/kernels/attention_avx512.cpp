// avx512 loops of the paged attention kernel (head_dim a multiple of 16). See attention_impl.h.
#include <immintrin.h>

#include "kernels/attention_impl.h"

#define ROUND_NEAREST(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

namespace kvserve::kernels {

namespace {

constexpr int kW = 16;        // floats per vector
constexpr int kMaxChunks = 32;  // head_dim up to 512
constexpr int kHeadGroup = 8;   // query heads accumulated in registers at once



template <DType T>
inline __m512 load_row(const uint8_t* base, int e) {
  if constexpr (T == DType::kF32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(base) + e);
  } else if constexpr (T == DType::kF16) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(base) + e;
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  } else {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(base) + e;
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  }
}

template <DType T>
constexpr size_t kElem = T == DType::kF32 ? 4 : 2;

template <DType T>
void scores_t(const float* q, int n_gqa, const uint8_t* k, int n, int hd, float scale, float* s,
              int s_stride) {
  const int nc = hd / kW;
  __m512 kc[kMaxChunks];
  for (int t = 0; t < n; ++t) {
    const uint8_t* row = k + static_cast<size_t>(t) * hd * kElem<T>;
    for (int c = 0; c < nc; ++c) kc[c] = load_row<T>(row, c * kW);
    for (int h = 0; h < n_gqa; ++h) {
      const float* qh = q + h * hd;
      __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(qh), kc[0]);
      for (int c = 1; c < nc; ++c) acc = _mm512_fmadd_ps(_mm512_loadu_ps(qh + c * kW), kc[c], acc);
      s[h * s_stride + t] = _mm512_reduce_add_ps(acc) * scale;
    }
  }
}

template <DType T>
void accum_t(const float* p, int p_stride, int n_gqa, const uint8_t* v, int n, int hd, float* out) {
  const size_t row = static_cast<size_t>(hd) * kElem<T>;
  for (int h0 = 0; h0 < n_gqa; h0 += kHeadGroup) {
    const int nh = n_gqa - h0 < kHeadGroup ? n_gqa - h0 : kHeadGroup;
    for (int e = 0; e < hd; e += kW) {
      __m512 acc[kHeadGroup];
      for (int h = 0; h < nh; ++h) acc[h] = _mm512_loadu_ps(out + (h0 + h) * hd + e);
      for (int t = 0; t < n; ++t) {
        const __m512 x = load_row<T>(v + t * row, e);
        for (int h = 0; h < nh; ++h) acc[h] = _mm512_fmadd_ps(_mm512_set1_ps(p[(h0 + h) * p_stride + t]), x, acc[h]);
      }
      for (int h = 0; h < nh; ++h) _mm512_storeu_ps(out + (h0 + h) * hd + e, acc[h]);
    }
  }
}

// exp(x) for x <= 0 (softmax arguments): 2^n * P(r), r = x - n ln2, |r| <= ln2/2, P of degree 6
// (relative error about 2e-7).
inline __m512 exp_neg(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = ROUND_NEAREST(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)));
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693145751953125f), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

float exp_sum(float* x, int n, float m) {
  const __m512 vm = _mm512_set1_ps(m);
  __m512 sum = _mm512_setzero_ps();
  int i = 0;
  for (; i + kW <= n; i += kW) {
    const __m512 e = exp_neg(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
    _mm512_storeu_ps(x + i, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (i < n) {
    alignas(64) float tmp[kW];
    for (int j = 0; j < kW; ++j) tmp[j] = i + j < n ? x[i + j] : m;
    _mm512_storeu_ps(tmp, exp_neg(_mm512_sub_ps(_mm512_loadu_ps(tmp), vm)));
    for (int j = 0; j < kW; ++j) {
      if (i + j < n) {
        x[i + j] = tmp[j];
      } else {
        tmp[j] = 0.0f;
      }
    }
    sum = _mm512_add_ps(sum, _mm512_loadu_ps(tmp));
  }
  {
    const __m512 acc = sum;
    return _mm512_reduce_add_ps(acc);
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

const AttnTileFns* attn_tile_fns_avx512() {
  static const AttnTileFns fns{scores, accum, exp_sum};
  return &fns;
}

}  // namespace kvserve::kernels
