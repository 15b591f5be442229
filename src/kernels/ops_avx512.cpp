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

// Both integer kernels below compute, per (row r, token t) and per pair of blocks, the int32
// lanes p (lanes 0-7: block b, lanes 8-15: block b+1; each lane the exact sum of 4 products)
// and then acc[r][t] = fma(float(p), spread(dw) * spread(dx), acc[r][t]), in block order, and
// finally y = hsum512(acc) (hsum4x4 does the same additions for a full 4 x 4 tile). That
// sequence is the same for every tile shape, so y[t][r] does not depend on n_tok, on which
// rows / tokens share a tile, or on the thread count. The int32 lanes and the float operations
// are those of the previous one-row kernels, so results are bitwise unchanged. An odd last
// block is done in the low half with the high half's p and scale exactly 0.
//
// Tiles of NR weight rows x NT tokens: each prepared weight vector is reused for NT tokens, and
// the per-token data (activation bytes, correction, spread scales; see prep_acts) is
// precomputed once per call, so the per-(r, t) work is one dpbusd, one cvt, one mul, one fma.

constexpr int kRowTile = 4;

// Per-token extras (layout in ops_impl.h), for each pair k of blocks (b = 2k, b + 1):
//   dxs[k]: [d[b] x 8, d[b+1] x 8] (odd last block: [d[b] x 8, 0 x 8]).
//   q8_0 corr[k]: lane i = -128 * (x[4i] + x[4i+1] + x[4i+2] + x[4i+3]) of the pair's 64 bytes,
//     so that dpbusd(corr, w ^ 0x80 (u8), x) is exactly sum w * x in each lane.
//   q4_0 corr[k]: s8[b] in lane 0, s8[b+1] in lane 8, 0 elsewhere (the nibble offset).
void prep_acts(const int8_t* qs, const float* d, const int32_t* s8, int64_t n, bool q4,
               int32_t* corr, float* dxs) {
  const int64_t nb = n / kBlk;
  const __m512i zero = _mm512_setzero_si512();
  const __m512i m128 = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i cidx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0);
  for (int64_t b = 0, k = 0; b < nb; b += 2, ++k) {
    const bool two = b + 1 < nb;
    _mm512_storeu_ps(dxs + 16 * k, spread2(two ? load2f(d + b) : _mm_load_ss(d + b)));
    __m512i c;
    if (q4) {
      const __m128i sv = two ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s8 + b))
                             : _mm_cvtsi32_si128(s8[b]);
      c = _mm512_maskz_permutexvar_epi32(0x0101, cidx, _mm512_castsi128_si512(sv));
    } else {
      const __m512i xv = two ? _mm512_loadu_si512(qs + b * kBlk)
                             : _mm512_zextsi256_si512(_mm256_loadu_si256(
                                   reinterpret_cast<const __m256i*>(qs + b * kBlk)));
      c = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, m128, xv));
    }
    _mm512_storeu_si512(corr + 16 * k, c);
  }
}

// q8_0 weights as u8 (w ^ 0x80 = w + 128) against s8 activations, corrected by corr.
struct Q8Rows {
  static constexpr int kBytes = kQ8Bytes;
  static __m512i pair(const uint8_t* b0) {
    const __m512i wv = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + 2))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + kQ8Bytes + 2)), 1);
    return _mm512_xor_si512(wv, _mm512_set1_epi8(static_cast<char>(0x80)));
  }
  static __m256i single(const uint8_t* b0) {
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + 2)),
                            _mm256_set1_epi8(static_cast<char>(0x80)));
  }
};

// q4_0 nibbles (u8, 0..15) against s8 activations; corr adds -8 * sum(x) once per block.
// 128-bit quarters: [lo nibbles b, hi nibbles b, lo nibbles b+1, hi nibbles b+1].
struct Q4Rows {
  static constexpr int kBytes = kQ4Bytes;
  static __m512i pair(const uint8_t* b0) {
    const __m512i shifts = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
    const __m256i v0 =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + 2)));
    const __m256i v1 = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + kQ4Bytes + 2)));
    return _mm512_and_si512(
        _mm512_srlv_epi64(_mm512_inserti64x4(_mm512_castsi256_si512(v0), v1, 1), shifts),
        _mm512_set1_epi8(0x0F));
  }
  static __m256i single(const uint8_t* b0) {
    const __m256i shifts = _mm256_setr_epi64x(0, 0, 4, 4);
    const __m256i v0 =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + 2)));
    return _mm256_and_si256(_mm256_srlv_epi64(v0, shifts), _mm256_set1_epi8(0x0F));
  }
};

