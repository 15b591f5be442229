// Dispatch for the dense kernels, and the portable scalar implementations.
#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/assert.h"
#include "core/cpu_features.h"
#include "core/huge_pages.h"
#include "kernels/ops_impl.h"
#include "kernels/quant.h"

namespace kvserve::kernels {

// ---------------------------------------------------------------------------------------------
// Scalar kernels. Baseline x86-64 has no FMA, so the compiler cannot contract a*b+c here and
// every sum below is evaluated exactly in the written order.
namespace scalar {
namespace {

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

template <typename Load>
void matmul_plain(const MatArgs& a, int64_t r0, int64_t r1, Load load) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* w = a.w + static_cast<size_t>(r) * a.w_stride;
    for (int64_t t = 0; t < a.n_tok; ++t) {
      const float* x = a.x + t * a.cols;
      float acc = 0.0f;
      for (int64_t c = 0; c < a.cols; ++c) acc += load(w, c) * x[c];
      a.y[t * a.ldy + r] = acc;
    }
  }
}

void matmul_f32(const MatArgs& a, int64_t r0, int64_t r1) {
  matmul_plain(a, r0, r1, [](const uint8_t* w, int64_t c) {
    float v;
    std::memcpy(&v, w + 4 * c, 4);
    return v;
  });
}

void matmul_f16(const MatArgs& a, int64_t r0, int64_t r1) {
  matmul_plain(a, r0, r1,
               [](const uint8_t* w, int64_t c) { return fp16_to_fp32(load_u16(w + 2 * c)); });
}

void matmul_bf16(const MatArgs& a, int64_t r0, int64_t r1) {
  matmul_plain(a, r0, r1,
               [](const uint8_t* w, int64_t c) { return bf16_to_fp32(load_u16(w + 2 * c)); });
}

void matmul_q8_0(const MatArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.cols / kQK8_0;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* w = a.w + static_cast<size_t>(r) * a.w_stride;
    for (int64_t t = 0; t < a.n_tok; ++t) {
      const int8_t* xq = a.qa.qs + t * a.cols;
      const float* xd = a.qa.d + t * nb;
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = w + b * sizeof(BlockQ8_0);
        const int8_t* wq = reinterpret_cast<const int8_t*>(blk + 2);
        int32_t s = 0;
        for (int j = 0; j < kQK8_0; ++j) s += wq[j] * xq[b * kQK8_0 + j];
        acc += (fp16_to_fp32(load_u16(blk)) * xd[b]) * static_cast<float>(s);
      }
      a.y[t * a.ldy + r] = acc;
    }
  }
}

void matmul_q4_0(const MatArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.cols / kQK4_0;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* w = a.w + static_cast<size_t>(r) * a.w_stride;
    for (int64_t t = 0; t < a.n_tok; ++t) {
      const int8_t* xq = a.qa.qs + t * a.cols;
      const float* xd = a.qa.d + t * nb;
      const int32_t* xs = a.qa.s8 + t * nb;
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = w + b * sizeof(BlockQ4_0);
        const uint8_t* qs = blk + 2;
        const int8_t* xb = xq + b * kQK4_0;
        int32_t s = xs[b];  // sum (q - 8) * x = sum q * x - 8 * sum x
        for (int j = 0; j < kQK4_0 / 2; ++j)
          s += (qs[j] & 0x0F) * xb[j] + (qs[j] >> 4) * xb[j + kQK4_0 / 2];
        acc += (fp16_to_fp32(load_u16(blk)) * xd[b]) * static_cast<float>(s);
      }
      a.y[t * a.ldy + r] = acc;
    }
  }
}

void quantize_acts(const float* x, int64_t n, int8_t* qs, float* d, int32_t* s8) {
  const int64_t nb = n / kQK8_0;
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * kQK8_0;
    float amax = 0.0f;
    for (int j = 0; j < kQK8_0; ++j) {
      const float v = std::fabs(xb[j]);
      amax = v > amax ? v : amax;
    }
    const float db = amax / 127.0f;
    const float id = db != 0.0f ? 1.0f / db : 0.0f;
    int32_t sum = 0;
    for (int j = 0; j < kQK8_0; ++j) {
      const int q = static_cast<int>(std::nearbyint(xb[j] * id));
      qs[b * kQK8_0 + j] = static_cast<int8_t>(q);
      sum += q;
    }
    d[b] = db;
    s8[b] = -8 * sum;
  }
}

