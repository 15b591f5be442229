// Internal helpers shared by ops_avx2.cpp and ops_avx512.cpp (both compiled with at least
// AVX2 + FMA + F16C). Everything here has internal linkage so that no AVX-compiled copy of an
// inline function can leak into baseline code through the linker.
#pragma once

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "kernels/dot.h is for the AVX2 / AVX-512 kernel files only"
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/ops_impl.h"

namespace kvserve::kernels {
namespace {

constexpr int kBlk = 32;                   // elements per q8_0 / q4_0 block
constexpr int kQ8Bytes = 34;               // sizeof(BlockQ8_0)
constexpr int kQ4Bytes = 18;               // sizeof(BlockQ4_0)
constexpr int kTokTile = 4;                // tokens that share one pass over a weight row
constexpr int64_t kChunkBytes = 96 << 10;  // weight rows revisited per token tile stay in L2

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// Fixed-order horizontal sum of 8 floats.
inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int32_t hsum256_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// Activation quantization, identical in its results to the scalar version: amax is exact,
// d = amax / 127, id = 1 / d, q = round-half-even(x * id) (cvtps2dq under the default MXCSR).
void quantize_acts_avx2(const float* x, int64_t n, int8_t* qs, float* d, int32_t* s8) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const int64_t nb = n / kBlk;
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * kBlk;
    __m256 v[4];
    for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(xb + 8 * i);
    __m256 m =
        _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
                      _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float db = amax / 127.0f;
    const float id = db != 0.0f ? 1.0f / db : 0.0f;
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], vid));
    const __m256i sum =
        _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    const __m256i p =
        _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + b * kBlk),
                        _mm256_permutevar8x32_epi32(p, perm));
    d[b] = db;
    s8[b] = -8 * hsum256_epi32(sum);
  }
}

// Row loop shared by all matmul kernels. Kern::run<NT>(a, r, t0) computes y[t0..t0+NT)[r] with
// per-token arithmetic that does not depend on NT. Rows are walked in chunks that fit in L2 so
// that, for many tokens, each chunk is read from memory once and then reused for every tile.
template <class Kern>
void drive(const MatArgs& a, int64_t r0, int64_t r1) {
  int64_t rc = kChunkBytes / static_cast<int64_t>(a.w_stride);
  if (rc < 1) rc = 1;
  for (int64_t rb = r0; rb < r1; rb += rc) {
    const int64_t re = min64(r1, rb + rc);
    for (int64_t t0 = 0; t0 < a.n_tok; t0 += kTokTile) {
      const int64_t nt = min64(kTokTile, a.n_tok - t0);
      for (int64_t r = rb; r < re; ++r) {
        switch (nt) {
          case 4:
            Kern::template run<4>(a, r, t0);
            break;
          case 3:
            Kern::template run<3>(a, r, t0);
            break;
          case 2:
            Kern::template run<2>(a, r, t0);
            break;
          default:
            Kern::template run<1>(a, r, t0);
            break;
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvserve::kernels
