// AVX-512 (F, BW, VL, VNNI) kernels. See ops_impl.h for the rules these files follow.
// Only AVX512F/BW/VL/VNNI instructions are used (cpu_level() checks exactly those).

// GCC 12's AVX-512 headers self-initialize their "undefined" vectors, which -Wuninitialized
// reports once inlined here; it is a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
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

// ---------------------------------------------------------------------------------------------
// q8_0 / q4_0: row-interleaved panels and a VNNI microkernel.
//
// Every output y[t][r] is computed as
//   acc = 0; for b in 0 .. nb-1: acc = fma(float(isum[r][t][b]), dw[r][b] * dx[t][b], acc)
// where isum is the exact int32 dot product of weight block b of row r with the quantized
// activation block b of token t. Integer sums are exact, so only that float chain matters,
// and it is the same whatever n_tok, the tile shape, the row range or the thread count
// (batch invariance).
//
// Layout: a group of 16 weight rows is transposed, block by block, into a panel of nb * 544
// bytes (padded to 64): first nb quant blocks of 8 vectors of 64 bytes (vector k, lane i: bytes
// 4k .. 4k+3 of row i's block, as u8: q8_0 w ^ 0x80 = w + 128, q4_0 the nibble 0..15), then
// nb x 16 fp16 weight scales. One vpdpbusd with 4 activation bytes broadcast then advances 16
// rows at once, and a block costs 8 vpdpbusd + cvt + mul + fma per (16 rows, token) with no
// horizontal sums. The u8 offset is removed by starting the int32 sum at QuantActs::corr
// (exact). Panels are as many bytes as the weights (decode streams no more memory); they are
// packed once at load (MatArgs::packed, groups in row order) or, without that, transposed per
// call into a per-thread buffer and reused for every token.

constexpr int kGroup = 16;                // rows per panel group (one zmm of lanes)
constexpr int kGroupsPerTile = 2;         // groups sharing one pass (register tile)
constexpr int kPanelQuantBytes = 8 * 64;  // one block of one group: quants
constexpr int kPanelScaleBytes = 16 * 2;  // one block of one group: fp16 scales
constexpr int kPanelBlockBytes = kPanelQuantBytes + kPanelScaleBytes;

// Bytes from one group's panel to the next (a multiple of 64, for aligned loads).
inline size_t group_stride(int64_t nb) {
  return (static_cast<size_t>(nb) * kPanelBlockBytes + 63) / 64 * 64;
}
constexpr int kTokTileInt = 6;  // tokens per register tile
// Blocks per slice when n_tok is large: a slice of two groups (70 KB) stays in L2 for every token
// tile. 16 (L1-sized) was slower, at 16 tokens and at 512: each slice costs every tile a
// start, and L2 feeds the tiles fast enough.
constexpr int64_t kKcBlocks = 64;

// Permutation indices of the 16 x 8 dword transpose (see transpose16x8).
struct TransposeIdx {
  __m512i a[3], b[3];
  TransposeIdx() {
    for (int s = 0; s < 3; ++s) {
      alignas(64) int32_t ia[16], ib[16];
      for (int l = 0; l < 16; ++l) {
        const int bit = 1 << s;
        ia[l] = (l & bit) ? 16 + (l ^ bit) : l;
        ib[l] = (l & bit) ? 16 + l : (l ^ bit);
      }
      a[s] = _mm512_load_si512(ia);
      b[s] = _mm512_load_si512(ib);
    }
  }
};

// In: z[j] = [row j dwords 0..7 | row j + 8 dwords 0..7]. Out: z[k] = [rows 0..15, dword k].
// Stage s swaps register-index bit s with lane bit s; after three stages the register index is
// the dword index and the lane is the row.
inline void transpose16x8(__m512i z[8], const TransposeIdx& ix) {
  for (int s = 0; s < 3; ++s) {
    const int bit = 1 << s;
    for (int j = 0; j < 8; ++j) {
      if (j & bit) continue;
      const __m512i lo = z[j], hi = z[j | bit];
      z[j] = _mm512_permutex2var_epi32(lo, ix.a[s], hi);
      z[j | bit] = _mm512_permutex2var_epi32(lo, ix.b[s], hi);
    }
  }
}

