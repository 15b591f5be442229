// AVX2 + FMA + F16C kernels. See ops_impl.h for the rules these files follow.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/dot.h"
#include "kernels/ops_impl.h"

namespace kvserve::kernels::avx2 {
namespace {

// Mask of the first `k` (0..8) float lanes.
inline __m256i tail_mask(int64_t k) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(k)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

struct LoadF32 {
  static constexpr int kBytes = 4;
  static __m256 load(const uint8_t* p) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  }
};
struct LoadF16 {
  static constexpr int kBytes = 2;
  static __m256 load(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
};
struct LoadBF16 {
  static constexpr int kBytes = 2;
  static __m256 load(const uint8_t* p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
};

// f32 / f16 / bf16 weights: two 8-wide accumulators per token (even / odd vectors), then one
// zero-padded tail vector; the order depends only on cols.
template <class L>
struct PlainKern {
  template <int NT>
  static void run(const MatArgs& a, int64_t r, int64_t t0) {
    const uint8_t* w = a.w + static_cast<size_t>(r) * a.w_stride;
    const int64_t n = a.cols;
    const float* xs[NT];
    __m256 a0[NT], a1[NT];
    for (int j = 0; j < NT; ++j) {
      xs[j] = a.x + (t0 + j) * n;
      a0[j] = _mm256_setzero_ps();
      a1[j] = _mm256_setzero_ps();
    }
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
      const __m256 w0 = L::load(w + c * L::kBytes);
      const __m256 w1 = L::load(w + (c + 8) * L::kBytes);
      for (int j = 0; j < NT; ++j) {
        a0[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[j] + c), a0[j]);
        a1[j] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xs[j] + c + 8), a1[j]);
      }
    }
    if (c + 8 <= n) {
      const __m256 w0 = L::load(w + c * L::kBytes);
      for (int j = 0; j < NT; ++j) a0[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[j] + c), a0[j]);
      c += 8;
    }
    if (c < n) {
      alignas(32) uint8_t wt[32] = {};
      std::memcpy(wt, w + c * L::kBytes, static_cast<size_t>((n - c) * L::kBytes));
      const __m256 w1 = L::load(wt);
      const __m256i m = tail_mask(n - c);
      for (int j = 0; j < NT; ++j)
        a1[j] = _mm256_fmadd_ps(w1, _mm256_maskload_ps(xs[j] + c, m), a1[j]);
    }
    for (int j = 0; j < NT; ++j) a.y[(t0 + j) * a.ldy + r] = hsum256(_mm256_add_ps(a0[j], a1[j]));
  }
};

// q8_0 weights x q8 activations: |w| (u8) times x with w's sign (s8) through maddubs, which
// cannot saturate since |w| <= 128 and |x| <= 127. Even / odd blocks use separate accumulators.
struct Q8Kern {
  template <int NT>
  static void run(const MatArgs& a, int64_t r, int64_t t0) {
    const uint8_t* w = a.w + static_cast<size_t>(r) * a.w_stride;
    const int64_t nb = a.cols / kBlk;
    const int8_t* xq[NT];
    const float* xd[NT];
    __m256 acc[2][NT];
    for (int j = 0; j < NT; ++j) {
      xq[j] = a.qa.qs + (t0 + j) * a.cols;
      xd[j] = a.qa.d + (t0 + j) * nb;
      acc[0][j] = _mm256_setzero_ps();
      acc[1][j] = _mm256_setzero_ps();
    }
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w + b * kQ8Bytes;
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
      const __m256i aw = _mm256_abs_epi8(wv);
      const float dw = _cvtsh_ss(load_u16(blk));
      const int k = static_cast<int>(b & 1);
      for (int j = 0; j < NT; ++j) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[j] + b * kBlk));
        const __m256i p =
            _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, wv)), ones);
        acc[k][j] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * xd[j][b]), acc[k][j]);
      }
    }
    for (int j = 0; j < NT; ++j)
      a.y[(t0 + j) * a.ldy + r] = hsum256(_mm256_add_ps(acc[0][j], acc[1][j]));
  }
};

