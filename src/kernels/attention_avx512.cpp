// AVX-512 loops of the paged attention kernel (head_dim a multiple of 16). See attention_impl.h.
#include <immintrin.h>

#include "kernels/attention_impl.h"

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
#define VLOAD_BF16(p)                                                                       \
  _mm512_castsi512_ps(_mm512_slli_epi32(                                                    \
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16))
#define ATTN_TILE_FNS_NAME attn_tile_fns_avx512

#include "kernels/attention_simd.inc"
