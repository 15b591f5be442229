// AVX-512 (F, BW, VL, VNNI) kernels. See ops_impl.h for the rules these files follow.
// Only AVX512F/BW/VL/VNNI instructions are used (cpu_level() checks exactly those).

// GCC 12's AVX-512 headers self-initialize their "undefined" vectors, which -Wuninitialized
// reports once inlined here; it is a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/dot.h"
#include "kernels/ops_impl.h"

namespace kvserve::kernels::avx512 {
namespace {

inline __mmask16 tail_mask16(int64_t k) {
  return static_cast<__mmask16>((1u << k) - 1u);
}

// Fixed-order horizontal sum of 16 floats (AVX512F only).
inline float hsum512(__m512 v) {
  const __m512 s = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4e));
  return hsum256(_mm512_castps512_ps256(s));
}

struct LoadF32 {
  static constexpr int kBytes = 4;
  static __m512 load(const uint8_t* p) { return _mm512_loadu_ps(p); }
  static __m512 load(const uint8_t* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
};
struct LoadF16 {
  static constexpr int kBytes = 2;
  static __m512 load(const uint8_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static __m512 load(const uint8_t* p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
  }
};
struct LoadBF16 {
  static constexpr int kBytes = 2;
  static __m512 widen(__m256i v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  }
  static __m512 load(const uint8_t* p) {
    return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static __m512 load(const uint8_t* p, __mmask16 m) {
    return widen(_mm256_maskz_loadu_epi16(m, p));
  }
};

// f32 / f16 / bf16 weights: two 16-wide accumulators per token, then a masked tail vector.
template <class L>
struct PlainKern {
  template <int NT>
  static void run(const MatArgs& a, int64_t r, int64_t t0) {
    const uint8_t* w = a.w + static_cast<size_t>(r) * a.w_stride;
    const int64_t n = a.cols;
    const float* xs[NT];
    __m512 a0[NT], a1[NT];
    for (int j = 0; j < NT; ++j) {
      xs[j] = a.x + (t0 + j) * n;
      a0[j] = _mm512_setzero_ps();
      a1[j] = _mm512_setzero_ps();
    }
    int64_t c = 0;
    for (; c + 32 <= n; c += 32) {
      const __m512 w0 = L::load(w + c * L::kBytes);
      const __m512 w1 = L::load(w + (c + 16) * L::kBytes);
      for (int j = 0; j < NT; ++j) {
        a0[j] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xs[j] + c), a0[j]);
        a1[j] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xs[j] + c + 16), a1[j]);
      }
    }
    if (c + 16 <= n) {
      const __m512 w0 = L::load(w + c * L::kBytes);
      for (int j = 0; j < NT; ++j) a0[j] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xs[j] + c), a0[j]);
      c += 16;
    }
    if (c < n) {
      const __mmask16 m = tail_mask16(n - c);
      const __m512 w1 = L::load(w + c * L::kBytes, m);
      for (int j = 0; j < NT; ++j)
        a1[j] = _mm512_fmadd_ps(w1, _mm512_maskz_loadu_ps(m, xs[j] + c), a1[j]);
    }
    for (int j = 0; j < NT; ++j) a.y[(t0 + j) * a.ldy + r] = hsum512(_mm512_add_ps(a0[j], a1[j]));
  }
};

// Shared by the q8_0 and q4_0 kernels: two blocks per 512-bit register (lanes 0-7: block b,
// lanes 8-15: block b+1). Scales [dw0*dx0, dw1*dx1] are spread to the two halves.
inline __m512 spread2(__m128 s) {
  const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(s));
}

// Two fp16 scales -> [d0, d1, 0, 0].
inline __m128 scales2(const uint8_t* p0, const uint8_t* p1) {
  const uint32_t bits = load_u16(p0) | (static_cast<uint32_t>(load_u16(p1)) << 16);
  return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(bits)));
}
// [p[0], p[1], 0, 0] from a 4-byte aligned pointer.
inline __m128 load2f(const float* p) {
  return _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
inline __m128 scales1(const uint8_t* p0) {
  return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(load_u16(p0))));
}

