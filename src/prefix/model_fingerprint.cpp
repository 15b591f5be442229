#include "prefix/model_fingerprint.h"

#include <algorithm>
#include <cstring>

namespace kvserve {

namespace {

constexpr size_t kWholeLimit = 1 << 20;
constexpr size_t kEdge = 64 << 10;
constexpr size_t kPiece = 4 << 10;
constexpr int kPieces = 16;

void hash_f32(HashStream& h, float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  h.update_u64(bits);
}

void hash_config(HashStream& h, const ModelConfig& c) {
  h.update_string(c.arch);
  for (int v :
       {c.n_vocab, c.n_embd, c.n_ff, c.n_layer, c.n_head, c.n_head_kv, c.head_dim,
        static_cast<int>(c.rope_style), static_cast<int>(c.rope_scaling), c.rope_orig_ctx,
        c.sliding_window, static_cast<int>(c.has_qkv_bias), static_cast<int>(c.tied_embeddings)}) {
    h.update_u64(static_cast<uint64_t>(static_cast<int64_t>(v)));
  }
  for (float f : {c.rms_eps, c.rope_freq_base, c.rope_scale_factor, c.rope_low_freq_factor,
                  c.rope_high_freq_factor}) {
    hash_f32(h, f);
  }
}

void hash_tensor(HashStream& h, const TensorView& t) {
  h.update_string(t.name);
  h.update_u64(t.present() ? 1 : 0);
  if (!t.present()) return;
  h.update_u64(static_cast<uint64_t>(t.type));
  h.update_u64(static_cast<uint64_t>(t.n_dims));
  for (int64_t n : t.ne) h.update_u64(static_cast<uint64_t>(n));
  h.update_u64(t.n_bytes);
  const auto* p = static_cast<const uint8_t*>(t.data);
  if (t.n_bytes <= kWholeLimit) {
    h.update(p, t.n_bytes);
    return;
  }
  h.update(p, kEdge);
  h.update(p + t.n_bytes - kEdge, kEdge);
  const size_t stride = (t.n_bytes - kPiece) / (kPieces - 1);
  for (int i = 0; i < kPieces; ++i) h.update(p + i * stride, kPiece);
}

}  // namespace

Digest model_fingerprint(const Model& model, const KvLayout& layout, HashKind kind,
                         const std::string& policy) {
  HashStream h(kind);
  h.update_string("kvserve-model-v1");
  hash_config(h, model.config);
  hash_tensor(h, model.tok_embd);
  hash_tensor(h, model.output_norm);
  hash_tensor(h, model.output);
  hash_tensor(h, model.rope_freqs);
  for (const LayerWeights& l : model.layers) {
    for (const TensorView* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv,
                                &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down}) {
      hash_tensor(h, *t);
    }
  }
  h.update_string("kv-layout");
  for (int v : {layout.n_layer, layout.n_head_kv, layout.head_dim, layout.block_size,
                static_cast<int>(layout.k_type), static_cast<int>(layout.v_type)}) {
    h.update_u64(static_cast<uint64_t>(v));
  }
  if (!policy.empty()) {
    h.update_string("kv-policy");
    h.update_string(policy);
  }
  return h.finish();
}

}  // namespace kvserve