// Where a tile's weight rows come from. Both give, per row and block pair k, the u8 weight
// vector and the spread weight scales [dw_b x 8, dw_b+1 x 8]; for an odd last block the low
// 256 bits of each. RawRows derives them from the q8_0 / q4_0 blocks; PrepRows loads them from
// a buffer that prepare() filled with exactly those values (reused across token tiles).
template <class W>
struct RawRows {
  const uint8_t* w;
  size_t stride;
  const uint8_t*& p_or_w() { return w; }
  const uint8_t* row(int i) const { return w + i * stride; }
  static __m512i pair(const uint8_t* r, int64_t b) { return W::pair(r + b * W::kBytes); }
  static __m512 dw2(const uint8_t* r, int64_t b) {
    const uint8_t* b0 = r + b * W::kBytes;
    return spread2(scales2(b0, b0 + W::kBytes));
  }
  static __m256i single(const uint8_t* r, int64_t b) { return W::single(r + b * W::kBytes); }
  static __m256 dw1(const uint8_t* r, int64_t b) {
    return _mm256_broadcastss_ps(scales1(r + b * W::kBytes));
  }
};

// Prepared row: per block pair k, 64 bytes of u8 weights then 16 float scales (128 bytes).
struct PrepRows {
  const uint8_t* p;
  size_t stride;
  const uint8_t*& p_or_w() { return p; }
  const uint8_t* row(int i) const { return p + i * stride; }
  static __m512i pair(const uint8_t* r, int64_t b) { return _mm512_load_si512(r + 64 * b); }
  static __m512 dw2(const uint8_t* r, int64_t b) { return _mm512_load_ps(r + 64 * b + 64); }
  static __m256i single(const uint8_t* r, int64_t b) {
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(r + 64 * b));
  }
  static __m256 dw1(const uint8_t* r, int64_t b) {
    return _mm256_load_ps(reinterpret_cast<const float*>(r + 64 * b + 64));
  }
  template <class W>
  static void prepare(const uint8_t* w, int64_t nb, uint8_t* out) {
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      _mm512_store_si512(out + 64 * b, RawRows<W>::pair(w, b));
      _mm512_store_ps(out + 64 * b + 64, RawRows<W>::dw2(w, b));
    }
    if (b < nb) {
      _mm512_store_si512(out + 64 * b, _mm512_zextsi256_si512(RawRows<W>::single(w, b)));
      _mm512_store_ps(out + 64 * b + 64, _mm512_zextps256_ps512(RawRows<W>::dw1(w, b)));
    }
  }
};

// hsum512 of m[4 * i + j] for i, j < 4 into y[j * ldy + i], all 16 at once: the same
// additions of the same operands as hsum512 (lanes l and l + 8, then l and l + 4, then l and
// l + 2, then l and l + 1), so each result is bitwise equal to hsum512's.
inline void hsum4x4(const __m512* m, float* y, int64_t ldy) {
  __m512 s[8], t[4], u[2];
  for (int k = 0; k < 8; ++k)  // [m_2k lanes l + l+8 (l < 8), m_2k+1 likewise]
    s[k] = _mm512_add_ps(_mm512_shuffle_f32x4(m[2 * k], m[2 * k + 1], 0x44),
                         _mm512_shuffle_f32x4(m[2 * k], m[2 * k + 1], 0xee));
  for (int k = 0; k < 4; ++k)  // quarter q: m_4k+q lanes l + l+4 (l < 4)
    t[k] = _mm512_add_ps(_mm512_shuffle_f32x4(s[2 * k], s[2 * k + 1], 0x88),
                         _mm512_shuffle_f32x4(s[2 * k], s[2 * k + 1], 0xdd));
  for (int k = 0; k < 2; ++k) {  // quarter q: [m_8k+q (2 lanes), m_8k+4+q (2 lanes)]
    const __m512d a = _mm512_castps_pd(t[2 * k]), b = _mm512_castps_pd(t[2 * k + 1]);
    u[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // quarter q: [m_q, m_4+q, m_8+q, m_12+q] = row 0..3 of token q.
  const __m512 f =
      _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], 0x88), _mm512_shuffle_ps(u[0], u[1], 0xdd));
  _mm_storeu_ps(y, _mm512_castps512_ps128(f));
  _mm_storeu_ps(y + ldy, _mm512_extractf32x4_ps(f, 1));
  _mm_storeu_ps(y + 2 * ldy, _mm512_extractf32x4_ps(f, 2));
  _mm_storeu_ps(y + 3 * ldy, _mm512_extractf32x4_ps(f, 3));
}

