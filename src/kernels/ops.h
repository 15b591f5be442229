// Dense kernels of the forward pass, with run-time dispatch to AVX-512 / AVX2 / scalar.
//
// Determinism contract (batch invariance): every output element of matmul is computed with the
// same arithmetic in the same order whatever n_tok, the thread count, or which rows are
// computed together. So the cached path (one token at a time) and the recompute path (the whole
// sequence at once) produce bitwise identical activations, and so do batched and lone requests.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "model/tensor.h"

namespace kvserve::kernels {

// y[t][r] = sum_c W[r][c] * x[t][c] for t in [0, n_tok), r in [0, W.rows()).
// x: [n_tok][W.cols()] f32, y: [n_tok][W.rows()] f32. Rows are split across the pool.
// Quantized weights (q8_0, q4_0) quantize x to q8_0 blocks and use integer dot products.
void matmul(const TensorView& w, const float* x, int64_t n_tok, float* y, ThreadPool& pool);

// Several matrices applied to the same x (Q, K, V; gate, up): y_i = W_i x for each job, with
// x quantized once and one parallel pass over all their rows, so the threads meet once instead
// of once per matrix. Results are bitwise those of matmul() on each. At most 8 jobs.
struct MatmulJob {
  const TensorView* w;
  float* y;  // [n_tok][w->rows()]
};
void matmul_jobs(std::span<const MatmulJob> jobs, const float* x, int64_t n_tok, ThreadPool& pool);

struct QuantActs;  // kernels/ops_impl.h

// x prepared for matmul_jobs ahead of the call, a row at a time from whichever thread wrote
// the row: the pass that produces x (a norm, SwiGLU) quantizes each row it finishes, so the
// matmul needs no quantization pass of its own (one meeting of the threads fewer per matrix
// group). For q8_0 / q4_0 weights the rows are quantized exactly as matmul_jobs would; other
// types need nothing. Results are bitwise those of matmul_jobs(jobs, x, ...).
class MatmulInput {
 public:
  // For n_tok rows of `cols` values at x, for weights of `type` (x is read by prepare_row and,
  // for unquantized types, by the matmul).
  void reset(DType type, const float* x, int64_t n_tok, int64_t cols);
  // Row i of x is final: prepares it. Distinct rows may be prepared concurrently.
  void prepare_row(int64_t i);
  // Every row prepared. With weights of another type than reset's, or of differing types or
  // widths, x is prepared again inside the call.
  friend void matmul_jobs(std::span<const MatmulJob> jobs, const MatmulInput& in, ThreadPool& pool);

 private:
  QuantActs acts() const;  // views of the buffers below
  DType type_ = DType::kF32;
  const float* x_ = nullptr;
  int64_t n_tok_ = 0, cols_ = 0;
  bool quant_ = false;  // q8_0 / q4_0: rows quantized into the buffers below
  std::vector<int8_t> qs_;
  std::vector<float> d_;
  std::vector<int32_t> s8_, corr_;
};
void matmul_jobs(std::span<const MatmulJob> jobs, const MatmulInput& in, ThreadPool& pool);

// Packs w (q8_0 / q4_0) once into the layout the active kernels' matmul reads, so it is not
// rearranged on every call, and points w.packed at the copy. Results are bitwise equal with and
// without packing. packed_size(w) is the copy's size (a multiple of 64), 0 where the kernels
// read w's type as stored; prepack_into writes it to out (64-byte aligned, that size, owned by
// the caller: the loader packs every tensor into one arena). prepack allocates the copy itself
// and returns its owner, or nullptr (w unchanged) where there is nothing to pack.
size_t packed_size(const TensorView& w);
void prepack_into(TensorView& w, uint8_t* out);
std::shared_ptr<void> prepack(TensorView& w);

// Copies row `row` of an embedding table (any type) into out[W.cols()] as f32.
void get_row(const TensorView& w, int64_t row, float* out);

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]. out may alias x.
void rmsnorm(const float* x, const float* weight, float* out, int64_t n, float eps);

// In-place softmax over x[0, n).
void softmax(float* x, int64_t n);

// out[i] = silu(gate[i]) * up[i]. out may alias gate. Elementwise, so the result does not
// depend on how the caller splits it.
void swiglu(const float* gate, const float* up, float* out, int64_t n);

float dot_f32(const float* a, const float* b, int64_t n);
// y[i] += a * x[i]
void axpy_f32(float a, const float* x, float* y, int64_t n);

}  // namespace kvserve::kernels
