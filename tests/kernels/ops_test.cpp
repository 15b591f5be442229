// Dense kernels: every available ISA level against a double-precision reference, plus the
// batch-invariance (determinism) contract of matmul.
#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops_impl.h"
#include "kernels/quant.h"

namespace kvserve::kernels {
namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

std::vector<const KernelTable*> levels() {
  std::vector<const KernelTable*> v;
  for (CpuLevel l : {CpuLevel::kScalar, CpuLevel::kAvx2, CpuLevel::kAvx512})
    if (const KernelTable* k = kernel_table(l)) v.push_back(k);
  return v;
}

ThreadPool& pool(int n) {
  static ThreadPool p1(1), p2(2), p3(3);
  return n == 1 ? p1 : n == 2 ? p2 : p3;
}

// A weight matrix of any type built from random floats, with its dequantized values.
struct Weights {
  DType type;
  int64_t rows, cols;
  std::vector<uint8_t> data;
  std::vector<float> deq;  // [rows][cols]
  TensorView view;

  Weights(DType t, int64_t r, int64_t c, uint32_t seed) : type(t), rows(r), cols(c) {
    const size_t rb = row_bytes(t, c);
    data.resize(rb * r + 64);
    deq.resize(static_cast<size_t>(r * c));
    std::mt19937 rng(seed);
    if (t == DType::kQ4_K || t == DType::kQ6_K) {
      // Random bytes make valid k-quant blocks once the fp16 scales are tamed.
      std::uniform_int_distribution<int> byte(0, 255);
      for (size_t i = 0; i < rb * r; ++i) data[i] = static_cast<uint8_t>(byte(rng));
      const size_t bb = dtype_info(t).block_bytes;
      for (size_t off = 0; off + bb <= rb * r; off += bb) {
        const uint16_t d = fp32_to_fp16(0.01f * static_cast<float>(1 + byte(rng) % 7));
        if (t == DType::kQ4_K) {
          std::memcpy(&data[off], &d, 2);
          const uint16_t dm = fp32_to_fp16(0.003f);
          std::memcpy(&data[off + 2], &dm, 2);
        } else {
          std::memcpy(&data[off + 208], &d, 2);
        }
      }
    } else {
      const auto src = random_floats(static_cast<size_t>(r * c), seed);
      for (int64_t i = 0; i < r; ++i) quantize_row(t, src.data() + i * c, data.data() + i * rb, c);
    }
    for (int64_t i = 0; i < r; ++i) dequantize_row(t, data.data() + i * rb, deq.data() + i * c, c);
    view.name = "w";
    view.type = t;
    view.n_dims = 2;
    view.ne[0] = c;
    view.ne[1] = r;
    view.data = data.data();
    view.n_bytes = rb * r;
  }
};

// Relative tolerance (vs sum |w||x|) of each type against the reference on dequantized weights.
double tolerance(DType t) {
  switch (t) {
    case DType::kQ8_0:
    case DType::kQ4_0:
      return 1e-2;  // activations are quantized to 8 bits
    default:
      return 1e-5;
  }
}

void check_against_reference(const Weights& w, int64_t n_tok, uint32_t seed) {
  const auto x = random_floats(static_cast<size_t>(n_tok * w.cols), seed, -2.0f, 2.0f);
  std::vector<double> ref(static_cast<size_t>(n_tok * w.rows)), mag(ref.size());
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t r = 0; r < w.rows; ++r) {
      double s = 0, m = 0;
      for (int64_t c = 0; c < w.cols; ++c) {
        const double p = static_cast<double>(w.deq[r * w.cols + c]) * x[t * w.cols + c];
        s += p;
        m += std::fabs(p);
      }
      ref[t * w.rows + r] = s;
      mag[t * w.rows + r] = m;
    }
  const double tol = tolerance(w.type);
  for (const KernelTable* k : levels()) {
    std::vector<float> y(ref.size(), NAN);
    matmul_with(*k, w.view, x.data(), n_tok, y.data(), pool(2));
    for (size_t i = 0; i < y.size(); ++i) {
      ASSERT_LE(std::fabs(y[i] - ref[i]), tol * mag[i] + 1e-30)
          << dtype_name(w.type) << " level " << cpu_level_name(k->level) << " rows " << w.rows
          << " cols " << w.cols << " n_tok " << n_tok << " i " << i << " y " << y[i] << " ref "
          << ref[i];
    }
  }
}

