// Rotary position embedding, with linear and llama3 frequency scaling.
#pragma once

#include <vector>

#include "model/config.h"

namespace kvserve::kernels {

// Per-dimension-pair inverse frequencies of a model, scaling applied.
class Rope {
 public:
  // freq_factors: optional [head_dim/2] divisors of the frequencies (GGUF rope_freqs.weight);
  // when given they replace the llama3 scaling computed from the config.
  explicit Rope(const ModelConfig& cfg, const float* freq_factors = nullptr);

  // cos/sin for each position: out[p][head_dim/2] each.
  void angles(const int* positions, int n, std::vector<float>& cos_out,
              std::vector<float>& sin_out) const;
  // Rotates n_heads heads of x ([n_heads][head_dim]) with one position's cos/sin row.
  void apply(float* x, int n_heads, const float* cos_row, const float* sin_row) const;
  int half_dim() const { return static_cast<int>(inv_freq_.size()); }

 private:
  RopeStyle style_;
  int head_dim_;
  float pos_scale_ = 1.0f;       // linear scaling divides positions
  std::vector<float> inv_freq_;  // [head_dim/2]
};

}  // namespace kvserve::kernels