// Gathers the fp16 scale at the start of a block of 16 rows (byte offsets `offs` from w).
inline __m256i gather_scales(const uint8_t* w, __m512i offs) {
  const __m512i v = _mm512_i32gather_epi32(offs, w, 1);  // [d, qs0, qs1] per row
  return _mm512_cvtepi32_epi16(v);
}

struct Q8Panel {
  static constexpr int kBytes = kQ8Bytes;
  // z[j] for block b of rows j and j + 8 (row pointers already offset to the block).
  static __m512i load(const uint8_t* r0, const uint8_t* r8) {
    return _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + 2))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r8 + 2)), 1);
  }
  static __m512i fix(__m512i v) {
    return _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
  }
};

struct Q4Panel {
  static constexpr int kBytes = kQ4Bytes;
  // 128-bit quarters: [lo nibbles r0, hi nibbles r0, lo nibbles r8, hi nibbles r8].
  static __m512i load(const uint8_t* r0, const uint8_t* r8) {
    const __m256i v0 =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + 2)));
    const __m256i v8 =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r8 + 2)));
    const __m512i shifts = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
    return _mm512_and_si512(
        _mm512_srlv_epi64(_mm512_inserti64x4(_mm512_castsi256_si512(v0), v8, 1), shifts),
        _mm512_set1_epi8(0x0F));
  }
  static __m512i fix(__m512i v) { return v; }
};

// Transposes rows [r, r + nr) (nr <= 16) of blocks [0, nb) into a group panel (64-byte
// aligned, group_stride(nb) bytes). Rows past nr
// repeat row nr - 1: their lanes are computed but never stored. Prefetching looks ahead up to
// row r1_limit (the end of the caller's range).
template <class W>
void prep_group(const MatArgs& a, int64_t r, int64_t nr, int64_t nb, int64_t r1_limit,
                uint8_t* out) {
  static const TransposeIdx ix;
  const uint8_t* rp[kGroup];
  alignas(64) int32_t offs[kGroup];
  for (int i = 0; i < kGroup; ++i) {
    rp[i] = a.w + static_cast<size_t>(r + (i < nr ? i : nr - 1)) * a.w_stride;
    offs[i] = static_cast<int32_t>(rp[i] - rp[0]);
  }
  const __m512i voffs = _mm512_load_si512(offs);
  // Software prefetch of the next group's rows (contiguous after this group's), spread over
  // the blocks: sixteen interleaved row streams are a poor fit for the hardware prefetcher.
  const uint8_t* next = a.w + static_cast<size_t>(r + kGroup) * a.w_stride;
  const uint8_t* next_end = a.w + static_cast<size_t>(r1_limit) * a.w_stride;
  const int64_t next_bytes = next < next_end ? min64(next_end - next, kGroup * a.w_stride) : 0;
  const int64_t pf_per_block = (next_bytes / 64 + nb) / nb;
  for (int64_t b = 0; b < nb; ++b) {
    const size_t o = static_cast<size_t>(b) * W::kBytes;
    for (int64_t i = 0; i < pf_per_block; ++i) {
      const int64_t off = (b * pf_per_block + i) * 64;
      if (off < next_bytes) _mm_prefetch(reinterpret_cast<const char*>(next + off), _MM_HINT_T0);
    }
    __m512i z[8];
    for (int j = 0; j < 8; ++j) z[j] = W::load(rp[j] + o, rp[j + 8] + o);
    transpose16x8(z, ix);
    uint8_t* p = out + b * kPanelQuantBytes;
    for (int k = 0; k < 8; ++k) _mm512_store_si512(p + 64 * k, W::fix(z[k]));
    _mm256_store_si256(
        reinterpret_cast<__m256i*>(out + nb * kPanelQuantBytes + b * kPanelScaleBytes),
        gather_scales(rp[0] + o, voffs));
  }
}

