#include "engine/model_runner.h"

#include <algorithm>
#include <cmath>

#include "core/assert.h"
#include "kernels/attention.h"
#include "kernels/ops.h"

namespace kvserve {

namespace {

void add_bias(float* y, const TensorView& b, int n_rows, int dim) {
  if (!b.present()) return;
  const float* bias = static_cast<const float*>(b.data);
  for (int r = 0; r < n_rows; ++r) {
    for (int i = 0; i < dim; ++i) y[static_cast<size_t>(r) * dim + i] += bias[i];
  }
}

void add_into(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] += y[i];
}

// Row-wise work over the pool once there are enough rows to pay for the hand-off: tasks of
// about 4K values (each row's result is the same whichever thread computes it).
template <class F>
void for_rows(ThreadPool& pool, int n_rows, int dim, F&& fn) {
  const int rows_per_task = std::max(1, 4096 / dim);
  if (n_rows < 2 * rows_per_task) {
    for (int r = 0; r < n_rows; ++r) fn(r);
    return;
  }
  pool.parallel_for(n_rows, rows_per_task, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) fn(static_cast<int>(r));
  });
}

// out = rmsnorm(x), after x += residual where residual is given, each row then prepared for
// the matmul that reads out (quantized): the previous block's output joins the residual stream
// and the next matmul's input is ready in one pass over the pool, where a serial add and a
// quantization pass each left a core idle.
void rmsnorm_rows(float* x, const float* residual, const TensorView& w, float* out, int n_rows,
                  int dim, float eps, kernels::MatmulInput& next, ThreadPool& pool) {
  for_rows(pool, n_rows, dim, [&](int r) {
    float* xr = x + static_cast<size_t>(r) * dim;
    if (residual) add_into(xr, residual + static_cast<size_t>(r) * dim, dim);
    kernels::rmsnorm(xr, static_cast<const float*>(w.data), out + static_cast<size_t>(r) * dim, dim,
                     eps);
    next.prepare_row(r);
  });
}

}  // namespace

ModelRunner::ModelRunner(const Model& model, KvStorage& kv, ThreadPool& pool,
                         const KvPolicy& policy, KSmoothing k_smooth)
    : model_(model),
      cfg_(model.config),
      kv_(kv),
      pool_(pool),
      rope_(model.config, model.rope_freqs.present()
                              ? static_cast<const float*>(model.rope_freqs.data)
                              : nullptr),
      k_smooth_(std::move(k_smooth)) {
  KV_ASSERT(kv.layout().n_layer == cfg_.n_layer && kv.layout().n_head_kv == cfg_.n_head_kv &&
            kv.layout().head_dim == cfg_.head_dim);
  KV_ASSERT(k_smooth_.div.empty() || static_cast<int>(k_smooth_.div.size()) == cfg_.n_layer);
  if (const auto* w = std::get_if<WindowKv>(&policy)) window_ = *w;
  if (window_.sink > 0) {
    // StreamingLLM positions: with the window full, the cache reads as sinks at 0..S-1 followed
    // by the window, the query last, at S + W - 1. Window keys keep their true distance to the
    // query; a sink key (rotated at its own position i) must look S + W - 1 - i away, which is
    // the query rotated at S + W - 1 instead of its position. Keys are never re-rotated.
    const int p = window_.sink + window_.window - 1;
    rope_.angles(&p, 1, sink_cos_, sink_sin_);
  }
}

void ModelRunner::forward(const Batch& batch, std::vector<float>& logits) {
  const int n = batch.n_rows();
  const int d = cfg_.n_embd;
  KV_ASSERT(n > 0);
  pos_.clear();
  for (const BatchSeq& s : batch.seqs) {
    KV_ASSERT(s.table->n_blocks() * kv_.layout().block_size >= s.slot0 + s.n_tokens);
    for (int i = 0; i < s.n_tokens; ++i) pos_.push_back(s.pos0 + i);
  }
  rope_.angles(pos_.data(), n, rope_cos_, rope_sin_);
  if (op_times_) ++op_times_->forwards;

  x_.resize(static_cast<size_t>(n) * d);
  xn_.resize(x_.size());
  proj_.resize(x_.size());
  for (int r = 0; r < n; ++r) {
    kernels::get_row(model_.tok_embd, batch.tokens[r], x_.data() + static_cast<size_t>(r) * d);
  }

  // Each block leaves its output in proj_, added to x_ by the next block's norm.
  for (int l = 0; l < cfg_.n_layer; ++l) {
    attention_block(l, batch);
    ffn_block(l, n);
  }

  // Only the rows that need logits go through the final norm and the output projection.
  OpTimer timer(op_times_, Op::kLmHead);
  const int n_out = batch.n_outputs();
  out_rows_.resize(static_cast<size_t>(n_out) * d);
  int row = 0, out = 0;
  for (const BatchSeq& s : batch.seqs) {
    const int first = s.logits_all ? 0 : s.n_tokens - 1;
    for (int i = first; i < s.n_tokens; ++i, ++out) {
      if (cfg_.n_layer > 0) {  // the last FFN's output
        add_into(x_.data() + static_cast<size_t>(row + i) * d,
                 proj_.data() + static_cast<size_t>(row + i) * d, d);
      }
      kernels::rmsnorm(x_.data() + static_cast<size_t>(row + i) * d,
                       static_cast<const float*>(model_.output_norm.data),
                       out_rows_.data() + static_cast<size_t>(out) * d, d, cfg_.rms_eps);
    }
    row += s.n_tokens;
  }
  logits.resize(static_cast<size_t>(n_out) * cfg_.n_vocab);
  kernels::matmul(model_.output, out_rows_.data(), n_out, logits.data(), pool_);
}

