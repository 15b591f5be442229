// A loaded model: config, weight views, tokenizer, and ownership of the memory behind them
// (an mmap of a GGUF file, or buffers converted from a llama2.c checkpoint).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/config.h"
#include "model/tensor.h"
#include "model/tokenizer.h"

namespace kvserve {

struct LayerWeights {
  TensorView attn_norm;       // [n_embd] f32
  TensorView wq, wk, wv, wo;  // [q_dim][n_embd], [kv_dim][n_embd] x2, [n_embd][q_dim]
  TensorView bq, bk, bv;      // optional biases [q_dim], [kv_dim], [kv_dim] (f32)
  TensorView ffn_norm;        // [n_embd] f32
  TensorView w_gate, w_up;    // [n_ff][n_embd]
  TensorView w_down;          // [n_embd][n_ff]
};

struct Model {
  ModelConfig config;
  std::string path;
  std::string format;      // "gguf" or "llama2c"
  TensorView tok_embd;     // [n_vocab][n_embd]
  TensorView output_norm;  // [n_embd] f32
  TensorView output;       // [n_vocab][n_embd]; same data as tok_embd when tied
  TensorView rope_freqs;   // optional [head_dim/2] f32: RoPE frequency divisors (Llama 3.1)
  std::vector<LayerWeights> layers;
  std::unique_ptr<Tokenizer> tokenizer;       // may be null (llama2.c without tokenizer file)
  std::shared_ptr<void> storage;              // keeps the mapped file / converted buffers alive
  std::vector<std::shared_ptr<void>> packed;  // weight copies laid out for the kernels (load_model)

  // Tokens that end generation: EOS, and for llama2.c checkpoints also BOS, which TinyStories-style
  // models emit between stories (run.c stops on it).
  bool is_stop_token(int32_t t) const {
    const int32_t eos = tokenizer ? tokenizer->eos() : 2;
    const int32_t bos = tokenizer ? tokenizer->bos() : 1;
    return t == eos || (format == "llama2c" && t == bos);
  }

  size_t weight_bytes() const;  // bytes of all weight tensors (output counted once if tied)
  // Dominant weight type, for display ("q8_0" when most bytes are q8_0).
  DType main_weight_type() const;
};

struct LoadOptions {
  std::string tokenizer_path;  // llama2.c: explicit tokenizer.bin; else looked up beside the model
  // Lay the matmul weights out for streaming once, at load: q8_0 / q4_0 packed for the active
  // kernels (kernels::prepack) instead of on every call, the other types of a mapped file
  // copied into huge pages. Results are identical either way; off only to compare the two.
  bool prepack_weights = true;
};

// Loads a GGUF or llama2.c checkpoint, detected by magic. Errors name the file and what is wrong.
Result<std::unique_ptr<Model>> load_model(const std::string& path, const LoadOptions& opts = {});

}  // namespace kvserve