inline __mmask16 lane_mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}

// The panels a tile reads, and what to prefetch meanwhile.
struct Panels {
  const uint8_t* p;  // group 0's panel; group g's at p + g * gstride
  size_t gstride;
  // Packed weights: this tile's share of the next panels, prefetched into L2 a little per
  // block while it computes (the hardware prefetcher alone leaves the tiles waiting on memory;
  // into L1 was slower, and further ahead no better).
  const uint8_t* pf = nullptr;
  int64_t pf_bytes = 0;
};

// Blocks [b0, b1) of G groups x NT tokens from t0, accumulating into y (first: start from 0,
// else continue from the partial sums stored in y).
template <int G, int NT>
void int_tile(const MatArgs& a, const Panels& pn, int64_t r, int64_t nr, int64_t t0, int64_t b0,
              int64_t b1, bool first) {
  const uint8_t* panel = pn.p;
  const size_t gstride = pn.gstride;
  const int64_t nb = a.cols / kBlk;
  // The tile's share of the prefetch, spread evenly over its blocks.
  const int64_t pf_step = pn.pf ? (pn.pf_bytes + (b1 - b0) * 64 - 1) / ((b1 - b0) * 64) * 64 : 0;
  const int8_t* xq[NT];
  const int32_t* xc[NT];
  const float* xd[NT];
  float* y[NT];
  __mmask16 m[G];
  for (int g = 0; g < G; ++g) m[g] = lane_mask(nr - kGroup * g);
  __m512 acc[G][NT];
  for (int t = 0; t < NT; ++t) {
    xq[t] = a.qa.qs + (t0 + t) * a.cols;
    xc[t] = a.qa.corr + (t0 + t) * nb;
    xd[t] = a.qa.d + (t0 + t) * nb;
    y[t] = a.y + (t0 + t) * a.ldy + r;
    for (int g = 0; g < G; ++g)
      acc[g][t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m[g], y[t] + kGroup * g);
  }
  const uint8_t* scales = panel + nb * kPanelQuantBytes;
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t off = (b - b0) * pf_step; off < (b - b0 + 1) * pf_step && off < pn.pf_bytes;
         off += 64)
      _mm_prefetch(reinterpret_cast<const char*>(pn.pf + off), _MM_HINT_T1);
    const uint8_t* pb = panel + b * kPanelQuantBytes;
    __m512i is[G][NT];
    for (int t = 0; t < NT; ++t) {
      const __m512i c = _mm512_set1_epi32(xc[t][b]);
      for (int g = 0; g < G; ++g) is[g][t] = c;
    }
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
      __m512i wv[G];
      for (int g = 0; g < G; ++g) wv[g] = _mm512_load_si512(pb + g * gstride + 64 * k);
      for (int t = 0; t < NT; ++t) {
        int32_t xv;
        std::memcpy(&xv, xq[t] + b * kBlk + 4 * k, 4);
        const __m512i xb = _mm512_set1_epi32(xv);
        for (int g = 0; g < G; ++g) is[g][t] = _mm512_dpbusd_epi32(is[g][t], wv[g], xb);
      }
    }
    for (int g = 0; g < G; ++g) {
      const __m512 dw = _mm512_cvtph_ps(_mm256_load_si256(
          reinterpret_cast<const __m256i*>(scales + g * gstride + b * kPanelScaleBytes)));
      for (int t = 0; t < NT; ++t) {
        const __m512 s = _mm512_mul_ps(dw, _mm512_set1_ps(xd[t][b]));
        acc[g][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[g][t]), s, acc[g][t]);
      }
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int g = 0; g < G; ++g) _mm512_mask_storeu_ps(y[t] + kGroup * g, m[g], acc[g][t]);
}

