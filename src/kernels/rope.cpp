#include "kernels/rope.h"

#include <cmath>

namespace kvserve::kernels {

Rope::Rope(const ModelConfig& cfg, const float* freq_factors)
    : style_(cfg.rope_style), head_dim_(cfg.head_dim) {
  const int half = cfg.head_dim / 2;
  inv_freq_.resize(half);
  for (int i = 0; i < half; ++i) {
    // As llama2.c's run.c: 1 / base^(2i / head_dim) in single precision.
    inv_freq_[i] = 1.0f / std::pow(cfg.rope_freq_base, static_cast<float>(2 * i) / cfg.head_dim);
  }
  if (cfg.rope_scaling == RopeScaling::kLinear && cfg.rope_scale_factor > 0) {
    pos_scale_ = 1.0f / cfg.rope_scale_factor;
  }
  if (freq_factors) {
    for (int i = 0; i < half; ++i) inv_freq_[i] /= freq_factors[i];
  } else if (cfg.rope_scaling == RopeScaling::kLlama3) {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, a smooth blend between.
    const float lo_wavelen = cfg.rope_orig_ctx / cfg.rope_low_freq_factor;
    const float hi_wavelen = cfg.rope_orig_ctx / cfg.rope_high_freq_factor;
    for (float& f : inv_freq_) {
      const float wavelen = 2.0f * static_cast<float>(M_PI) / f;
      if (wavelen < hi_wavelen) continue;
      if (wavelen > lo_wavelen) {
        f /= cfg.rope_scale_factor;
      } else {
        const float smooth = (cfg.rope_orig_ctx / wavelen - cfg.rope_low_freq_factor) /
                             (cfg.rope_high_freq_factor - cfg.rope_low_freq_factor);
        f = (1 - smooth) * f / cfg.rope_scale_factor + smooth * f;
      }
    }
  }
}

void Rope::angles(const int* positions, int n, std::vector<float>& cos_out,
                  std::vector<float>& sin_out) const {
  const int half = half_dim();
  cos_out.resize(static_cast<size_t>(n) * half);
  sin_out.resize(static_cast<size_t>(n) * half);
  for (int t = 0; t < n; ++t) {
    const float pos = static_cast<float>(positions[t]) * pos_scale_;
    for (int i = 0; i < half; ++i) {
      const float a = pos * inv_freq_[i];
      cos_out[static_cast<size_t>(t) * half + i] = std::cos(a);
      sin_out[static_cast<size_t>(t) * half + i] = std::sin(a);
    }
  }
}

void Rope::apply(float* x, int n_heads, const float* c, const float* s) const {
  const int half = half_dim();
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<size_t>(h) * head_dim_;
    if (style_ == RopeStyle::kNorm) {
      for (int i = 0; i < half; ++i) {
        const float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * c[i] - b * s[i];
        v[2 * i + 1] = a * s[i] + b * c[i];
      }
    } else {
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = a * s[i] + b * c[i];
      }
    }
  }
}

}  // namespace kvserve::kernels