void ModelRunner::attention_block(int l, const Batch& batch) {
  const int n = batch.n_rows();
  project_qkv(l, n);
  {
    OpTimer timer(op_times_, Op::kRope);
    smooth_queries(l, n);
    rotate_sink_queries(n);
    locate_rows(batch);
    rotate_and_store_kv(l, n);
    hadamard_queries(n);
  }
  attend(l);
  OpTimer timer(op_times_, Op::kOutProj);
  kernels::matmul(model_.layers[l].wo, att_.data(), n, proj_.data(), pool_);
}

void ModelRunner::project_qkv(int l, int n) {
  const LayerWeights& w = model_.layers[l];
  const int d = cfg_.n_embd, q_dim = cfg_.q_dim(), kv_dim = cfg_.kv_dim();
  q_.resize(static_cast<size_t>(n) * q_dim);
  k_.resize(static_cast<size_t>(n) * kv_dim);
  v_.resize(static_cast<size_t>(n) * kv_dim);

  in_.reset(w.wq.type, xn_.data(), n, d);
  {
    OpTimer timer(op_times_, Op::kNorm);
    rmsnorm_rows(x_.data(), l > 0 ? proj_.data() : nullptr, w.attn_norm, xn_.data(), n, d,
                 cfg_.rms_eps, in_, pool_);
  }
  OpTimer timer(op_times_, Op::kQkv);
  const kernels::MatmulJob qkv[] = {{&w.wq, q_.data()}, {&w.wk, k_.data()}, {&w.wv, v_.data()}};
  kernels::matmul_jobs(qkv, in_, pool_);
  add_bias(q_.data(), w.bq, n, q_dim);
  add_bias(k_.data(), w.bk, n, kv_dim);
  add_bias(v_.data(), w.bv, n, kv_dim);
}

void ModelRunner::smooth_queries(int l, int n) {
  if (k_smooth_.q_mul.empty()) return;
  // int8 K smoothing (engine/k_smoothing.h): Q * s here; K is centred and divided by s after
  // RoPE (s is equal within each rotation pair, so it commutes with RoPE), then both are
  // rotated by the same orthonormal Hadamard matrix.
  const int q_dim = cfg_.q_dim();
  const float* mul = k_smooth_.q_mul[l].data();
  for (int r = 0; r < n; ++r) {
    float* qr = q_.data() + static_cast<size_t>(r) * q_dim;
    for (int i = 0; i < q_dim; ++i) qr[i] *= mul[i];
  }
}

void ModelRunner::rotate_sink_queries(int n) {
  if (window_.sink <= 0) return;
  const int q_dim = cfg_.q_dim();
  q_sink_ = q_;
  for (int r = 0; r < n; ++r) {
    rope_.apply(q_sink_.data() + static_cast<size_t>(r) * q_dim, cfg_.n_head, sink_cos_.data(),
                sink_sin_.data());
  }
}

void ModelRunner::locate_rows(const Batch& batch) {
  const int n = batch.n_rows(), bs = kv_.layout().block_size;
  row_block_.resize(n);
  row_slot_.resize(n);
  att_seqs_.clear();
  for (int row = 0; const BatchSeq& s : batch.seqs) {
    for (int i = 0; i < s.n_tokens; ++i) {
      row_slot_[row + i] = s.slot0 + i;
      row_block_[row + i] = s.table->block_for(s.slot0 + i, bs);
    }
    att_seqs_.push_back({s.table, s.slot0, s.n_tokens, row, s.attn_scores});
    row += s.n_tokens;
  }
}