TEST(Matmul, PlainTypesMatchReference) {
  uint32_t seed = 1;
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16})
    for (int64_t cols : {1, 7, 33, 100, 257})
      for (int64_t rows : {1, 5, 64, 129}) {
        const Weights w(t, rows, cols, seed++);
        for (int64_t n_tok : {1, 3, 17}) check_against_reference(w, n_tok, seed++);
      }
}

TEST(Matmul, QuantTypesMatchReference) {
  uint32_t seed = 1000;
  for (DType t : {DType::kQ8_0, DType::kQ4_0})
    for (int64_t cols : {32, 64, 96, 160, 288, 1024})
      for (int64_t rows : {1, 5, 64, 129}) {
        const Weights w(t, rows, cols, seed++);
        for (int64_t n_tok : {1, 3, 17}) check_against_reference(w, n_tok, seed++);
      }
}

TEST(Matmul, KQuantTypesMatchReference) {
  uint32_t seed = 2000;
  for (DType t : {DType::kQ4_K, DType::kQ6_K})
    for (int64_t cols : {256, 768})
      for (int64_t rows : {1, 5, 33}) {
        const Weights w(t, rows, cols, seed++);
        for (int64_t n_tok : {1, 3, 6}) check_against_reference(w, n_tok, seed++);
      }
}

TEST(Matmul, LargeShapesMatchReference) {
  // Several L2 chunks of rows times several token tiles.
  uint32_t seed = 3000;
  for (DType t : {DType::kF32, DType::kF16, DType::kQ8_0, DType::kQ4_0}) {
    const Weights w(t, 70, 4096 + 64 + (t == DType::kF32 ? 3 : 0), seed++);
    check_against_reference(w, 9, seed++);
  }
}

// y[t][r] must not depend on n_tok, on the other tokens of the batch, or on the thread count.
void check_determinism(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  const Weights w(t, rows, cols, seed);
  const int64_t n = 11;
  const auto x = random_floats(static_cast<size_t>(n * cols), seed + 1, -3.0f, 3.0f);
  for (const KernelTable* k : levels()) {
    const std::string what = std::string(dtype_name(t)) + " " + cpu_level_name(k->level) +
                             " rows " + std::to_string(rows) + " cols " + std::to_string(cols);
    std::vector<float> full(static_cast<size_t>(n * rows));
    matmul_with(*k, w.view, x.data(), n, full.data(), pool(1));
    for (int threads : {2, 3}) {
      std::vector<float> y(full.size());
      matmul_with(*k, w.view, x.data(), n, y.data(), pool(threads));
      ASSERT_EQ(std::memcmp(y.data(), full.data(), y.size() * 4), 0) << what << " threads";
    }
    // One token at a time.
    for (int64_t t0 = 0; t0 < n; ++t0) {
      std::vector<float> y(static_cast<size_t>(rows));
      matmul_with(*k, w.view, x.data() + t0 * cols, 1, y.data(), pool(2));
      ASSERT_EQ(std::memcmp(y.data(), full.data() + t0 * rows, rows * 4), 0) << what << " t " << t0;
    }
    // The batch reversed, and a different batch size (5 tokens) starting at an odd offset.
    std::vector<float> xr(x.size());
    for (int64_t t0 = 0; t0 < n; ++t0)
      std::memcpy(&xr[t0 * cols], &x[(n - 1 - t0) * cols], cols * 4);
    std::vector<float> yr(full.size());
    matmul_with(*k, w.view, xr.data(), n, yr.data(), pool(3));
    for (int64_t t0 = 0; t0 < n; ++t0)
      ASSERT_EQ(std::memcmp(&yr[t0 * rows], &full[(n - 1 - t0) * rows], rows * 4), 0)
          << what << " reversed t " << t0;
    std::vector<float> y5(static_cast<size_t>(5 * rows));
    matmul_with(*k, w.view, x.data() + 3 * cols, 5, y5.data(), pool(2));
    ASSERT_EQ(std::memcmp(y5.data(), full.data() + 3 * rows, y5.size() * 4), 0) << what << " sub";
  }
}

