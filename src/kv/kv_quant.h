// Scalar encoders and decoders of the KV row formats (kv/kv_type.h). The storage writes with
// them; the scalar attention kernel and the tests read with them. The SIMD kernels decode the
// same bytes in registers.
#pragma once

#include <cstdint>
#include <cstring>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "kv/kv_type.h"

namespace kvserve {

// OCP fp8 e4m3 ("FN": bias 7, no infinities, 0x7f / 0xff are NaN, max 448). The encoder rounds
// to nearest even, saturates at +-448 and maps NaN to 0, so it never produces a NaN code.
uint8_t fp8_e4m3_encode(float x);
float fp8_e4m3_decode(uint8_t b);

// Encodes one token row x[hd] as a per-token row of type t (f32, f16, bf16, q8, fp8, or q4 in
// its V layout). q4 in its K layout is per channel: see kv_encode_q4k_tile.
void kv_encode_row(KvType t, const float* x, uint8_t* row, int hd);
// Element c of a per-token row of type t (q4: V layout).
float kv_decode(KvType t, const uint8_t* row, int hd, int c);

// Converts x[n] to n fp16 (resp. bf16) values at out (2n bytes, any alignment), bit for bit
// fp32_to_fp16 (resp. fp32_to_bf16) of each element, NaN included: a NaN becomes the fp16
// sign | 0x7e00 (payload dropped), or the bf16 of its top bits with the quiet bit set. (Exact
// under the default round-to-nearest mode, which fp32_to_fp16's subnormal path follows.) Uses
// the best SIMD path of cpu_level() (F16C for f16); the overloads with a level force a path,
// capped at cpu_level(), for tests and benchmarks. kv_encode_row calls these for f16 and bf16.
void fp32_to_fp16_row(const float* x, void* out, int n);
void fp32_to_fp16_row(const float* x, void* out, int n, CpuLevel level);
void fp32_to_bf16_row(const float* x, void* out, int n);
void fp32_to_bf16_row(const float* x, void* out, int n, CpuLevel level);

// Quantizes a q4 K tile from n f16 rows ([n][hd], n <= block_size; n is the block size when
// called by the storage): header of per-channel scales and mins, then n nibble rows.
void kv_encode_q4k_tile(const uint16_t* rows, int n, int hd, uint8_t* tile);
// Element (slot t, channel c) of a q4 K tile.
float kv_decode_q4k(const uint8_t* tile, int hd, int t, int c);

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_fp32(h);
}
inline void store_f16(uint8_t* p, float x) {
  const uint16_t h = fp32_to_fp16(x);
  std::memcpy(p, &h, 2);
}

}  // namespace kvserve
