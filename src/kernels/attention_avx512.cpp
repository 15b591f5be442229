// avx512 tile loops of the paged attention kernel (head_dim a multiple of 16).
#include <immintrin.h>

#include "kernels/attention_impl.h"

namespace kvserve::kernels {

namespace {



template <DType T>
inline __m512 load16(const uint8_t* base, int e) {
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
void scores_t(const float* q, const uint8_t* k, int n, int hd, float scale, float* s) {
  const size_t row = static_cast<size_t>(hd) * (T == DType::kF32 ? 4 : 2);
  for (int t = 0; t < n; ++t) {
    const uint8_t* kr = k + t * row;
    __m512 acc = _mm512_setzero_ps();
    for (int e = 0; e < hd; e += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + e), load16<T>(kr, e), acc);
    s[t] = _mm512_reduce_add_ps(acc) * scale;
  }
}

template <DType T>
void accum_t(const float* p, const uint8_t* v, int n, int hd, float* out) {
  const size_t row = static_cast<size_t>(hd) * (T == DType::kF32 ? 4 : 2);
  for (int e = 0; e < hd; e += 16) {
    __m512 acc = _mm512_loadu_ps(out + e);
    for (int t = 0; t < n; ++t) acc = _mm512_fmadd_ps(_mm512_set1_ps(p[t]), load16<T>(v + t * row, e), acc);
    _mm512_storeu_ps(out + e, acc);
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

const AttnTileFns* attn_tile_fns_avx512() {
  static const AttnTileFns fns{scores, accum};
  return &fns;
}

}  // namespace kvserve::kernels
