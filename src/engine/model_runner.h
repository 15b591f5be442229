// ModelRunner: the Llama-family forward pass over a batch, reading and writing K/V through the
// paged cache. One runner per engine; forward() is called by the engine loop only.
#pragma once

#include <functional>
#include <vector>

#include "core/aligned.h"
#include "core/thread_pool.h"
#include "engine/batch.h"
#include "engine/k_smoothing.h"
#include "engine/op_times.h"
#include "kernels/attention.h"
#include "kernels/ops.h"
#include "kernels/rope.h"
#include "kv/kv_policy.h"
#include "kv/kv_storage.h"
#include "model/model.h"

namespace kvserve {

class ModelRunner {
 public:
  // policy: a WindowKv limits what attention sees (the cache manager frees the rest).
  // k_smooth: int8 K's smoothing factors (k_smoothing_for); empty: K stored as computed.
  ModelRunner(const Model& model, KvStorage& kv, ThreadPool& pool,
              const KvPolicy& policy = FullKv{}, KSmoothing k_smooth = {});

  // Computes every token of the batch, writes its K/V at its position (the tables must already
  // cover them), and fills logits with [batch.n_outputs()][n_vocab] rows, sequence by sequence.
  void forward(const Batch& batch, std::vector<float>& logits);

  const Model& model() const { return model_; }
  // Calibration hook (engine/k_smoothing.cpp): sees each layer's K rows ([rows][kv_dim], after
  // RoPE) before they are stored.
  void set_k_observer(std::function<void(int layer, const float* k, int rows)> f) {
    k_observer_ = std::move(f);
  }
  // Times every op of each forward into *t from now on (engine/op_times.h); nullptr: off.
  void set_op_times(OpTimes* t) { op_times_ = t; }

 private:
  // Attention of every batch row over the cache; its output (before the residual add) in proj_.
  void attention_block(int layer, const Batch& batch);
  // x_ += proj_ (layer > 0), then q_, k_, v_ = rmsnorm(x_) projected by wq/wk/wv, plus biases.
  void project_qkv(int layer, int n);
  // int8 K smoothing's side on the queries: q_ *= the layer's q_mul (no-op without smoothing).
  void smooth_queries(int layer, int n);
  // Sinks on: q_sink_ = q_ rotated for the sinks' StreamingLLM position (no-op otherwise).
  void rotate_sink_queries(int n);
  // Fills row_block_, row_slot_ and att_seqs_ from the batch's sequences.
  void locate_rows(const Batch& batch);
  // RoPE on every row of q_ and k_ (K observed and smoothed), each K/V row written to the cache.
  void rotate_and_store_kv(int layer, int n);
  // RoPE on row r of q_ and k_; K then goes to the observer and is smoothed (int8 K).
  void rotate_row_qk(int layer, int r);
  // Writes row r of k_ and v_ to its cache slot (row_block_, row_slot_).
  void write_kv_row(int layer, int r);
  // int8 K smoothing's Hadamard rotation on the queries' side (q_ and q_sink_), when it applies.
  void hadamard_queries(int n);
  // att_ = attention of q_ (and q_sink_) over the layer's cache, sequence by sequence.
  void attend(int layer);
  void ffn_block(int layer, int n);

  const Model& model_;
  const ModelConfig& cfg_;
  KvStorage& kv_;
  ThreadPool& pool_;
  kernels::Rope rope_;
  WindowKv window_;                         // window 0: full attention
  std::vector<float> sink_cos_, sink_sin_;  // [head_dim/2] rotation of queries seen by sinks
  // int8 K: offsets and channel factors (engine/k_smoothing.h); empty otherwise.
  KSmoothing k_smooth_;
  std::function<void(int, const float*, int)> k_observer_;
  OpTimes* op_times_ = nullptr;

  // Activations, resized per batch; n = batch rows.
  std::vector<int> pos_;                         // [n]
  std::vector<BlockId> row_block_;               // [n] each row's KV block
  std::vector<int> row_slot_;                    // [n] and slot in its sequence
  std::vector<float> rope_cos_, rope_sin_;       // [n][head_dim/2]
  std::vector<kernels::AttentionSeq> att_seqs_;  // [batch.seqs.size()] each sequence's rows
  // Matmul inputs and outputs are 64-byte aligned (core/aligned.h).
  AlignedFloats x_;          // [n][n_embd] residual stream
  AlignedFloats xn_;         // [n][n_embd] normed input of a block
  kernels::MatmulInput in_;  // the next matmul's input (xn_ or gate_), prepared row by row
  AlignedFloats q_;          // [n][q_dim]
  AlignedFloats q_sink_;     // [n][q_dim] queries as the sink keys see them (sinks on)
  AlignedFloats k_, v_;      // [n][kv_dim]
  AlignedFloats att_;        // [n][q_dim]
  AlignedFloats proj_;       // [n][n_embd] block output before the residual add
  AlignedFloats gate_, up_;  // [n][n_ff]
  AlignedFloats out_rows_;   // [n_outputs][n_embd]
};

}  // namespace kvserve
