// avx2 tile loops of the paged attention kernel (head_dim a multiple of 8).
#include <immintrin.h>

#include "kernels/attention_impl.h"

namespace kvserve::kernels {

namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <DType T>
inline __m256 load8(const uint8_t* base, int e) {
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
void scores_t(const float* q, const uint8_t* k, int n, int hd, float scale, float* s) {
  const size_t row = static_cast<size_t>(hd) * (T == DType::kF32 ? 4 : 2);
  for (int t = 0; t < n; ++t) {
    const uint8_t* kr = k + t * row;
    __m256 acc = _mm256_setzero_ps();
    for (int e = 0; e < hd; e += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + e), load8<T>(kr, e), acc);
    s[t] = hsum(acc) * scale;
  }
}

template <DType T>
void accum_t(const float* p, const uint8_t* v, int n, int hd, float* out) {
  const size_t row = static_cast<size_t>(hd) * (T == DType::kF32 ? 4 : 2);
  for (int e = 0; e < hd; e += 8) {
    __m256 acc = _mm256_loadu_ps(out + e);
    for (int t = 0; t < n; ++t) acc = _mm256_fmadd_ps(_mm256_set1_ps(p[t]), load8<T>(v + t * row, e), acc);
    _mm256_storeu_ps(out + e, acc);
  }
}

void scores(const float* q, const uint8_t* k, DType type, int n, int hd, float scale, float* s) {
  switch (type) {
    case DType::kF16: return scores_t<DType::kF16>(q, k, n, hd, scale, s);
    case DType::kBF16: return scores_t<DType::kBF16>(q, k, n, hd, scale, s);
    default: return scores_t<DType::kF32>(q, k, n, hd, scale, s);
  }
}

void accum(const float* p, const uint8_t* v, DType type, int n, int hd, float* out) {
  switch (type) {
    case DType::kF16: return accum_t<DType::kF16>(p, v, n, hd, out);
    case DType::kBF16: return accum_t<DType::kBF16>(p, v, n, hd, out);
    default: return accum_t<DType::kF32>(p, v, n, hd, out);
  }
}

}  // namespace

const AttnTileFns* attn_tile_fns_avx2() {
  static const AttnTileFns fns{scores, accum};
  return &fns;
}

}  // namespace kvserve::kernels
