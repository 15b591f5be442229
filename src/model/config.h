// Hyper-parameters of a Llama-family model, whatever file it came from.
#pragma once

#include <cstdint>
#include <string>

namespace kvserve {

enum class RopeStyle {
  kNorm,  // rotate adjacent pairs (x[2i], x[2i+1]): GGUF "llama", llama2.c
  kNeox,  // rotate (x[i], x[i + d/2]): GGUF "qwen2"
};

enum class RopeScaling { kNone, kLinear, kLlama3 };

struct ModelConfig {
  std::string arch = "llama";  // GGUF general.architecture
  std::string name;            // general.name, if any
  int n_vocab = 0;
  int n_embd = 0;
  int n_ff = 0;
  int n_layer = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;  // usually n_embd / n_head
  int n_ctx_train = 0;
  float rms_eps = 1e-5f;
  float rope_freq_base = 10000.0f;
  RopeStyle rope_style = RopeStyle::kNorm;
  RopeScaling rope_scaling = RopeScaling::kNone;
  float rope_scale_factor = 1.0f;  // linear: positions divided by this; llama3: "factor"
  float rope_low_freq_factor = 1.0f;   // llama3
  float rope_high_freq_factor = 4.0f;  // llama3
  int rope_orig_ctx = 8192;            // llama3: original_max_position_embeddings
  int sliding_window = 0;              // Mistral-style window, 0 = none (recorded, see KV issues)
  bool has_qkv_bias = false;           // Qwen2
  bool tied_embeddings = false;        // output projection shares token_embd

  int n_gqa() const { return n_head / n_head_kv; }
  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }
};

}  // namespace kvserve