template <class Src>
struct IntKern {
  // y for rows r .. r + NR (row i from src.row(i)) and tokens t0 .. t0 + NT.
  template <int NR, int NT>
  static void run(const MatArgs& a, const Src& src, int64_t r, int64_t t0) {
    const int64_t cols = a.cols;
    const int64_t nb = cols / kBlk;
    const int64_t np16 = 16 * ((nb + 1) / 2);
    const uint8_t* rows[NR];
    for (int i = 0; i < NR; ++i) rows[i] = src.row(i);
    const int8_t* xq = a.qa.qs + t0 * cols;
    const int32_t* xc = a.qa.corr + t0 * np16;
    const float* xd = a.qa.dxs + t0 * np16;
    __m512 acc[NR][NT];
    for (int i = 0; i < NR; ++i)
      for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      const int64_t o = 8 * b;  // offset of this pair in corr / dxs
#pragma GCC unroll 4
      for (int i = 0; i < NR; ++i) {
        const __m512i wv = Src::pair(rows[i], b);
        const __m512 dw = Src::dw2(rows[i], b);
#pragma GCC unroll 4
        for (int j = 0; j < NT; ++j) {
          const __m512i p = _mm512_dpbusd_epi32(_mm512_loadu_si512(xc + j * np16 + o), wv,
                                                _mm512_loadu_si512(xq + j * cols + b * kBlk));
          const __m512 s = _mm512_mul_ps(dw, _mm512_loadu_ps(xd + j * np16 + o));
          acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc[i][j]);
        }
      }
    }
    if (b < nb) {  // odd last block: the upper half is exactly zero
      const int64_t o = 8 * b;
      for (int i = 0; i < NR; ++i) {
        const __m256i wv = Src::single(rows[i], b);
        const __m256 dw = Src::dw1(rows[i], b);
        for (int j = 0; j < NT; ++j) {
          const __m256i p = _mm256_dpbusd_epi32(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xc + j * np16 + o)), wv,
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + j * cols + b * kBlk)));
          const __m256 s = _mm256_mul_ps(dw, _mm256_loadu_ps(xd + j * np16 + o));
          acc[i][j] = _mm512_fmadd_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(p)),
                                      _mm512_zextps256_ps512(s), acc[i][j]);
        }
      }
    }
    if constexpr (NR == 4 && NT == 4) {
      hsum4x4(&acc[0][0], a.y + t0 * a.ldy + r, a.ldy);
    } else {
      for (int i = 0; i < NR; ++i)
        for (int j = 0; j < NT; ++j) a.y[(t0 + j) * a.ldy + r + i] = hsum512(acc[i][j]);
    }
  }
};

template <class Src, int NT>
inline void run_rows(const MatArgs& a, const Src& src, int64_t nr, int64_t r, int64_t t0) {
  switch (nr) {
    case 4:
      IntKern<Src>::template run<4, NT>(a, src, r, t0);
      break;
    case 3:
      IntKern<Src>::template run<3, NT>(a, src, r, t0);
      break;
    case 2:
      IntKern<Src>::template run<2, NT>(a, src, r, t0);
      break;
    default:
      IntKern<Src>::template run<1, NT>(a, src, r, t0);
      break;
  }
}

// Tiles of up to kRowTile rows x kTokTile tokens over rows [rb, re) from src (row rb first).
template <class Src>
void run_tiles(const MatArgs& a, const Src& src0, int64_t rb, int64_t re) {
  for (int64_t t0 = 0; t0 < a.n_tok; t0 += kTokTile) {
    const int64_t nt = min64(kTokTile, a.n_tok - t0);
    for (int64_t r = rb; r < re; r += kRowTile) {
      const int64_t nr = min64(kRowTile, re - r);
      Src src = src0;
      (src.p_or_w()) += static_cast<size_t>(r - rb) * src.stride;
      switch (nt) {
        case 4:
          run_rows<Src, 4>(a, src, nr, r, t0);
          break;
        case 3:
          run_rows<Src, 3>(a, src, nr, r, t0);
          break;
        case 2:
          run_rows<Src, 2>(a, src, nr, r, t0);
          break;
        default:
          run_rows<Src, 1>(a, src, nr, r, t0);
          break;
      }
    }
  }
}

// Bytes of prepared rows per chunk (on the stack): with several token tiles, each chunk's
// weights are decoded once into PrepRows form instead of once per token tile.
constexpr int64_t kPrepBytes = 96 << 10;

template <class W>
void drive_int(const MatArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.cols / kBlk;
  const int64_t prep_stride = 128 * ((nb + 1) / 2);  // 128 bytes per block pair
  const int64_t prc = kPrepBytes / prep_stride;
  if (a.n_tok <= kTokTile || prc < kRowTile) {
    int64_t rc = kChunkBytes / static_cast<int64_t>(a.w_stride);
    if (rc < kRowTile) rc = kRowTile;
    for (int64_t rb = r0; rb < r1; rb += rc) {
      const int64_t re = min64(r1, rb + rc);
      run_tiles(a, RawRows<W>{a.w + static_cast<size_t>(rb) * a.w_stride, a.w_stride}, rb, re);
    }
    return;
  }
  alignas(64) uint8_t buf[kPrepBytes];
  for (int64_t rb = r0; rb < r1; rb += prc) {
    const int64_t re = min64(r1, rb + prc);
    for (int64_t r = rb; r < re; ++r)
      PrepRows::prepare<W>(a.w + static_cast<size_t>(r) * a.w_stride, nb,
                           buf + (r - rb) * prep_stride);
    run_tiles(a, PrepRows{buf, static_cast<size_t>(prep_stride)}, rb, re);
  }
}

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
  drive_int<Q8Rows>(a, r0, r1);
}
void matmul_q4_0(const MatArgs& a, int64_t r0, int64_t r1) {
  drive_int<Q4Rows>(a, r0, r1);
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
                             matmul_q8_0,       matmul_q4_0, quantize_acts_avx2, prep_acts,
                             dot_f32,           axpy_f32,    sum_squares,        scale_mul};
  return t;
}

}  // namespace kvserve::kernels::avx512
