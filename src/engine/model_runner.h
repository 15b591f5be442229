// ModelRunner: the Llama-family forward pass over a batch, reading and writing K/V through the
// paged cache. One runner per engine; forward() is called by the engine loop only.
#pragma once

#include <vector>

#include "core/thread_pool.h"
#include "engine/batch.h"
#include "kernels/rope.h"
#include "kv/kv_storage.h"
#include "model/model.h"

namespace kvserve {

class ModelRunner {
 public:
  ModelRunner(const Model& model, KvStorage& kv, ThreadPool& pool);

  // Computes every token of the batch, writes its K/V at its position (the tables must already
  // cover them), and fills logits with [batch.n_outputs()][n_vocab] rows, sequence by sequence.
  void forward(const Batch& batch, std::vector<float>& logits);

  const Model& model() const { return model_; }

 private:
  void attention_block(int layer, const Batch& batch);
  void ffn_block(int layer, int n);

  const Model& model_;
  const ModelConfig& cfg_;
  KvStorage& kv_;
  ThreadPool& pool_;
  kernels::Rope rope_;

  // Activations, resized per batch; n = batch rows.
  std::vector<int> pos_;             // [n]
  std::vector<float> rope_cos_, rope_sin_;  // [n][head_dim/2]
  std::vector<float> x_;             // [n][n_embd] residual stream
  std::vector<float> xn_;            // [n][n_embd] normed input of a block
  std::vector<float> q_;             // [n][q_dim]
  std::vector<float> k_, v_;         // [n][kv_dim]
  std::vector<float> att_;           // [n][q_dim]
  std::vector<float> proj_;          // [n][n_embd] block output before the residual add
  std::vector<float> gate_, up_;     // [n][n_ff]
  std::vector<float> out_rows_;      // [n_outputs][n_embd]
};

}  // namespace kvserve