// q8_0: VNNI dpbusd of |w| (u8) with x carrying w's sign (s8). One accumulator per token.
struct Q8Kern {
  template <int NT>
  static void run(const MatArgs& a, int64_t r, int64_t t0) {
    const uint8_t* w = a.w + static_cast<size_t>(r) * a.w_stride;
    const int64_t nb = a.cols / kBlk;
    const int8_t* xq[NT];
    const float* xd[NT];
    __m512 acc[NT];
    for (int j = 0; j < NT; ++j) {
      xq[j] = a.qa.qs + (t0 + j) * a.cols;
      xd[j] = a.qa.d + (t0 + j) * nb;
      acc[j] = _mm512_setzero_ps();
    }
    const __m512i zero = _mm512_setzero_si512();
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      const uint8_t* b0 = w + b * kQ8Bytes;
      const uint8_t* b1 = b0 + kQ8Bytes;
      const __m512i wv = _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + 2))),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b1 + 2)), 1);
      const __m512i aw = _mm512_abs_epi8(wv);
      const __mmask64 neg = _mm512_movepi8_mask(wv);
      const __m128 dw = scales2(b0, b1);
      for (int j = 0; j < NT; ++j) {
        const __m512i xv = _mm512_loadu_si512(xq[j] + b * kBlk);
        const __m512i sx = _mm512_mask_sub_epi8(xv, neg, zero, xv);
        const __m512i p = _mm512_dpbusd_epi32(zero, aw, sx);
        const __m128 dx = load2f(xd[j] + b);
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), spread2(_mm_mul_ps(dw, dx)), acc[j]);
      }
    }
    if (b < nb) {  // odd last block: the upper half is zero
      const uint8_t* b0 = w + b * kQ8Bytes;
      const __m512i wv =
          _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + 2)));
      const __m512i aw = _mm512_abs_epi8(wv);
      const __mmask64 neg = _mm512_movepi8_mask(wv);
      const __m128 dw = scales1(b0);
      for (int j = 0; j < NT; ++j) {
        const __m512i xv = _mm512_zextsi256_si512(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[j] + b * kBlk)));
        const __m512i sx = _mm512_mask_sub_epi8(xv, neg, zero, xv);
        const __m512i p = _mm512_dpbusd_epi32(zero, aw, sx);
        const __m128 dx = _mm_load_ss(xd[j] + b);
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), spread2(_mm_mul_ps(dw, dx)), acc[j]);
      }
    }
    for (int j = 0; j < NT; ++j) a.y[(t0 + j) * a.ldy + r] = hsum512(acc[j]);
  }
};

// q4_0: VNNI dpbusd of the nibbles (u8, 0..15) with x (s8); the accumulator starts at the
// activation's -8 * sum(x) in the first lane of each block, so each block's int32 total is
// exactly sum (q - 8) * x.
struct Q4Kern {
  template <int NT>
  static void run(const MatArgs& a, int64_t r, int64_t t0) {
    const uint8_t* w = a.w + static_cast<size_t>(r) * a.w_stride;
    const int64_t nb = a.cols / kBlk;
    const int8_t* xq[NT];
    const float* xd[NT];
    const int32_t* xs[NT];
    __m512 acc[NT];
    for (int j = 0; j < NT; ++j) {
      xq[j] = a.qa.qs + (t0 + j) * a.cols;
      xd[j] = a.qa.d + (t0 + j) * nb;
      xs[j] = a.qa.s8 + (t0 + j) * nb;
      acc[j] = _mm512_setzero_ps();
    }
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    // 128-bit quarters: [lo nibbles b, hi nibbles b, lo nibbles b+1, hi nibbles b+1].
    const __m512i shifts = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
    const __m512i cidx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0);
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      const uint8_t* b0 = w + b * kQ4Bytes;
      const uint8_t* b1 = b0 + kQ4Bytes;
      const __m256i v0 =
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + 2)));
      const __m256i v1 =
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b1 + 2)));
      const __m512i q = _mm512_and_si512(
          _mm512_srlv_epi64(_mm512_inserti64x4(_mm512_castsi256_si512(v0), v1, 1), shifts), m4);
      const __m128 dw = scales2(b0, b1);
      for (int j = 0; j < NT; ++j) {
        const __m512i corr = _mm512_maskz_permutexvar_epi32(
            0x0101, cidx,
            _mm512_castsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(xs[j] + b))));
        const __m512i p = _mm512_dpbusd_epi32(corr, q, _mm512_loadu_si512(xq[j] + b * kBlk));
        const __m128 dx = load2f(xd[j] + b);
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), spread2(_mm_mul_ps(dw, dx)), acc[j]);
      }
    }
    if (b < nb) {  // odd last block: the upper half is zero
      const uint8_t* b0 = w + b * kQ4Bytes;
      const __m256i v0 =
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + 2)));
      const __m512i q = _mm512_and_si512(_mm512_srlv_epi64(_mm512_zextsi256_si512(v0), shifts), m4);
      const __m128 dw = scales1(b0);
      for (int j = 0; j < NT; ++j) {
        const __m512i corr = _mm512_zextsi128_si512(_mm_cvtsi32_si128(xs[j][b]));
        const __m512i xv = _mm512_zextsi256_si512(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[j] + b * kBlk)));
        const __m512i p = _mm512_dpbusd_epi32(corr, q, xv);
        const __m128 dx = _mm_load_ss(xd[j] + b);
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), spread2(_mm_mul_ps(dw, dx)), acc[j]);
      }
    }
    for (int j = 0; j < NT; ++j) a.y[(t0 + j) * a.ldy + r] = hsum512(acc[j]);
  }
};