// q4_0 weights: nibbles q (0..15, u8) times x (s8) through maddubs, plus the per-block
// correction -8 * sum(x) from the activation quantizer, all in exact int32.
struct Q4Kern {
  template <int NT>
  static void run(const MatArgs& a, int64_t r, int64_t t0) {
    const uint8_t* w = a.w + static_cast<size_t>(r) * a.w_stride;
    const int64_t nb = a.cols / kBlk;
    const int8_t* xq[NT];
    const float* xd[NT];
    const int32_t* xs[NT];
    __m256 acc[2][NT];
    for (int j = 0; j < NT; ++j) {
      xq[j] = a.qa.qs + (t0 + j) * a.cols;
      xd[j] = a.qa.d + (t0 + j) * nb;
      xs[j] = a.qa.s8 + (t0 + j) * nb;
      acc[0][j] = _mm256_setzero_ps();
      acc[1][j] = _mm256_setzero_ps();
    }
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w + b * kQ4Bytes;
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
      const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), m4);
      const float dw = _cvtsh_ss(load_u16(blk));
      const int k = static_cast<int>(b & 1);
      for (int j = 0; j < NT; ++j) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[j] + b * kBlk));
        __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv), ones);
        p = _mm256_add_epi32(p, _mm256_zextsi128_si256(_mm_cvtsi32_si128(xs[j][b])));
        acc[k][j] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * xd[j][b]), acc[k][j]);
      }
    }
    for (int j = 0; j < NT; ++j)
      a.y[(t0 + j) * a.ldy + r] = hsum256(_mm256_add_ps(acc[0][j], acc[1][j]));
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
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(y + c), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + c + 8), _mm256_loadu_ps(y + c + 8), a1);
  }
  if (c + 8 <= n) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(y + c), a0);
    c += 8;
  }
  if (c < n) {
    const __m256i m = tail_mask(n - c);
    a1 = _mm256_fmadd_ps(_mm256_maskload_ps(x + c, m), _mm256_maskload_ps(y + c, m), a1);
  }
  return hsum256(_mm256_add_ps(a0, a1));
}

void axpy_f32(float s, const float* x, float* y, int64_t n) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    _mm256_storeu_ps(y + c, _mm256_fmadd_ps(vs, _mm256_loadu_ps(x + c), _mm256_loadu_ps(y + c)));
  if (c < n) {
    const __m256i m = tail_mask(n - c);
    const __m256 r =
        _mm256_fmadd_ps(vs, _mm256_maskload_ps(x + c, m), _mm256_maskload_ps(y + c, m));
    _mm256_maskstore_ps(y + c, m, r);
  }
}

float sum_squares(const float* x, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    const __m256 v0 = _mm256_loadu_ps(x + c), v1 = _mm256_loadu_ps(x + c + 8);
    a0 = _mm256_fmadd_ps(v0, v0, a0);
    a1 = _mm256_fmadd_ps(v1, v1, a1);
  }
  if (c + 8 <= n) {
    const __m256 v = _mm256_loadu_ps(x + c);
    a0 = _mm256_fmadd_ps(v, v, a0);
    c += 8;
  }
  if (c < n) {
    const __m256 v = _mm256_maskload_ps(x + c, tail_mask(n - c));
    a1 = _mm256_fmadd_ps(v, v, a1);
  }
  return hsum256(_mm256_add_ps(a0, a1));
}

void scale_mul(const float* x, float s, const float* w, float* out, int64_t n) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    _mm256_storeu_ps(
        out + c, _mm256_mul_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(x + c)), _mm256_loadu_ps(w + c)));
  if (c < n) {
    const __m256i m = tail_mask(n - c);
    const __m256 r = _mm256_mul_ps(_mm256_mul_ps(vs, _mm256_maskload_ps(x + c, m)),
                                   _mm256_maskload_ps(w + c, m));
    _mm256_maskstore_ps(out + c, m, r);
  }
}

// fp32 -> fp16 / bf16 rows of the KV cache (KernelTable::fp16_row). vcvtps2ph with
// round-to-nearest-even gives fp32_to_fp16's bits for every non-NaN input (overflow to inf,
// subnormal halves, values that round to zero). On a NaN it keeps the top payload bits where
// fp32_to_fp16 returns sign | 0x7e00, so NaN lanes are first replaced by sign | 0x7fc00000,
// which converts to exactly that. The bf16 path is the integer rounding of fp32_to_bf16 lane
// by lane (vcvtneps2bf16 would flush subnormal inputs to zero).
constexpr int kCvtRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

int64_t fp16_row(const float* x, uint8_t* out, int64_t n) {
  const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u)));
  const __m256 qnan = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    v = _mm256_blendv_ps(v, _mm256_or_ps(_mm256_and_ps(v, sign), qnan), nan);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), _mm256_cvtps_ph(v, kCvtRound));
  }
  return i;
}

int64_t bf16_row(const float* x, uint8_t* out, int64_t n) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  const __m256i inf = _mm256_set1_epi32(0x7f800000);
  const __m256i half = _mm256_set1_epi32(0x7fff);
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i quiet = _mm256_set1_epi32(64);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    const __m256i hi = _mm256_srli_epi32(u, 16);
    const __m256i lsb = _mm256_and_si256(hi, one);
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, half), lsb), 16);
    r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, quiet), nan);
    // Every lane is <= 0xffff, so the unsigned saturating pack is a plain narrowing.
    const __m128i h = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), h);
  }
  return i;
}

}  // namespace

const KernelTable& table() {
  static const KernelTable t{CpuLevel::kAvx2,
                             matmul_f32,
                             matmul_f16,
                             matmul_bf16,
                             matmul_q8_0,
                             matmul_q4_0,
                             quantize_acts_avx2,
                             false,
                             1,
                             dot_f32,
                             axpy_f32,
                             sum_squares,
                             scale_mul,
                             scalar::table().swiglu,
                             nullptr,
                             nullptr,
                             nullptr,
                             fp16_row,
                             bf16_row};
  return t;
}

}  // namespace kvserve::kernels::avx2