float dot_f32(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

float sum_squares(const float* x, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += x[i] * x[i];
  return acc;
}

void scale_mul(const float* x, float s, const float* w, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = (s * x[i]) * w[i];
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace

const KernelTable& table() {
  static const KernelTable t{CpuLevel::kScalar, matmul_f32,    matmul_f16, matmul_bf16, matmul_q8_0,
                             matmul_q4_0,       quantize_acts, false,      1,           dot_f32,
                             axpy_f32,          sum_squares,   scale_mul,  swiglu,      nullptr,
                             nullptr,           nullptr,       nullptr,    nullptr};
  return t;
}

}  // namespace scalar

// ---------------------------------------------------------------------------------------------
// Dispatch.

const KernelTable* kernel_table(CpuLevel level) {
  const CpuFeatures& f = cpu_features();
  switch (level) {
    case CpuLevel::kScalar:
      return &scalar::table();
    case CpuLevel::kAvx2:
      if (f.avx2 && f.fma && f.f16c) return &avx2::table();
      return nullptr;
    case CpuLevel::kAvx512:
      if (f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni)
        return &avx512::table();
      return nullptr;
  }
  return nullptr;
}

const KernelTable& active_kernels() {
  static const KernelTable* t = [] {
    const KernelTable* k = kernel_table(cpu_level());
    return k ? k : &scalar::table();
  }();
  return *t;
}

namespace {

// Per-thread scratch reused across calls, so the hot path does not allocate once warm.
struct Scratch {
  std::vector<int8_t> qs;
  std::vector<float> d;
  std::vector<int32_t> s8;
  std::vector<int32_t> corr;  // QuantActs::corr
  std::vector<float> row;     // dequantized weight row (q4_k / q6_k path)
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

template <typename T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace

namespace {

MatmulFn matmul_fn(const KernelTable& k, DType t) {
  switch (t) {
    case DType::kF32:
      return k.matmul_f32;
    case DType::kF16:
      return k.matmul_f16;
    case DType::kBF16:
      return k.matmul_bf16;
    case DType::kQ8_0:
      return k.matmul_q8_0;
    case DType::kQ4_0:
      return k.matmul_q4_0;
    default:
      return nullptr;  // k-quants: dequantized rows (matmul_kquant)
  }
}

// Weight types whose kernels take x quantized to q8_0 blocks (QuantActs).
bool quantizes_x(DType t) {
  return t == DType::kQ8_0 || t == DType::kQ4_0;
}

// Row i of x quantized into qa's buffers (QuantActs layout) for weight type t.
void quantize_x_row(const KernelTable& k, DType t, const float* x, int64_t i, int64_t cols,
                    const QuantActs& qa) {
  const int64_t nb = cols / kQK8_0;
  int8_t* qs = const_cast<int8_t*>(qa.qs) + i * cols;
  float* d = const_cast<float*>(qa.d) + i * nb;
  int32_t* s8 = const_cast<int32_t*>(qa.s8) + i * nb;
  k.quantize_acts(x + i * cols, cols, qs, d, s8);
  if (!qa.corr) return;
  const int32_t corr_mul = t == DType::kQ8_0 ? 16 : 1;
  int32_t* corr = const_cast<int32_t*>(qa.corr) + i * nb;
  for (int64_t b = 0; b < nb; ++b) corr[b] = corr_mul * s8[b];
}

// x quantized to q8_0 blocks for the integer kernels of weight type t (per-thread scratch).
QuantActs quantize_x(const KernelTable& k, DType t, const float* x, int64_t n_tok, int64_t cols,
                     ThreadPool& pool) {
  KV_ASSERT(cols % kQK8_0 == 0);
  const int64_t nb = cols / kQK8_0;
  Scratch& s = scratch();
  int8_t* qs = grow(s.qs, static_cast<size_t>(n_tok * cols));
  float* d = grow(s.d, static_cast<size_t>(n_tok * nb));
  int32_t* s8 = grow(s.s8, static_cast<size_t>(n_tok * nb));
  int32_t* corr = k.wants_corr ? grow(s.corr, static_cast<size_t>(n_tok * nb)) : nullptr;
  const QuantActs qa{qs, d, s8, corr};
  auto quant = [&](int64_t t0, int64_t t1) {
    for (int64_t i = t0; i < t1; ++i) quantize_x_row(k, t, x, i, cols, qa);
  };
  // Split from a few thousand values on: in a batched decode step the other threads would
  // otherwise wait for this before every matmul.
  if (n_tok >= 2 && n_tok * cols >= 8 * 1024)
    pool.parallel_for(n_tok, std::max<int64_t>(1, 4096 / cols), quant);
  else
    quant(0, n_tok);
  return qa;
}

// q4_K / q6_K: each weight row dequantized once, then an f32 dot per token.
void matmul_kquant(const KernelTable& k, const TensorView& w, const float* x, int64_t n_tok,
                   float* y, int64_t grain, ThreadPool& pool) {
  const int64_t rows = w.rows(), cols = w.cols();
  pool.parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
    float* buf = grow(scratch().row, static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      dequantize_row(w.type, w.row(r), buf, cols);
      for (int64_t t = 0; t < n_tok; ++t) y[t * rows + r] = k.dot_f32(buf, x + t * cols, cols);
    }
  });
}

}  // namespace

namespace {

// matmul_jobs_with, with x already quantized (pre) or not (nullptr).
void matmul_jobs_impl(const KernelTable& k, std::span<const MatmulJob> jobs, const float* x,
                      int64_t n_tok, ThreadPool& pool, const QuantActs* pre) {
  if (jobs.empty() || n_tok <= 0) return;
  const TensorView& w0 = *jobs[0].w;
  const int64_t cols = w0.cols();
  bool same = true;
  for (const MatmulJob& j : jobs) same = same && j.w->type == w0.type && j.w->cols() == cols;
  if (!same) {  // one input, several layouts: one job at a time
    for (const MatmulJob& j : jobs) matmul_jobs_impl(k, {&j, 1}, x, n_tok, pool, nullptr);
    return;
  }
  // Enough work per task that dispatch overhead stays small (~32 KiB of weights per token).
  const int64_t work_per_row = static_cast<int64_t>(w0.row_stride()) * n_tok;
  const int64_t grain = std::max<int64_t>(4, (32 * 1024 + work_per_row - 1) / work_per_row);
  const MatmulFn fn = matmul_fn(k, w0.type);
  if (!fn) {
    for (const MatmulJob& j : jobs) matmul_kquant(k, *j.w, x, n_tok, j.y, grain, pool);
    return;
  }
  const bool quant = quantizes_x(w0.type);
  const QuantActs qa = !quant ? QuantActs{}
                       : pre  ? *pre
                              : quantize_x(k, w0.type, x, n_tok, cols, pool);
  // Every job's rows cut into units (the integer kernels' row tiles), numbered across jobs, so
  // one parallel pass covers them all and a thread moves on to the next matrix when one ends.
  const int64_t unit = quant ? k.quant_row_unit : 1;
  constexpr size_t kMaxJobs = 8;
  KV_ASSERT(jobs.size() <= kMaxJobs);
  MatArgs args[kMaxJobs];
  int64_t first_unit[kMaxJobs + 1] = {0};
  for (size_t i = 0; i < jobs.size(); ++i) {
    const TensorView& w = *jobs[i].w;
    MatArgs& a = args[i];
    a = MatArgs{};
    a.w = static_cast<const uint8_t*>(w.data);
    a.w_stride = w.row_stride();
    a.cols = cols;
    a.n_tok = n_tok;
    a.x = x;
    a.qa = qa;
    a.y = jobs[i].y;
    a.ldy = w.rows();
    a.rows = w.rows();
    a.packed = w.packed_for == &k ? w.packed : nullptr;
    first_unit[i + 1] = first_unit[i] + (w.rows() + unit - 1) / unit;
  }
  const int64_t unit_grain = std::max<int64_t>(1, (grain + unit - 1) / unit);
  const size_t n_jobs = jobs.size();
  pool.parallel_for(first_unit[n_jobs], unit_grain, [&](int64_t u0, int64_t u1) {
    for (size_t i = 0; i < n_jobs && u0 < u1; ++i) {
      const int64_t b = std::max(u0, first_unit[i]), e = std::min(u1, first_unit[i + 1]);
      if (b >= e) continue;
      fn(args[i], (b - first_unit[i]) * unit, std::min(args[i].rows, (e - first_unit[i]) * unit));
    }
  });
}

}  // namespace

void matmul_jobs_with(const KernelTable& k, std::span<const MatmulJob> jobs, const float* x,
                      int64_t n_tok, ThreadPool& pool) {
  matmul_jobs_impl(k, jobs, x, n_tok, pool, nullptr);
}

void MatmulInput::reset(DType type, const float* x, int64_t n_tok, int64_t cols) {
  type_ = type;
  x_ = x;
  n_tok_ = n_tok;
  cols_ = cols;
  quant_ = quantizes_x(type) && cols % kQK8_0 == 0;
  if (!quant_) return;
  const size_t nb = static_cast<size_t>(n_tok * (cols / kQK8_0));
  qs_.resize(static_cast<size_t>(n_tok * cols));
  d_.resize(nb);
  s8_.resize(nb);
  corr_.resize(active_kernels().wants_corr ? nb : 0);
}

QuantActs MatmulInput::acts() const {
  return {qs_.data(), d_.data(), s8_.data(), corr_.empty() ? nullptr : corr_.data()};
}

void MatmulInput::prepare_row(int64_t i) {
  KV_ASSERT(i >= 0 && i < n_tok_);
  if (!quant_) return;
  quantize_x_row(active_kernels(), type_, x_, i, cols_, acts());
}

void matmul_jobs(std::span<const MatmulJob> jobs, const MatmulInput& in, ThreadPool& pool) {
  bool ready = in.quant_;
  for (const MatmulJob& j : jobs) ready = ready && j.w->type == in.type_ && j.w->cols() == in.cols_;
  const QuantActs qa = in.acts();
  matmul_jobs_impl(active_kernels(), jobs, in.x_, in.n_tok_, pool, ready ? &qa : nullptr);
}

void matmul_with(const KernelTable& k, const TensorView& w, const float* x, int64_t n_tok, float* y,
                 ThreadPool& pool) {
  if (w.rows() <= 0) return;
  const MatmulJob job{&w, y};
  matmul_jobs_with(k, {&job, 1}, x, n_tok, pool);
}

namespace {

using PackFn = void (*)(const MatArgs& a, int64_t r0, int64_t r1, uint8_t* out);

PackFn pack_fn(const KernelTable& k, const TensorView& w) {
  const PackFn pack = w.type == DType::kQ8_0   ? k.pack_q8_0
                      : w.type == DType::kQ4_0 ? k.pack_q4_0
                                               : nullptr;
  if (!pack || !k.packed_bytes || !w.present() || w.cols() % kQK8_0 != 0) return nullptr;
  return pack;
}

}  // namespace

size_t packed_size_with(const KernelTable& k, const TensorView& w) {
  if (!pack_fn(k, w)) return 0;
  return (k.packed_bytes(w.rows(), w.cols()) + 63) / 64 * 64;
}

void prepack_into_with(const KernelTable& k, TensorView& w, uint8_t* out) {
  const PackFn pack = pack_fn(k, w);
  KV_ASSERT(pack != nullptr && reinterpret_cast<uintptr_t>(out) % 64 == 0);
  MatArgs a{};
  a.w = static_cast<const uint8_t*>(w.data);
  a.w_stride = w.row_stride();
  a.cols = w.cols();
  pack(a, 0, w.rows(), out);
  w.packed = out;
  w.packed_for = &k;
}

std::shared_ptr<void> prepack_with(const KernelTable& k, TensorView& w) {
  const size_t bytes = packed_size_with(k, w);
  if (bytes == 0) return nullptr;
  std::shared_ptr<void> buf = alloc_huge_pages(bytes);
  if (!buf) return nullptr;  // no memory for the copy: the kernels pack per call instead
  prepack_into_with(k, w, static_cast<uint8_t*>(buf.get()));
  return buf;
}

size_t packed_size(const TensorView& w) {
  return packed_size_with(active_kernels(), w);
}

void prepack_into(TensorView& w, uint8_t* out) {
  prepack_into_with(active_kernels(), w, out);
}

std::shared_ptr<void> prepack(TensorView& w) {
  return prepack_with(active_kernels(), w);
}

void matmul(const TensorView& w, const float* x, int64_t n_tok, float* y, ThreadPool& pool) {
  matmul_with(active_kernels(), w, x, n_tok, y, pool);
}

void matmul_jobs(std::span<const MatmulJob> jobs, const float* x, int64_t n_tok, ThreadPool& pool) {
  matmul_jobs_with(active_kernels(), jobs, x, n_tok, pool);
}

void get_row(const TensorView& w, int64_t row, float* out) {
  dequantize_row(w.type, w.row(row), out, w.cols());
}

void rmsnorm(const float* x, const float* weight, float* out, int64_t n, float eps) {
  const KernelTable& k = active_kernels();
  float ss = k.sum_squares(x, n);
  ss = ss / static_cast<float>(n) + eps;
  const float scale = 1.0f / std::sqrt(ss);
  k.scale_mul(x, scale, weight, out, n);
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float s = static_cast<float>(sum);
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / s;
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  active_kernels().swiglu(gate, up, out, n);
}

float dot_f32(const float* a, const float* b, int64_t n) {
  return active_kernels().dot_f32(a, b, n);
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
  active_kernels().axpy_f32(a, x, y, n);
}

}  // namespace kvserve::kernels