template <int G, int NT = kTokTileInt>
void int_tiles(const MatArgs& a, const Panels& pn, int64_t r, int64_t nr, int64_t t0, int64_t nt,
               int64_t b0, int64_t b1, bool first) {
  if constexpr (NT > 1) {
    if (nt < NT) return int_tiles<G, NT - 1>(a, pn, r, nr, t0, nt, b0, b1, first);
  }
  int_tile<G, NT>(a, pn, r, nr, t0, b0, b1, first);
}

// Per-thread panel buffer (grows to the largest group pair seen; never shrinks; freed when the
// thread exits).
uint8_t* panel_buffer(size_t bytes) {
  struct Buffer {
    uint8_t* p = nullptr;
    size_t cap = 0;
    ~Buffer() { std::free(p); }
  };
  thread_local Buffer buf;
  if (buf.cap < bytes) {
    std::free(buf.p);
    buf.cap = (bytes + 63) / 64 * 64;  // aligned_alloc wants a multiple of the alignment
    buf.p = static_cast<uint8_t*>(std::aligned_alloc(64, buf.cap));
  }
  return buf.p;
}

template <class W>
void drive_int(const MatArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.cols / kBlk;
  const size_t gstride = group_stride(nb);
  uint8_t* buf = a.packed ? nullptr : panel_buffer(kGroupsPerTile * gstride);
  // Few tokens: one pass over all blocks. Many: L2-sized slices of blocks, every token tile
  // per slice, partial sums kept in y between slices.
  const int64_t kc = a.n_tok <= kTokTileInt ? nb : kKcBlocks;
  for (int64_t r = r0; r < r1; r += kGroup * kGroupsPerTile) {
    const int64_t nr = min64(kGroup * kGroupsPerTile, r1 - r);
    const int groups = nr > kGroup ? 2 : 1;
    const uint8_t* panel = buf;
    if (a.packed) {
      panel = a.packed + static_cast<size_t>(r / kGroup) * gstride;
    } else {
      for (int g = 0; g < groups; ++g)
        prep_group<W>(a, r + kGroup * g, min64(kGroup, nr - kGroup * g), nb, r1, buf + g * gstride);
    }
    Panels pn{panel, gstride};
    // Past r1 too: the pool hands a thread the rows after these next (core/thread_pool.h).
    const int64_t r_next = r + kGroup * kGroupsPerTile, r_end = std::max(r1, a.rows);
    if (a.packed && r_next < r_end) {
      pn.pf = panel + groups * gstride;  // packed groups are contiguous
      pn.pf_bytes = static_cast<int64_t>(
          min64(kGroupsPerTile, (r_end - r_next + kGroup - 1) / kGroup) * gstride);
    }
    // Token tiles as even as possible (13 tokens: 5 + 4 + 4, not 6 + 6 + 1): a thin tile
    // reads the weights as often as a full one for a fraction of the work.
    const int64_t n_tiles = (a.n_tok + kTokTileInt - 1) / kTokTileInt;
    // The prefetch is spread over all (slice, tile, block) steps in order. Issued in the first
    // tile of each slice only, it outran memory at 16 tokens and stalled on full fill buffers
    // (a third of the kernel's time went to the prefetch instruction).
    const int64_t n_steps = nb * n_tiles;
    for (int64_t b0 = 0; b0 < nb; b0 += kc) {
      const int64_t b1 = min64(nb, b0 + kc);
      for (int64_t i = 0, t0 = 0; i < n_tiles; ++i) {
        const int64_t nt = a.n_tok / n_tiles + (i < a.n_tok % n_tiles ? 1 : 0);
        Panels tile = pn;
        if (pn.pf) {
          const int64_t s0 = b0 * n_tiles + i * (b1 - b0), s1 = s0 + (b1 - b0);
          const int64_t lo = pn.pf_bytes * s0 / n_steps / 64 * 64;
          const int64_t hi = s1 == n_steps ? pn.pf_bytes : pn.pf_bytes * s1 / n_steps / 64 * 64;
          tile.pf = pn.pf + lo;
          tile.pf_bytes = hi - lo;
        }
        if (groups == 2)
          int_tiles<2>(a, tile, r, nr, t0, nt, b0, b1, b0 == 0);
        else
          int_tiles<1>(a, tile, r, nr, t0, nt, b0, b1, b0 == 0);
        t0 += nt;
      }
    }
  }
}