TEST(Matmul, BatchAndThreadInvariance) {
  uint32_t seed = 5000;
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    check_determinism(t, 37, 100, seed++);
    check_determinism(t, 129, 257, seed++);
    check_determinism(t, 40, 3000, seed++);
  }
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ6_K}) {
    check_determinism(t, 37, 256, seed++);
    check_determinism(t, 129, 768, seed++);
    check_determinism(t, 40, 5632, seed++);
  }
  // q8_0 / q4_0 edge cases of the tiled integer kernels: an odd number of blocks (the last one
  // alone in its pair), and rows too long for the per-chunk prepared-row buffer (AVX-512).
  for (DType t : {DType::kQ8_0, DType::kQ4_0}) {
    check_determinism(t, 37, 96, seed++);
    check_determinism(t, 70, 1056, seed++);
    check_determinism(t, 9, 12320, seed++);
  }
}

TEST(Matmul, QuantLargeShapesMatchReference) {
  // Many token tiles over several prepared row chunks, and rows longer than one chunk.
  uint32_t seed = 6000;
  for (DType t : {DType::kQ8_0, DType::kQ4_0}) {
    const Weights a(t, 203, 1056, seed++);
    check_against_reference(a, 21, seed++);
    const Weights b(t, 9, 12320, seed++);
    check_against_reference(b, 6, seed++);
  }
}

// The serving batch (2..64 rows) and prefill (hundreds) sizes of the tiled kernels: row counts
// that are not multiples of the 16- / 32-row register tiles, odd block counts, several block
// slices (cols > 512) and token counts that leave partial token tiles; against the reference
// and, bitwise, against one token at a time.
TEST(Matmul, TiledPathsServingAndPrefillSizes) {
  uint32_t seed = 7000;
  struct Shape {
    int64_t rows, cols, n_tok;
  };
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kF16, DType::kBF16, DType::kF32})
    for (const Shape sh :
         {Shape{47, 1056, 16}, Shape{33, 576, 64}, Shape{17, 96, 130}, Shape{100, 160, 7}}) {
      const Weights w(t, sh.rows, sh.cols, seed++);
      check_against_reference(w, sh.n_tok, seed++);
      const auto x = random_floats(static_cast<size_t>(sh.n_tok * sh.cols), seed++, -3.0f, 3.0f);
      for (const KernelTable* k : levels()) {
        std::vector<float> full(static_cast<size_t>(sh.n_tok * sh.rows));
        matmul_with(*k, w.view, x.data(), sh.n_tok, full.data(), pool(2));
        for (int64_t t0 : {int64_t{0}, sh.n_tok / 2, sh.n_tok - 1}) {
          std::vector<float> y(static_cast<size_t>(sh.rows));
          matmul_with(*k, w.view, x.data() + t0 * sh.cols, 1, y.data(), pool(3));
          ASSERT_EQ(std::memcmp(y.data(), full.data() + t0 * sh.rows, y.size() * 4), 0)
              << dtype_name(t) << " " << cpu_level_name(k->level) << " rows " << sh.rows << " cols "
              << sh.cols << " n_tok " << sh.n_tok << " t " << t0;
        }
      }
    }
}

// Weights packed once at load (prepack) give bitwise the results of the per-call layout, for
// every level (a level that does not pack returns no copy, and one packed for another level
// is ignored), row counts around the 16-row groups, odd block counts and several thread splits.
TEST(Matmul, PrepackedWeightsBitwiseEqual) {
  uint32_t seed = 7500;
  struct Shape {
    int64_t rows, cols;
  };
  bool any_packed = false;
  for (DType t : {DType::kQ8_0, DType::kQ4_0})
    for (const Shape sh : {Shape{1, 32}, Shape{15, 96}, Shape{16, 64}, Shape{17, 288},
                           Shape{33, 576}, Shape{47, 1056}, Shape{203, 160}}) {
      const Weights w(t, sh.rows, sh.cols, seed++);
      for (const KernelTable* k : levels()) {
        TensorView packed = w.view;
        const std::shared_ptr<void> copy = prepack_with(*k, packed);
        EXPECT_EQ(copy != nullptr, k->pack_q8_0 != nullptr);
        any_packed = any_packed || copy != nullptr;
        for (int64_t n_tok : {1, 5, 16, 64}) {
          const auto x = random_floats(static_cast<size_t>(n_tok * sh.cols), seed++, -3.0f, 3.0f);
          std::vector<float> ref(static_cast<size_t>(n_tok * sh.rows)), got(ref.size());
          matmul_with(*k, w.view, x.data(), n_tok, ref.data(), pool(1));
          for (int threads : {1, 2, 3}) {
            std::fill(got.begin(), got.end(), NAN);
            matmul_with(*k, packed, x.data(), n_tok, got.data(), pool(threads));
            ASSERT_EQ(std::memcmp(ref.data(), got.data(), ref.size() * 4), 0)
                << dtype_name(t) << " " << cpu_level_name(k->level) << " rows " << sh.rows
                << " cols " << sh.cols << " n_tok " << n_tok << " threads " << threads;
          }
          // Every other level ignores this level's packed copy.
          for (const KernelTable* other : levels()) {
            if (other == k) continue;
            std::vector<float> a(ref.size()), b(ref.size());
            matmul_with(*other, w.view, x.data(), n_tok, a.data(), pool(2));
            matmul_with(*other, packed, x.data(), n_tok, b.data(), pool(2));
            ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0);
          }
        }
      }
    }
  // Types the kernels read as stored are not packed.
  const Weights f(DType::kF16, 16, 64, seed++);
  TensorView fv = f.view;
  for (const KernelTable* k : levels()) EXPECT_EQ(prepack_with(*k, fv), nullptr);
  EXPECT_EQ(fv.packed, nullptr);
  if (!any_packed) GTEST_SKIP() << "no kernel level on this CPU packs weights";
}

