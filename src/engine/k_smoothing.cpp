#include "engine/k_smoothing.h"

#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "engine/model_runner.h"
#include "kv/kv_cache_manager.h"

namespace kvserve {

namespace {

// Plain English prose: what the model's keys look like on ordinary text.
constexpr const char* kCalibrationText =
    "The little town sat between two hills, and every morning the baker opened his shop before "
    "the sun came up. Children ran past on their way to school, and the smell of warm bread "
    "followed them down the street. One day a stranger arrived with a heavy bag and asked where "
    "he could sleep. The baker gave him a room above the shop. \"Thank you,\" said the man. \"I "
    "have walked for three days.\" In the evening they talked about the sea, the mountains, the "
    "price of flour and the best way to make a cake that stays soft. When the stranger left, he "
    "gave the baker a small wooden box. Inside was a map, a key and a note that said: keep this "
    "safe until I come back. Years later the children, now grown, still told the story.";

}  // namespace

void hadamard_rows(float* x, int n, int hd) {
  const float norm = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int r = 0; r < n; ++r) {
    float* v = x + static_cast<size_t>(r) * hd;
    for (int len = 1; len < hd; len <<= 1) {
      for (int i = 0; i < hd; i += 2 * len) {
        for (int j = i; j < i + len; ++j) {
          const float a = v[j], b = v[j + len];
          v[j] = a + b;
          v[j + len] = a - b;
        }
      }
    }
    for (int i = 0; i < hd; ++i) v[i] *= norm;
  }
}

Result<KSmoothing> calibrate_k_smoothing(const Model& model, bool with_offset, int max_tokens) {
  const ModelConfig& c = model.config;
  std::vector<int32_t> tokens;
  if (model.tokenizer) tokens = model.tokenizer->encode(kCalibrationText, true);
  if (tokens.size() < 16) {  // no tokenizer: a fixed spread of ids
    tokens.clear();
    for (int i = 0; i < 128; ++i)
      tokens.push_back(static_cast<int32_t>((i * 7919 + 13) % c.n_vocab));
  }
  const int n = std::min({static_cast<int>(tokens.size()), max_tokens, std::max(2, c.n_ctx_train)});
  tokens.resize(n);

  KvLayout layout;
  layout.n_layer = c.n_layer;
  layout.n_head_kv = c.n_head_kv;
  layout.head_dim = c.head_dim;
  layout.block_size = 16;
  layout.k_type = layout.v_type = KvType::kF32;
  KV_ASSIGN_OR_RETURN(auto kv, KvCacheManager::create(layout, blocks_for_tokens(n, 16)));
  KV_RETURN_IF_ERROR(kv->add_sequence(0));
  KV_RETURN_IF_ERROR(kv->reserve(0, n));
  ThreadPool pool(0);
  ModelRunner runner(model, kv->storage(), pool);
  const int kv_dim = c.kv_dim();
  std::vector<std::vector<double>> sum(c.n_layer, std::vector<double>(kv_dim)), sq = sum;
  runner.set_k_observer([&](int layer, const float* k, int rows) {
    for (int r = 0; r < rows; ++r) {
      for (int i = 0; i < kv_dim; ++i) {
        const double x = k[static_cast<size_t>(r) * kv_dim + i];
        sum[layer][i] += x;
        sq[layer][i] += x * x;
      }
    }
  });
  Batch batch;
  batch.add(&kv->table(0), 0, tokens.data(), n);
  std::vector<float> logits;
  runner.forward(batch, logits);
  kv->free_sequence(0);

  KSmoothing out;
  const int hd = c.head_dim, n_gqa = c.n_head / c.n_head_kv;
  for (int l = 0; l < c.n_layer; ++l) {
    std::vector<float> m(kv_dim), var(kv_dim);
    for (int i = 0; i < kv_dim; ++i) {
      const double mean = sum[l][i] / n;
      m[i] = with_offset ? static_cast<float>(mean) : 0.0f;
      var[i] =
          static_cast<float>(std::max(0.0, sq[l][i] / n - 2 * mean * m[i] + double(m[i]) * m[i]));
    }
    // s from the RMS of k - m, equal within each rotation pair, normalised to mean 1.
    std::vector<float> s(kv_dim);
    double total = 0;
    for (int h = 0; h < c.n_head_kv; ++h) {
      for (int i = 0; i < hd / 2; ++i) {
        const bool norm = c.rope_style == RopeStyle::kNorm;
        const int a = h * hd + (norm ? 2 * i : i), b = h * hd + (norm ? 2 * i + 1 : i + hd / 2);
        // Migration strength 1/2 (SmoothQuant's default): s = RMS^(1/2). Full equalisation
        // (RMS^1) measured worse on stories260K (KL 3.9e-4 vs 3.5e-4 with the rotation below).
        const double v = std::pow(0.5 * (var[a] + var[b]), 0.25);
        s[a] = s[b] = static_cast<float>(v);
        total += 2 * v;
      }
    }
    const double mean_s = total / kv_dim;
    for (float& x : s) {
      x = mean_s > 0 && x > 1e-6 * mean_s && std::isfinite(x) ? static_cast<float>(x / mean_s)
                                                              : 1.0f;
    }
    std::vector<float> div(kv_dim), mul(static_cast<size_t>(c.q_dim()));
    for (int i = 0; i < kv_dim; ++i) div[i] = 1.0f / s[i];
    for (int h = 0; h < c.n_head; ++h) {
      for (int e = 0; e < hd; ++e) mul[static_cast<size_t>(h) * hd + e] = s[(h / n_gqa) * hd + e];
    }
    out.offset.push_back(std::move(m));
    out.div.push_back(std::move(div));
    out.q_mul.push_back(std::move(mul));
  }
  return out;
}

KSmoothing k_smoothing_for(const Model& model, const KvLayout& layout, const KvPolicy& policy) {
  if (layout.k_type != KvType::kQ8) return {};
  const auto* w = std::get_if<WindowKv>(&policy);
  auto ks = calibrate_k_smoothing(model, /*with_offset=*/!w || w->sink == 0);
  return ks ? std::move(*ks) : KSmoothing{};
}

}  // namespace kvserve