// Packs rows [r0, r1) (r0 a multiple of kGroup) into `out`, the start of the whole matrix's
// packed copy: group r / kGroup at out + (r / kGroup) * group_stride(nb).
template <class W>
void pack_int(const MatArgs& a, int64_t r0, int64_t r1, uint8_t* out) {
  const int64_t nb = a.cols / kBlk;
  const size_t gstride = group_stride(nb);
  for (int64_t r = r0; r < r1; r += kGroup)
    prep_group<W>(a, r, min64(kGroup, r1 - r), nb, r1,
                  out + static_cast<size_t>(r / kGroup) * gstride);
}

size_t packed_bytes(int64_t rows, int64_t cols) {
  return static_cast<size_t>((rows + kGroup - 1) / kGroup) * group_stride(cols / kBlk);
}

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

// ---------------------------------------------------------------------------------------------
// f32 / f16 / bf16 weights. Every output is
//   acc = 0 (16 lanes); for each full 16-column chunk: acc = fma(w[c..c+16), x[c..c+16), acc);
//   then, if cols % 16, one zero-padded tail chunk; y = hsum512(acc)
// whatever the tile shape (hsum4x4 does the same additions), so results are batch-invariant.
// Tiles of NR rows x NT tokens share each loaded vector. With many tokens, f16 / bf16 rows are
// first widened to an f32 panel once per chunk of rows, instead of once per token tile.

constexpr int kPlainRows = 4;         // NR
constexpr int kPlainToks = 4;         // NT
constexpr int kPlainChunkRows = 32;   // rows widened together (panel), a multiple of NR
constexpr int kPlainWidenMinTok = 5;  // widen when there is more than one token tile

template <class L>
struct RawF {
  const uint8_t* w;  // row r of the tile
  size_t stride;     // bytes
  // A later tile's rows (contiguous after this tile's), prefetched while this one runs.
  const uint8_t* pf = nullptr;
  int64_t pf_bytes = 0;
  void prefetch(int64_t step) const {
    constexpr int64_t kStep = kPlainRows * 16 * L::kBytes;  // bytes a tile reads per step
    for (int64_t off = step * kStep; off < (step + 1) * kStep && off < pf_bytes; off += 64)
      _mm_prefetch(reinterpret_cast<const char*>(pf + off), _MM_HINT_T1);
  }
  __m512 load(int i, int64_t c) const { return L::load(w + i * stride + c * L::kBytes); }
  __m512 load(int i, int64_t c, __mmask16 m) const {
    return L::load(w + i * stride + c * L::kBytes, m);
  }
};

struct PanelF {
  const float* p;  // row r of the tile, widened
  size_t stride;   // floats
  __m512 load(int i, int64_t c) const { return _mm512_load_ps(p + i * stride + c); }
  __m512 load(int i, int64_t c, __mmask16 m) const {
    return _mm512_maskz_load_ps(m, p + i * stride + c);
  }
  void prefetch(int64_t) const {}
};