// Several matrices on one input (Q/K/V, gate/up) in one pass: bitwise the separate results, for
// every level, packed or not, with row counts that split the integer kernels' row units, and
// with mixed types (run one by one).
TEST(Matmul, JobsEqualSeparateCalls) {
  uint32_t seed = 7700;
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kF16, DType::kF32, DType::kQ6_K}) {
    const int64_t cols = t == DType::kQ6_K ? 256 : 96;
    Weights a(t, 47, cols, seed++), b(t, 16, cols, seed++), c(t, 100, cols, seed++);
    const Weights mixed(DType::kF32, 9, cols, seed++);
    for (const KernelTable* k : levels()) {
      TensorView pa = a.view, pb = b.view, pc = c.view;
      const auto ka = prepack_with(*k, pa), kb = prepack_with(*k, pb), kc = prepack_with(*k, pc);
      for (int64_t n_tok : {1, 7, 16}) {
        const auto x = random_floats(static_cast<size_t>(n_tok * cols), seed++, -2.0f, 2.0f);
        std::vector<float> ya(n_tok * 47), yb(n_tok * 16), yc(n_tok * 100), ym(n_tok * 9);
        std::vector<float> ra(ya.size()), rb(yb.size()), rc(yc.size()), rm(ym.size());
        matmul_with(*k, a.view, x.data(), n_tok, ra.data(), pool(1));
        matmul_with(*k, b.view, x.data(), n_tok, rb.data(), pool(1));
        matmul_with(*k, c.view, x.data(), n_tok, rc.data(), pool(1));
        matmul_with(*k, mixed.view, x.data(), n_tok, rm.data(), pool(1));
        for (int threads : {1, 2, 3}) {
          const MatmulJob jobs[] = {
              {&pa, ya.data()}, {&pb, yb.data()}, {&pc, yc.data()}, {&mixed.view, ym.data()}};
          // The first three share a type; the mixed one makes the call go job by job.
          for (size_t n_jobs : {size_t{3}, size_t{4}}) {
            matmul_jobs_with(*k, std::span(jobs, n_jobs), x.data(), n_tok, pool(threads));
            ASSERT_EQ(std::memcmp(ya.data(), ra.data(), ya.size() * 4), 0) << dtype_name(t);
            ASSERT_EQ(std::memcmp(yb.data(), rb.data(), yb.size() * 4), 0) << dtype_name(t);
            ASSERT_EQ(std::memcmp(yc.data(), rc.data(), yc.size() * 4), 0) << dtype_name(t);
          }
          ASSERT_EQ(std::memcmp(ym.data(), rm.data(), ym.size() * 4), 0) << dtype_name(t);
        }
      }
    }
  }
}

