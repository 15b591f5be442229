// Internal: per-ISA kernel tables behind the dispatch in ops.cpp.
//
// The *_avx2.cpp / *_avx512.cpp files are compiled with wider ISA flags, so they must not emit
// any inline function that baseline code could also use (the linker would keep one copy, maybe
// the AVX-512 one). They therefore include only this header, <immintrin.h> and POD structs, and
// take raw pointers rather than TensorView.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "core/cpu_features.h"

namespace kvserve {
struct TensorView;
class ThreadPool;
}  // namespace kvserve

namespace kvserve::kernels {

struct MatmulJob;  // ops.h

// Activations quantized to 32-element blocks (like q8_0 with a float scale) for the integer
// matmul kernels. Token t's data starts at qs + t * cols, d + t * nb, s8 + t * nb.
struct QuantActs {
  const int8_t* qs;   // [n_tok][cols] quantized values, |q| <= 127
  const float* d;     // [n_tok][nb] block scales: x ~= d * q
  const int32_t* s8;  // [n_tok][nb] -8 * (sum of the block's qs): q4_0 offset correction
  // [n_tok][nb] the block's integer correction for kernels that take weights as unsigned bytes:
  // q8_0 (w + 128 as u8): -128 * sum(qs) = 16 * s8; q4_0 (nibbles 0..15): s8. Filled by
  // matmul_with only where the table asks for it (KernelTable::wants_corr), else nullptr.
  const int32_t* corr;
};

struct MatArgs {
  const uint8_t* w;  // weight rows, w_stride bytes apart
  size_t w_stride;
  int64_t cols;
  int64_t n_tok;
  const float* x;  // [n_tok][cols] f32 activations (f32 / f16 / bf16 weights)
  QuantActs qa;    // quantized activations (q8_0 / q4_0 weights)
  float* y;        // y[t * ldy + r]
  int64_t ldy;
  int64_t rows = 0;  // the whole matrix's rows (0: unknown); a call may prefetch up to them
  // q8_0 / q4_0: the whole matrix already in the table's panel layout (KernelTable::pack_*),
  // or nullptr (the kernel reads w and arranges it itself).
  const uint8_t* packed;
};

// Computes y for rows [r0, r1) and all tokens. Every (t, r) output is produced by the same
// sequence of operations whatever r0, r1 and n_tok are (batch invariance).
using MatmulFn = void (*)(const MatArgs& a, int64_t r0, int64_t r1);

struct KernelTable {
  CpuLevel level;
  MatmulFn matmul_f32;
  MatmulFn matmul_f16;
  MatmulFn matmul_bf16;
  MatmulFn matmul_q8_0;
  MatmulFn matmul_q4_0;
  // Quantizes one activation row of n (multiple of 32) floats: d = amax/127, q = round-to-even
  // of x * (1/d). Identical results on every level.
  void (*quantize_acts)(const float* x, int64_t n, int8_t* qs, float* d, int32_t* s8);
  // True when the q8_0 / q4_0 kernels read QuantActs::corr.
  bool wants_corr;
  // The q8_0 / q4_0 kernels are called on row ranges starting at multiples of this (their
  // register tiles span that many rows); the last range may end anywhere.
  int quant_row_unit;
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  void (*axpy_f32)(float a, const float* x, float* y, int64_t n);
  float (*sum_squares)(const float* x, int64_t n);
  // out[i] = (s * x[i]) * w[i]
  void (*scale_mul)(const float* x, float s, const float* w, float* out, int64_t n);
  // out[i] = silu(gate[i]) * up[i]; out may alias gate.
  void (*swiglu)(const float* gate, const float* up, float* out, int64_t n);
  // Optional (nullptr where a level reads weights as stored): packing q8_0 / q4_0 weights once
  // into the layout the matmul kernels use, so they skip rearranging them on every call.
  // packed_bytes(rows, cols) is the size of the whole matrix packed; pack_*(a, r0, r1, out)
  // writes rows [r0, r1) of a.w (r0 a multiple of quant_row_unit) into out, the whole
  // matrix's buffer (64-byte aligned). Results with and without packing are bitwise equal.
  size_t (*packed_bytes)(int64_t rows, int64_t cols);
  void (*pack_q8_0)(const MatArgs& a, int64_t r0, int64_t r1, uint8_t* out);
  void (*pack_q4_0)(const MatArgs& a, int64_t r0, int64_t r1, uint8_t* out);
  // KV cache row conversion (kv/kv_quant.h): converts x[0, m) to fp16 (resp. bf16) bits at
  // out (2 bytes each, any alignment), for the largest m <= n the level does in whole vectors,
  // bit for bit fp32_to_fp16 (resp. fp32_to_bf16) NaNs included, and returns m; the caller
  // converts the tail with the scalar code. nullptr where a level has no vector path.
  int64_t (*fp16_row)(const float* x, uint8_t* out, int64_t n);
  int64_t (*bf16_row)(const float* x, uint8_t* out, int64_t n);
};

// The table for a level, or nullptr where this CPU (or build) lacks it. kScalar always exists.
const KernelTable* kernel_table(CpuLevel level);
// The table for cpu_level(), chosen once per process.
const KernelTable& active_kernels();

// matmul and prepack with an explicit table (tests compare levels with them). matmul_with uses
// w.packed only when it was packed for k.
void matmul_with(const KernelTable& k, const TensorView& w, const float* x, int64_t n_tok, float* y,
                 ThreadPool& pool);
std::shared_ptr<void> prepack_with(const KernelTable& k, TensorView& w);
size_t packed_size_with(const KernelTable& k, const TensorView& w);
void prepack_into_with(const KernelTable& k, TensorView& w, uint8_t* out);
void matmul_jobs_with(const KernelTable& k, std::span<const MatmulJob> jobs, const float* x,
                      int64_t n_tok, ThreadPool& pool);

namespace scalar {
const KernelTable& table();
}
namespace avx2 {
const KernelTable& table();
}
namespace avx512 {
const KernelTable& table();
}

}  // namespace kvserve::kernels