template <class Src, int NR, int NT>
void plain_tile(const MatArgs& a, const Src& s, int64_t r, int64_t t0) {
  const int64_t n = a.cols;
  const float* xs[NT];
  __m512 acc[NR][NT];
  for (int j = 0; j < NT; ++j) {
    xs[j] = a.x + (t0 + j) * n;
    for (int i = 0; i < NR; ++i) acc[i][j] = _mm512_setzero_ps();
  }
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    s.prefetch(c / 16);
    __m512 w[NR];
    for (int i = 0; i < NR; ++i) w[i] = s.load(i, c);
    for (int j = 0; j < NT; ++j) {
      const __m512 xv = _mm512_loadu_ps(xs[j] + c);
      for (int i = 0; i < NR; ++i) acc[i][j] = _mm512_fmadd_ps(w[i], xv, acc[i][j]);
    }
  }
  if (c < n) {
    const __mmask16 m = tail_mask16(n - c);
    __m512 w[NR];
    for (int i = 0; i < NR; ++i) w[i] = s.load(i, c, m);
    for (int j = 0; j < NT; ++j) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, xs[j] + c);
      for (int i = 0; i < NR; ++i) acc[i][j] = _mm512_fmadd_ps(w[i], xv, acc[i][j]);
    }
  }
  if constexpr (NR == 4 && NT == 4) {
    __m512 flat[16];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) flat[4 * i + j] = acc[i][j];
    hsum4x4(flat, a.y + t0 * a.ldy + r, a.ldy);
  } else {
    for (int i = 0; i < NR; ++i)
      for (int j = 0; j < NT; ++j) a.y[(t0 + j) * a.ldy + r + i] = hsum512(acc[i][j]);
  }
}

template <class Src, int NT, int NR = kPlainRows>
void plain_rows(const MatArgs& a, const Src& s, int64_t nr, int64_t r, int64_t t0) {
  if constexpr (NR > 1) {
    if (nr < NR) return plain_rows<Src, NT, NR - 1>(a, s, nr, r, t0);
  }
  plain_tile<Src, NR, NT>(a, s, r, t0);
}

template <class Src, int NT = kPlainToks>
void plain_toks(const MatArgs& a, const Src& s, int64_t nr, int64_t nt, int64_t r, int64_t t0) {
  if constexpr (NT > 1) {
    if (nt < NT) return plain_toks<Src, NT - 1>(a, s, nr, nt, r, t0);
  }
  plain_rows<Src, NT>(a, s, nr, r, t0);
}

// Token tiles x row tiles over rows [rb, re); src(r) gives the source positioned at row r.
template <class MakeSrc>
void plain_tiles(const MatArgs& a, int64_t rb, int64_t re, MakeSrc src) {
  for (int64_t t0 = 0; t0 < a.n_tok; t0 += kPlainToks) {
    const int64_t nt = min64(kPlainToks, a.n_tok - t0);
    for (int64_t r = rb; r < re; r += kPlainRows)
      plain_toks(a, src(r), min64(kPlainRows, re - r), nt, r, t0);
  }
}

template <class L>
void drive_plain(const MatArgs& a, int64_t r0, int64_t r1) {
  if (L::kBytes == 4 || a.n_tok < kPlainWidenMinTok) {
    // Rows in L2-sized chunks, each chunk reused by every token tile.
    int64_t rc = kChunkBytes / static_cast<int64_t>(a.w_stride);
    rc = rc < kPlainRows ? kPlainRows : rc - rc % kPlainRows;
    for (int64_t rb = r0; rb < r1; rb += rc)
      plain_tiles(a, rb, min64(r1, rb + rc), [&](int64_t r) {
        RawF<L> src{a.w + static_cast<size_t>(r) * a.w_stride, a.w_stride};
        // Only for a single token tile: with more, the chunk is already in cache.
        if (a.n_tok <= kPlainToks) {
          // Two tiles ahead, into L2 (measured: 1.2x the decode speed of one tile ahead into L1).
          const int64_t ahead = 2 * kPlainRows;
          if (r + ahead < r1) {
            src.pf = src.w + ahead * a.w_stride;
            src.pf_bytes = static_cast<int64_t>(min64(kPlainRows, r1 - r - ahead) * a.w_stride);
          }
        }
        return src;
      });
    return;
  }
  const size_t ld = static_cast<size_t>((a.cols + 15) / 16 * 16);  // panel row stride, floats
  float* panel = reinterpret_cast<float*>(panel_buffer(kPlainChunkRows * ld * sizeof(float)));
  for (int64_t rb = r0; rb < r1; rb += kPlainChunkRows) {
    const int64_t re = min64(r1, rb + kPlainChunkRows);
    for (int64_t r = rb; r < re; ++r) {
      const uint8_t* w = a.w + static_cast<size_t>(r) * a.w_stride;
      float* p = panel + (r - rb) * ld;
      int64_t c = 0;
      for (; c + 16 <= a.cols; c += 16) _mm512_store_ps(p + c, L::load(w + c * L::kBytes));
      if (c < a.cols) _mm512_store_ps(p + c, L::load(w + c * L::kBytes, tail_mask16(a.cols - c)));
    }
    plain_tiles(a, rb, re, [&](int64_t r) { return PanelF{panel + (r - rb) * ld, ld}; });
  }
}