// x prepared row by row ahead of the call (rows in any order, from several threads) gives the
// bits of matmul_jobs quantizing x itself; weights of another type than prepared for, or a
// mixed set, make the call prepare x again.
TEST(Matmul, PreparedInputEqualsJobs) {
  uint32_t seed = 7800;
  const int64_t cols = 96;
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kF16}) {
    Weights a(t, 47, cols, seed++), b(t, 33, cols, seed++);
    const Weights other(t == DType::kQ8_0 ? DType::kQ4_0 : DType::kQ8_0, 20, cols, seed++);
    TensorView pa = a.view, pb = b.view, po = other.view;
    const auto ka = prepack(pa), kb = prepack(pb), ko = prepack(po);
    for (int64_t n_tok : {1, 5, 16}) {
      const auto x = random_floats(static_cast<size_t>(n_tok * cols), seed++, -2.0f, 2.0f);
      std::vector<float> ra(n_tok * 47), rb(n_tok * 33), ro(n_tok * 20);
      const MatmulJob ref[] = {{&pa, ra.data()}, {&pb, rb.data()}};
      matmul_jobs(ref, x.data(), n_tok, pool(1));
      matmul(po, x.data(), n_tok, ro.data(), pool(1));
      MatmulInput in;
      in.reset(t, x.data(), n_tok, cols);
      pool(2).parallel_for(n_tok, 1, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r1 - 1; r >= r0; --r) in.prepare_row(r);
      });
      std::vector<float> ya(ra.size()), yb(rb.size()), yo(ro.size());
      const MatmulJob jobs[] = {{&pa, ya.data()}, {&pb, yb.data()}};
      matmul_jobs(jobs, in, pool(2));
      EXPECT_EQ(std::memcmp(ya.data(), ra.data(), ya.size() * 4), 0) << dtype_name(t);
      EXPECT_EQ(std::memcmp(yb.data(), rb.data(), yb.size() * 4), 0) << dtype_name(t);
      const MatmulJob mismatched[] = {{&po, yo.data()}};
      matmul_jobs(mismatched, in, pool(2));
      EXPECT_EQ(std::memcmp(yo.data(), ro.data(), yo.size() * 4), 0) << dtype_name(t);
    }
  }
}

TEST(Matmul, PublicEntryUsesActiveLevel) {
  const Weights w(DType::kQ8_0, 9, 64, 77);
  const auto x = random_floats(3 * 64, 78);
  std::vector<float> a(27), b(27);
  matmul(w.view, x.data(), 3, a.data(), pool(2));
  matmul_with(active_kernels(), w.view, x.data(), 3, b.data(), pool(1));
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0);
  EXPECT_EQ(active_kernels().level, cpu_level());
}

TEST(Kernels, ActivationQuantizationIdenticalOnAllLevels) {
  auto x = random_floats(32 * 20, 9, -5.0f, 5.0f);
  for (int j = 0; j < 32; ++j) x[32 + j] = 0.0f;             // zero block
  for (int j = 0; j < 32; ++j) x[64 + j] = 0.5f * (j - 16);  // exact halves: ties to even
  std::vector<int8_t> q0(x.size()), q1(x.size());
  std::vector<float> d0(20), d1(20);
  std::vector<int32_t> s0(20), s1(20);
  scalar::table().quantize_acts(x.data(), 640, q0.data(), d0.data(), s0.data());
  for (const KernelTable* k : levels()) {
    k->quantize_acts(x.data(), 640, q1.data(), d1.data(), s1.data());
    EXPECT_EQ(q0, q1) << cpu_level_name(k->level);
    EXPECT_EQ(d0, d1) << cpu_level_name(k->level);
    EXPECT_EQ(s0, s1) << cpu_level_name(k->level);
  }
  for (size_t b = 0; b < 20; ++b) {
    int32_t s = 0;
    for (int j = 0; j < 32; ++j) {
      s += q0[b * 32 + j];
      EXPECT_LE(std::fabs(d0[b] * q0[b * 32 + j] - x[b * 32 + j]), d0[b] * 0.5f * 1.0001f);
    }
    EXPECT_EQ(s0[b], -8 * s);
  }
}

TEST(Kernels, DotAxpySumSquaresAllLevels) {
  for (int64_t n : {0, 1, 5, 8, 15, 16, 17, 31, 32, 33, 100, 1000, 4099}) {
    const auto a = random_floats(static_cast<size_t>(n), 11 + n);
    const auto b = random_floats(static_cast<size_t>(n), 12 + n);
    double dot = 0, mag = 0, ss = 0;
    for (int64_t i = 0; i < n; ++i) {
      dot += static_cast<double>(a[i]) * b[i];
      mag += std::fabs(static_cast<double>(a[i]) * b[i]);
      ss += static_cast<double>(a[i]) * a[i];
    }
    for (const KernelTable* k : levels()) {
      EXPECT_NEAR(k->dot_f32(a.data(), b.data(), n), dot, 1e-5 * mag + 1e-30) << n;
      EXPECT_NEAR(k->sum_squares(a.data(), n), ss, 1e-5 * ss + 1e-30) << n;
      std::vector<float> y(b.begin(), b.end());
      y.push_back(42.0f);  // sentinel past the end must survive
      k->axpy_f32(0.75f, a.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i)
        EXPECT_NEAR(y[i], b[i] + 0.75 * a[i], 1e-6) << cpu_level_name(k->level) << " " << i;
      EXPECT_EQ(y[n], 42.0f);
    }
    EXPECT_NEAR(dot_f32(a.data(), b.data(), n), dot, 1e-5 * mag + 1e-30);
  }
}

