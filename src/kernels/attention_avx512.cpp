// AVX-512 loops of the paged attention kernel (head_dim a multiple of 16). See attention_impl.h.

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
// [sum(a), sum(b), sum(c), sum(d)]: 256-bit halves, then 128-bit quarters, then pairs. Each
// vector's lanes are added in the same order whichever argument it is.
inline __m128 reduce4_512(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 abcd = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                                    _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 x = _mm512_add_ps(abcd, _mm512_permute_ps(abcd, _MM_SHUFFLE(2, 3, 0, 1)));
  const __m512 y = _mm512_add_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, y));
}
// 16 e4m3 bytes as f32 bit patterns: magnitude bits at the top of exponent/mantissa (the value
// times 2^-120), sign in place.
inline __m512 fp8_raw512(const uint8_t* p) {
  const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m512i mag = _mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0x7f)), 20);
  const __m512i sgn = _mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0x80)), 24);
  return _mm512_castsi512_ps(_mm512_or_si512(mag, sgn));
}
// Channels [16c, 16c + 16) of a q4 nibble row: 8 bytes, low nibbles then high nibbles.
inline __m512 q4_512(const uint8_t* p, int c) {
  const __m128i x = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * c));
  const __m128i m = _mm_set1_epi8(0x0f);
  const __m128i b = _mm_unpacklo_epi64(_mm_and_si128(x, m), _mm_and_si128(_mm_srli_epi16(x, 4), m));
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b));
}
}  // namespace
}  // namespace kvserve::kernels

#define VREDUCE4(a, b, c, d) reduce4_512(a, b, c, d)
#define VEC __m512
#define VWIDTH 16
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VFMA _mm512_fmadd_ps
#define VMUL _mm512_mul_ps
#define VADD _mm512_add_ps
#define VSUB _mm512_sub_ps
#define VMAX _mm512_max_ps
#define VSET1 _mm512_set1_ps
#define VZERO _mm512_setzero_ps
#define VREDUCE(v) _mm512_reduce_add_ps(v)
#define VROUND(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VSCALE2N(p, n) _mm512_scalef_ps(p, n)
#define VLOAD_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))
#define VLOAD_BF16(p)                    \
  _mm512_castsi512_ps(_mm512_slli_epi32( \
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16))
#define VLOAD_I8(p) \
  _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))))
#define VLOAD_FP8(p) fp8_raw512(p)
#define VLOAD_Q4(p, c) q4_512(p, c)
#define ATTN_TILE_FNS_NAME attn_tile_fns_avx512

#include "kernels/attention_simd.inc"