void matmul_f32(const MatArgs& a, int64_t r0, int64_t r1) {
  drive<PlainKern<LoadF32>>(a, r0, r1);
}
void matmul_f16(const MatArgs& a, int64_t r0, int64_t r1) {
  drive<PlainKern<LoadF16>>(a, r0, r1);
}
void matmul_bf16(const MatArgs& a, int64_t r0, int64_t r1) {
  drive<PlainKern<LoadBF16>>(a, r0, r1);
}
void matmul_q8_0(const MatArgs& a, int64_t r0, int64_t r1) {
  drive<Q8Kern>(a, r0, r1);
}
void matmul_q4_0(const MatArgs& a, int64_t r0, int64_t r1) {
  drive<Q4Kern>(a, r0, r1);
}

float dot_f32(const float* x, const float* y, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 32 <= n; c += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + c), _mm512_loadu_ps(y + c), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + c + 16), _mm512_loadu_ps(y + c + 16), a1);
  }
  if (c + 16 <= n) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + c), _mm512_loadu_ps(y + c), a0);
    c += 16;
  }
  if (c < n) {
    const __mmask16 m = tail_mask16(n - c);
    a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + c), _mm512_maskz_loadu_ps(m, y + c), a1);
  }
  return hsum512(_mm512_add_ps(a0, a1));
}

void axpy_f32(float s, const float* x, float* y, int64_t n) {
  const __m512 vs = _mm512_set1_ps(s);
  int64_t c = 0;
  for (; c + 16 <= n; c += 16)
    _mm512_storeu_ps(y + c, _mm512_fmadd_ps(vs, _mm512_loadu_ps(x + c), _mm512_loadu_ps(y + c)));
  if (c < n) {
    const __mmask16 m = tail_mask16(n - c);
    _mm512_mask_storeu_ps(
        y + c, m,
        _mm512_fmadd_ps(vs, _mm512_maskz_loadu_ps(m, x + c), _mm512_maskz_loadu_ps(m, y + c)));
  }
}

float sum_squares(const float* x, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 32 <= n; c += 32) {
    const __m512 v0 = _mm512_loadu_ps(x + c), v1 = _mm512_loadu_ps(x + c + 16);
    a0 = _mm512_fmadd_ps(v0, v0, a0);
    a1 = _mm512_fmadd_ps(v1, v1, a1);
  }
  if (c + 16 <= n) {
    const __m512 v = _mm512_loadu_ps(x + c);
    a0 = _mm512_fmadd_ps(v, v, a0);
    c += 16;
  }
  if (c < n) {
    const __m512 v = _mm512_maskz_loadu_ps(tail_mask16(n - c), x + c);
    a1 = _mm512_fmadd_ps(v, v, a1);
  }
  return hsum512(_mm512_add_ps(a0, a1));
}

void scale_mul(const float* x, float s, const float* w, float* out, int64_t n) {
  const __m512 vs = _mm512_set1_ps(s);
  int64_t c = 0;
  for (; c + 16 <= n; c += 16)
    _mm512_storeu_ps(
        out + c, _mm512_mul_ps(_mm512_mul_ps(vs, _mm512_loadu_ps(x + c)), _mm512_loadu_ps(w + c)));
  if (c < n) {
    const __mmask16 m = tail_mask16(n - c);
    _mm512_mask_storeu_ps(out + c, m,
                          _mm512_mul_ps(_mm512_mul_ps(vs, _mm512_maskz_loadu_ps(m, x + c)),
                                        _mm512_maskz_loadu_ps(m, w + c)));
  }
}

}  // namespace

const KernelTable& table() {
  static const KernelTable t{CpuLevel::kAvx512, matmul_f32,  matmul_f16,         matmul_bf16,
                             matmul_q8_0,       matmul_q4_0, quantize_acts_avx2, dot_f32,
                             axpy_f32,          sum_squares, scale_mul};
  return t;
}

}  // namespace kvserve::kernels::avx512