TEST(Kernels, RmsNorm) {
  for (int64_t n : {1, 7, 64, 288, 1001}) {
    const auto x = random_floats(static_cast<size_t>(n), 21 + n, -4.0f, 4.0f);
    const auto w = random_floats(static_cast<size_t>(n), 22 + n);
    double ss = 0;
    for (float v : x) ss += static_cast<double>(v) * v;
    const double scale = 1.0 / std::sqrt(ss / n + 1e-5);
    std::vector<float> out(x.size());
    rmsnorm(x.data(), w.data(), out.data(), n, 1e-5f);
    for (int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(out[i], x[i] * scale * w[i], 1e-5 * std::fabs(x[i] * scale) + 1e-7);
    std::vector<float> inplace(x);
    rmsnorm(inplace.data(), w.data(), inplace.data(), n, 1e-5f);
    EXPECT_EQ(inplace, out);
  }
}

TEST(Kernels, Softmax) {
  for (int64_t n : {1, 2, 9, 100, 2049}) {
    auto x = random_floats(static_cast<size_t>(n), 31 + n, -20.0f, 20.0f);
    if (n > 3) x[2] = 80.0f;  // would overflow exp without the max shift
    double mx = -INFINITY, sum = 0;
    for (float v : x) mx = std::max<double>(mx, v);
    for (float v : x) sum += std::exp(v - mx);
    std::vector<float> y(x);
    softmax(y.data(), n);
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = std::exp(x[i] - mx) / sum;
      EXPECT_NEAR(y[i], want, 1e-6 * want + 1e-12) << n << " " << i;
      total += y[i];
    }
    EXPECT_NEAR(total, 1.0, 1e-5);
  }
}

TEST(Kernels, Swiglu) {
  const int64_t n = 333;
  const auto g = random_floats(n, 41, -10.0f, 10.0f);
  const auto u = random_floats(n, 42, -2.0f, 2.0f);
  std::vector<float> out(n);
  swiglu(g.data(), u.data(), out.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const double want = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
    EXPECT_NEAR(out[i], want, 1e-6 * std::fabs(want) + 1e-7);
  }
  std::vector<float> inplace(g);
  swiglu(inplace.data(), u.data(), inplace.data(), n);
  EXPECT_EQ(inplace, out);
}

TEST(Kernels, SwigluAllLevelsAndSplit) {
  // Extreme gates saturate exp on both sides.
  const int64_t n = 100003;
  auto g = random_floats(n, 43, -30.0f, 30.0f);
  g[0] = -200.0f;
  g[1] = 200.0f;
  g[2] = 0.0f;
  const auto u = random_floats(n, 44, -2.0f, 2.0f);
  for (const KernelTable* k : levels()) {
    std::vector<float> out(n);
    k->swiglu(g.data(), u.data(), out.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double want = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
      ASSERT_NEAR(out[i], want, 2e-6 * std::fabs(want) + 1e-7)
          << cpu_level_name(k->level) << " " << i << " g " << g[i];
    }
  }
  // Called row by row (the FFN does, from whichever thread has the row), with rows of a width
  // that leaves a vector tail: the same values as one call over everything.
  std::vector<float> one(n), split(n);
  swiglu(g.data(), u.data(), one.data(), n);
  for (int64_t i = 0; i < n; i += 1537)
    swiglu(g.data() + i, u.data() + i, split.data() + i, std::min<int64_t>(1537, n - i));
  EXPECT_EQ(one, split);
}

TEST(Kernels, GetRowAllTypes) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_K,
                  DType::kQ6_K}) {
    const Weights w(t, 6, 512, 55);
    std::vector<float> out(512);
    for (int64_t r = 0; r < 6; ++r) {
      get_row(w.view, r, out.data());
      EXPECT_EQ(0, std::memcmp(out.data(), w.deq.data() + r * 512, 512 * 4)) << dtype_name(t);
    }
  }
}

}  // namespace
}  // namespace kvserve::kernels