void ModelRunner::rotate_and_store_kv(int l, int n) {
  // RoPE (and K smoothing) row by row, over the pool, each row then written to the cache. The
  // observer sees rows in order, and a storage without parallel token writes (q4 K staging)
  // gets its rows from one thread, in order; otherwise each row writes only its own slot.
  const bool write_in_rows = !k_observer_ && kv_.layout().parallel_token_writes();
  auto rotate_row = [&](int r) {
    rotate_row_qk(l, r);
    if (write_in_rows) write_kv_row(l, r);
  };
  if (k_observer_) {
    for (int r = 0; r < n; ++r) rotate_row(r);
  } else {
    for_rows(pool_, n, cfg_.q_dim(), rotate_row);
  }
  if (!write_in_rows) {
    for (int r = 0; r < n; ++r) write_kv_row(l, r);
  }
}

void ModelRunner::rotate_row_qk(int l, int r) {
  const int half = rope_.half_dim(), q_dim = cfg_.q_dim(), kv_dim = cfg_.kv_dim();
  const float* c = rope_cos_.data() + static_cast<size_t>(r) * half;
  const float* sn = rope_sin_.data() + static_cast<size_t>(r) * half;
  rope_.apply(q_.data() + static_cast<size_t>(r) * q_dim, cfg_.n_head, c, sn);
  float* kr = k_.data() + static_cast<size_t>(r) * kv_dim;
  rope_.apply(kr, cfg_.n_head_kv, c, sn);
  if (k_observer_) k_observer_(l, kr, 1);
  if (!k_smooth_.div.empty()) {
    const float *m = k_smooth_.offset[l].data(), *div = k_smooth_.div[l].data();
    for (int e = 0; e < kv_dim; ++e) kr[e] = (kr[e] - m[e]) * div[e];
    if (hadamard_ok(cfg_.head_dim)) hadamard_rows(kr, cfg_.n_head_kv, cfg_.head_dim);
  }
}

void ModelRunner::write_kv_row(int l, int r) {
  const int bs = kv_.layout().block_size, kv_dim = cfg_.kv_dim();
  kv_.write_token(l, row_block_[r], row_slot_[r] % bs, k_.data() + static_cast<size_t>(r) * kv_dim,
                  v_.data() + static_cast<size_t>(r) * kv_dim);
}

void ModelRunner::hadamard_queries(int n) {
  const int hd = cfg_.head_dim;
  if (k_smooth_.div.empty() || !hadamard_ok(hd)) return;
  hadamard_rows(q_.data(), n * cfg_.n_head, hd);
  if (window_.sink > 0) hadamard_rows(q_sink_.data(), n * cfg_.n_head, hd);
}

void ModelRunner::attend(int l) {
  att_.resize(q_.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim));
  kernels::AttentionWindow win{window_.window, window_.sink};
  OpTimer timer(op_times_, Op::kAttention);
  kernels::attention_paged(q_.data(), window_.sink > 0 ? q_sink_.data() : nullptr, att_seqs_, kv_,
                           l, cfg_.n_head, scale, win, att_.data(), pool_);
}

void ModelRunner::ffn_block(int l, int n) {
  const LayerWeights& w = model_.layers[l];
  const int d = cfg_.n_embd, ff = cfg_.n_ff;
  gate_.resize(static_cast<size_t>(n) * ff);
  up_.resize(gate_.size());
  in_.reset(w.w_gate.type, xn_.data(), n, d);
  {
    OpTimer timer(op_times_, Op::kNorm);
    rmsnorm_rows(x_.data(), proj_.data(), w.ffn_norm, xn_.data(), n, d, cfg_.rms_eps, in_, pool_);
  }
  {
    OpTimer timer(op_times_, Op::kGateUp);
    const kernels::MatmulJob gate_up[] = {{&w.w_gate, gate_.data()}, {&w.w_up, up_.data()}};
    kernels::matmul_jobs(gate_up, in_, pool_);
  }
  {
    // SwiGLU row by row, each row then prepared for the down projection.
    OpTimer timer(op_times_, Op::kSwiGlu);
    in_.reset(w.w_down.type, gate_.data(), n, ff);
    for_rows(pool_, n, ff, [&](int r) {
      float* g = gate_.data() + static_cast<size_t>(r) * ff;
      kernels::swiglu(g, up_.data() + static_cast<size_t>(r) * ff, g, ff);
      in_.prepare_row(r);
    });
  }
  OpTimer timer(op_times_, Op::kDown);
  const kernels::MatmulJob down{&w.w_down, proj_.data()};
  kernels::matmul_jobs({&down, 1}, in_, pool_);
}

}  // namespace kvserve
