// AVX2 loops of the paged attention kernel (head_dim a multiple of 8). See attention_impl.h.

// GCC 12 reports its own intrinsics' self-initialized "undefined" vectors, and the head loops'
// register arrays (filled up to the run-time head count, read no further), as maybe
// uninitialized once inlined here; both are false positives (see ops_avx512.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "kernels/attention_impl.h"

namespace kvserve::kernels {
namespace {
inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// p * 2^n for integral n in [-126, 127] (exp_neg clamps its argument so n stays there).
inline __m256 scale2n(__m256 p, __m256 n) {
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
// [sum(a), sum(b), sum(c), sum(d)] by pairwise horizontal adds, then the two 128-bit halves.
inline __m128 reduce4_256(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}
// 8 e4m3 bytes as f32 bit patterns (the value times 2^-120, sign in place).
inline __m256 fp8_raw256(const uint8_t* p) {
  const __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  const __m256i mag = _mm256_slli_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7f)), 20);
  const __m256i sgn = _mm256_slli_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x80)), 24);
  return _mm256_castsi256_ps(_mm256_or_si256(mag, sgn));
}
// Channels [8c, 8c + 8) of a q4 nibble row: the low (even c) or high (odd c) nibbles of the 8
// bytes of 16-channel group c / 2.
inline __m256 q4_256(const uint8_t* p, int c) {
  __m128i x = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * (c / 2)));
  if (c & 1) x = _mm_srli_epi16(x, 4);
  x = _mm_and_si128(x, _mm_set1_epi8(0x0f));
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(x));
}
}  // namespace
}  // namespace kvserve::kernels

#define VREDUCE4(a, b, c, d) reduce4_256(a, b, c, d)
#define VEC __m256
#define VWIDTH 8
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#define VFMA _mm256_fmadd_ps
#define VMUL _mm256_mul_ps
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
#define VMAX _mm256_max_ps
#define VSET1 _mm256_set1_ps
#define VZERO _mm256_setzero_ps
#define VREDUCE(v) hsum256(v)
#define VROUND(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VSCALE2N(p, n) scale2n(p, n)
#define VLOAD_F16(p) _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))
#define VLOAD_BF16(p)                    \
  _mm256_castsi256_ps(_mm256_slli_epi32( \
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16))
#define VLOAD_I8(p) \
  _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))))
#define VLOAD_FP8(p) fp8_raw256(p)
#define VLOAD_Q4(p, c) q4_256(p, c)
#define ATTN_TILE_FNS_NAME attn_tile_fns_avx2

#include "kernels/attention_simd.inc"