void matmul_f32(const MatArgs& a, int64_t r0, int64_t r1) {
  drive_plain<LoadF32>(a, r0, r1);
}
void matmul_f16(const MatArgs& a, int64_t r0, int64_t r1) {
  drive_plain<LoadF16>(a, r0, r1);
}
void matmul_bf16(const MatArgs& a, int64_t r0, int64_t r1) {
  drive_plain<LoadBF16>(a, r0, r1);
}
void matmul_q8_0(const MatArgs& a, int64_t r0, int64_t r1) {
  drive_int<Q8Panel>(a, r0, r1);
}
void matmul_q4_0(const MatArgs& a, int64_t r0, int64_t r1) {
  drive_int<Q4Panel>(a, r0, r1);
}
void pack_q8_0(const MatArgs& a, int64_t r0, int64_t r1, uint8_t* out) {
  pack_int<Q8Panel>(a, r0, r1, out);
}
void pack_q4_0(const MatArgs& a, int64_t r0, int64_t r1, uint8_t* out) {
  pack_int<Q4Panel>(a, r0, r1, out);
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

// e^x for x in [-88, 88] (clamped), Cephes' single-precision polynomial: about 1 ulp. SiLU
// needs both signs; softmax's exponential (exp_neg in attention_simd.inc) only x <= 0.
inline __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-88.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask16(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

// fp32 -> fp16 / bf16 rows of the KV cache (KernelTable::fp16_row); the same conversions as
// the AVX2 ones (see ops_avx2.cpp for why they match the scalar bits), 16 lanes at a time.
constexpr int kCvtRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

int64_t fp16_row(const float* x, uint8_t* out, int64_t n) {
  const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  const __m512i qnan = _mm512_set1_epi32(0x7fc00000);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    // (v & sign) | qnan in the NaN lanes (ternary-logic table 0xea = A & B | C).
    const __m512i u = _mm512_mask_ternarylogic_epi32(_mm512_castps_si512(v), nan, sign, qnan, 0xea);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2 * i),
                        _mm512_cvtps_ph(_mm512_castsi512_ps(u), kCvtRound));
  }
  return i;
}

int64_t bf16_row(const float* x, uint8_t* out, int64_t n) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  const __m512i inf = _mm512_set1_epi32(0x7f800000);
  const __m512i half = _mm512_set1_epi32(0x7fff);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i quiet = _mm512_set1_epi32(64);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_loadu_si512(x + i);
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, abs_mask), inf);
    const __m512i hi = _mm512_srli_epi32(u, 16);
    const __m512i lsb = _mm512_and_si512(hi, one);
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, half), lsb), 16);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, quiet));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2 * i), _mm512_cvtepi32_epi16(r));
  }
  return i;
}

}  // namespace

const KernelTable& table() {
  static const KernelTable t{CpuLevel::kAvx512,
                             matmul_f32,
                             matmul_f16,
                             matmul_bf16,
                             matmul_q8_0,
                             matmul_q4_0,
                             quantize_acts_avx2,
                             true,
                             kGroup * kGroupsPerTile,
                             dot_f32,
                             axpy_f32,
                             sum_squares,
                             scale_mul,
                             swiglu,
                             packed_bytes,
                             pack_q8_0,
                             pack_q4_0,
                             fp16_row,
                             bf16_row};
  return t;
}

}  // namespace kvserve::kernels::avx512
