// load_model: format detection and the GGUF -> Model mapping (llama, mistral, qwen2).
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>

#include "core/huge_pages.h"
#include "kernels/ops.h"
#include "model/gguf.h"
#include "model/llama2c.h"
#include "model/model.h"

namespace kvserve {

namespace {

// Reads up to 4 bytes from the start of the file.
Result<std::string> read_magic(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    const int e = errno;
    const std::string msg = path + ": cannot open: " + std::strerror(e);
    return e == ENOENT ? not_found(msg) : io_error(msg);
  }
  char buf[4];
  const size_t n = std::fread(buf, 1, 4, f);
  std::fclose(f);
  return std::string(buf, n);
}

// Reads GGUF hyper-parameters with "{arch}." keys; errors name the file and the key.
class HparamReader {
 public:
  HparamReader(const GgufFile& g, const std::string& arch) : g_(g), prefix_(arch + ".") {}

  // A required integer in [lo, hi].
  Status get(const std::string& key, int lo, int hi, int* out) const {
    KV_ASSIGN_OR_RETURN(int64_t v, g_.get_int(prefix_ + key));
    return check(key, v, lo, hi, out);
  }
  // An optional integer; *out keeps its value when absent.
  Status get_opt(const std::string& key, int lo, int hi, int* out) const {
    if (!g_.find(prefix_ + key)) return Status::ok();
    return get(key, lo, hi, out);
  }
  Status get_f(const std::string& key, float* out) const {
    KV_ASSIGN_OR_RETURN(double v, g_.get_float(prefix_ + key));
    if (!(v == v) || v > 1e30 || v < -1e30) {  // NaN or absurd
      return corrupt(g_.path() + ": metadata key '" + prefix_ + key + "' has value " +
                     std::to_string(v) + ", expected a finite number");
    }
    *out = static_cast<float>(v);
    return Status::ok();
  }
  Status get_f_opt(const std::string& key, float* out) const {
    if (!g_.find(prefix_ + key)) return Status::ok();
    return get_f(key, out);
  }
  bool has(const std::string& key) const { return g_.find(prefix_ + key) != nullptr; }
  const std::string& prefix() const { return prefix_; }

 private:
  Status check(const std::string& key, int64_t v, int lo, int hi, int* out) const {
    if (v < lo || v > hi) {
      return corrupt(g_.path() + ": metadata key '" + prefix_ + key + "' = " + std::to_string(v) +
                     ", expected " + std::to_string(lo) + " to " + std::to_string(hi));
    }
    *out = static_cast<int>(v);
    return Status::ok();
  }
  const GgufFile& g_;
  std::string prefix_;
};

Status read_rope_scaling(const GgufFile& g, const HparamReader& hp, ModelConfig& c) {
  std::string type = "none";
  if (hp.has("rope.scaling.type")) {
    KV_ASSIGN_OR_RETURN(type, g.get_string(hp.prefix() + "rope.scaling.type"));
  }
  if (type == "none") {
    float legacy = 1.0f;  // older files: {arch}.rope.scale_linear
    KV_RETURN_IF_ERROR(hp.get_f_opt("rope.scale_linear", &legacy));
    if (legacy != 1.0f && legacy > 0) {
      c.rope_scaling = RopeScaling::kLinear;
      c.rope_scale_factor = legacy;
    }
    return Status::ok();
  }
  if (type != "linear" && type != "llama3") {
    return unsupported(g.path() + ": rope scaling type '" + type + "' (" + hp.prefix() +
                       "rope.scaling.type) is not supported; expected none, linear or llama3");
  }
  c.rope_scaling = type == "linear" ? RopeScaling::kLinear : RopeScaling::kLlama3;
  KV_RETURN_IF_ERROR(hp.get_f_opt("rope.scaling.factor", &c.rope_scale_factor));
  if (!(c.rope_scale_factor > 0)) {
    return corrupt(g.path() + ": " + hp.prefix() + "rope.scaling.factor must be positive");
  }
  KV_RETURN_IF_ERROR(
      hp.get_opt("rope.scaling.original_context_length", 1, 1 << 30, &c.rope_orig_ctx));
  KV_RETURN_IF_ERROR(hp.get_f_opt("rope.scaling.low_freq_factor", &c.rope_low_freq_factor));
  KV_RETURN_IF_ERROR(hp.get_f_opt("rope.scaling.high_freq_factor", &c.rope_high_freq_factor));
  return Status::ok();
}

Result<ModelConfig> read_gguf_config(const GgufFile& g) {
  ModelConfig c;
  KV_ASSIGN_OR_RETURN(c.arch, g.get_string("general.architecture"));
  if (g.find("general.name")) {
    KV_ASSIGN_OR_RETURN(c.name, g.get_string("general.name"));
  }
  std::string arch = c.arch;
  if (arch == "llama" || arch == "mistral") {
    c.rope_style = RopeStyle::kNorm;
  } else if (arch == "qwen2") {
    c.rope_style = RopeStyle::kNeox;
  } else {
    return unsupported(g.path() + ": architecture '" + arch +
                       "' is not supported (expected llama, mistral or qwen2)");
  }
  const HparamReader hp(g, arch);
  constexpr int kBig = 1 << 30;
  KV_RETURN_IF_ERROR(hp.get("context_length", 1, kBig, &c.n_ctx_train));
  KV_RETURN_IF_ERROR(hp.get("embedding_length", 1, 1 << 20, &c.n_embd));
  KV_RETURN_IF_ERROR(hp.get("feed_forward_length", 1, 1 << 22, &c.n_ff));
  KV_RETURN_IF_ERROR(hp.get("block_count", 1, 4096, &c.n_layer));
  KV_RETURN_IF_ERROR(hp.get("attention.head_count", 1, 1 << 14, &c.n_head));
  c.n_head_kv = c.n_head;
  KV_RETURN_IF_ERROR(hp.get_opt("attention.head_count_kv", 1, c.n_head, &c.n_head_kv));
  if (c.n_head % c.n_head_kv != 0) {
    return corrupt(g.path() + ": " + hp.prefix() + "attention.head_count " +
                   std::to_string(c.n_head) + " is not a multiple of attention.head_count_kv " +
                   std::to_string(c.n_head_kv));
  }
  KV_RETURN_IF_ERROR(hp.get_f("attention.layer_norm_rms_epsilon", &c.rms_eps));
  KV_RETURN_IF_ERROR(hp.get_f_opt("rope.freq_base", &c.rope_freq_base));
  c.head_dim = c.n_embd / c.n_head;
  KV_RETURN_IF_ERROR(hp.get_opt("attention.key_length", 2, 1 << 14, &c.head_dim));
  int v_len = c.head_dim;
  KV_RETURN_IF_ERROR(hp.get_opt("attention.value_length", 1, 1 << 14, &v_len));
  if (v_len != c.head_dim || c.head_dim % 2 != 0) {
    return unsupported(g.path() + ": head size " + std::to_string(c.head_dim) + " / value size " +
                       std::to_string(v_len) + " is not supported (they must be equal and even)");
  }
  int rope_dims = c.head_dim;
  KV_RETURN_IF_ERROR(hp.get_opt("rope.dimension_count", 1, 1 << 14, &rope_dims));
  if (rope_dims != c.head_dim) {
    return unsupported(g.path() + ": " + hp.prefix() + "rope.dimension_count " +
                       std::to_string(rope_dims) + " != head size " + std::to_string(c.head_dim) +
                       " (partial rotary embedding is not supported)");
  }
  KV_RETURN_IF_ERROR(hp.get_opt("attention.sliding_window", 0, kBig, &c.sliding_window));
  KV_RETURN_IF_ERROR(read_rope_scaling(g, hp, c));
  return c;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Looks up a tensor and checks its shape; `required` false returns an absent view when missing.
// Vectors (norms, biases) must be f32.
Result<TensorView> get_tensor(const GgufFile& g, const std::string& name,
                              const std::vector<int64_t>& shape, bool required = true) {
  const TensorView* t = g.tensor(name);
  if (!t) {
    if (!required) return TensorView{};
    return not_found(g.path() + ": required tensor '" + name + "' not found");
  }
  std::vector<int64_t> have(t->ne, t->ne + t->n_dims);
  if (have != shape) {
    return corrupt(g.path() + ": tensor '" + name + "' has shape " + shape_str(have) +
                   ", expected " + shape_str(shape));
  }
  if (shape.size() == 1 && t->type != DType::kF32) {
    return unsupported(g.path() + ": tensor '" + name + "' has type " + dtype_name(t->type) +
                       ", expected f32 (norm and bias vectors must be f32)");
  }
  return *t;
}

Status map_gguf_tensors(const GgufFile& g, Model& m) {
  ModelConfig& c = m.config;
  const TensorView* emb = g.tensor("token_embd.weight");
  if (!emb) return not_found(g.path() + ": required tensor 'token_embd.weight' not found");
  if (emb->n_dims != 2 || emb->ne[1] > (int64_t{1} << 30)) {
    return corrupt(g.path() + ": tensor 'token_embd.weight' has " + std::to_string(emb->n_dims) +
                   " dimensions, expected [n_embd, n_vocab]");
  }
  c.n_vocab = static_cast<int>(emb->ne[1]);
  if (const GgufValue* vs = g.find(c.arch + ".vocab_size");
      vs && vs->is_integer() && vs->i != c.n_vocab) {
    return corrupt(g.path() + ": " + c.arch + ".vocab_size " + std::to_string(vs->i) +
                   " != token_embd.weight rows " + std::to_string(c.n_vocab));
  }
  const int64_t d = c.n_embd, V = c.n_vocab, q = c.q_dim(), kv = c.kv_dim(), ff = c.n_ff;
  KV_ASSIGN_OR_RETURN(m.tok_embd, get_tensor(g, "token_embd.weight", {d, V}));
  KV_ASSIGN_OR_RETURN(m.output_norm, get_tensor(g, "output_norm.weight", {d}));
  KV_ASSIGN_OR_RETURN(m.output, get_tensor(g, "output.weight", {d, V}, false));
  c.tied_embeddings = !m.output.present();
  if (c.tied_embeddings) m.output = m.tok_embd;
  // Llama 3.1 GGUFs carry their RoPE scaling as per-frequency divisors.
  KV_ASSIGN_OR_RETURN(m.rope_freqs, get_tensor(g, "rope_freqs.weight", {c.head_dim / 2}, false));
  c.has_qkv_bias = g.tensor("blk.0.attn_q.bias") != nullptr;
  m.layers.resize(c.n_layer);
  for (int l = 0; l < c.n_layer; ++l) {
    LayerWeights& w = m.layers[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    KV_ASSIGN_OR_RETURN(w.attn_norm, get_tensor(g, p + "attn_norm.weight", {d}));
    KV_ASSIGN_OR_RETURN(w.wq, get_tensor(g, p + "attn_q.weight", {d, q}));
    KV_ASSIGN_OR_RETURN(w.wk, get_tensor(g, p + "attn_k.weight", {d, kv}));
    KV_ASSIGN_OR_RETURN(w.wv, get_tensor(g, p + "attn_v.weight", {d, kv}));
    KV_ASSIGN_OR_RETURN(w.wo, get_tensor(g, p + "attn_output.weight", {q, d}));
    KV_ASSIGN_OR_RETURN(w.bq, get_tensor(g, p + "attn_q.bias", {q}, c.has_qkv_bias));
    KV_ASSIGN_OR_RETURN(w.bk, get_tensor(g, p + "attn_k.bias", {kv}, c.has_qkv_bias));
    KV_ASSIGN_OR_RETURN(w.bv, get_tensor(g, p + "attn_v.bias", {kv}, c.has_qkv_bias));
    KV_ASSIGN_OR_RETURN(w.ffn_norm, get_tensor(g, p + "ffn_norm.weight", {d}));
    KV_ASSIGN_OR_RETURN(w.w_gate, get_tensor(g, p + "ffn_gate.weight", {d, ff}));
    KV_ASSIGN_OR_RETURN(w.w_up, get_tensor(g, p + "ffn_up.weight", {d, ff}));
    KV_ASSIGN_OR_RETURN(w.w_down, get_tensor(g, p + "ffn_down.weight", {ff, d}));
  }
  return Status::ok();
}

Result<std::unique_ptr<Model>> load_gguf_model(const std::string& path) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::open(path));
  std::shared_ptr<GgufFile> g = std::move(file);
  auto m = std::make_unique<Model>();
  m->path = path;
  m->format = "gguf";
  KV_ASSIGN_OR_RETURN(m->config, read_gguf_config(*g));
  KV_RETURN_IF_ERROR(map_gguf_tensors(*g, *m));
  if (g->find("tokenizer.ggml.model")) {
    auto tok = tokenizer_from_gguf(*g);
    if (!tok.is_ok()) {
      const Status& s = tok.status();
      const bool named = s.message().find(path) != std::string::npos;
      return Status(s.code(), named ? s.message() : path + ": tokenizer: " + s.message());
    }
    m->tokenizer = std::move(tok).value();
    if (m->tokenizer->n_vocab() != m->config.n_vocab) {
      return corrupt(path + ": tokenizer has " + std::to_string(m->tokenizer->n_vocab()) +
                     " tokens but token_embd.weight has " + std::to_string(m->config.n_vocab) +
                     " rows");
    }
  }
  m->storage = g;
  return m;
}

// Drops the pages of [p, p + n) from a read-only file mapping: clean file pages, read back on
// demand if anything touches them again.
void release_mapped(const void* p, size_t n) {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

// Lays out the matmul weights for streaming, once at load. q8_0 / q4_0 weights the kernels
// pack (kernels::prepack_into) get their packed copy; weights of a mapped GGUF file that the
// kernels read as stored (f16, bf16, f32, k-quants) are copied out of the file mapping, since
// streaming them from its 4 KiB pages costs a TLB miss every 64 lines (f16 decode: 0.93x).
// All copies share one arena in transparent huge pages (one mapping per tensor would round
// each small one up to a 2 MiB page), kept in Model::packed. The file's pages of a copied
// tensor are then dropped, so the weights are resident once.
void prepack_weights(Model& m) {
  const bool mapped = m.format == "gguf";
  const bool tied = m.output.data == m.tok_embd.data;
  std::vector<TensorView*> views;
  for (LayerWeights& l : m.layers)
    for (TensorView* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
      views.push_back(w);
  views.push_back(&m.output);
  // Bytes of each copy: packed, or (mapped file) the tensor as stored; 0 = left as it is.
  std::vector<size_t> sizes;
  std::vector<bool> packs;
  size_t total = 0;
  for (TensorView* w : views) {
    size_t n = w->present() ? kernels::packed_size(*w) : 0;
    packs.push_back(n > 0);
    if (n == 0 && mapped && w->present()) n = (w->n_bytes + 63) / 64 * 64;
    sizes.push_back(n);
    total += n;
  }
  if (total == 0) return;
  std::shared_ptr<void> arena = alloc_huge_pages(total);
  if (!arena) return;  // no memory for copies: weights stay mapped, packed per call
  uint8_t* at = static_cast<uint8_t*>(arena.get());
  for (size_t i = 0; i < views.size(); ++i) {
    if (sizes[i] == 0) continue;
    TensorView& w = *views[i];
    const bool keep_rows = tied && &w == &m.output;  // the embedding reads rows of these bytes
    if (packs[i]) {
      kernels::prepack_into(w, at);
      if (mapped && !keep_rows) release_mapped(w.data, w.n_bytes);
    } else {
      std::memcpy(at, w.data, w.n_bytes);
      release_mapped(w.data, w.n_bytes);
      w.data = at;
      if (keep_rows) m.tok_embd.data = at;
    }
    at += sizes[i];
  }
  m.packed.push_back(std::move(arena));
}

}  // namespace

Result<std::unique_ptr<Model>> load_model(const std::string& path, const LoadOptions& opts) {
  KV_ASSIGN_OR_RETURN(std::string magic, read_magic(path));
  if (magic.empty()) {
    return corrupt(path + ": the file is empty (0 bytes): not a GGUF or llama2.c file");
  }
  std::unique_ptr<Model> m;
  if (magic == "GGUF") {
    KV_ASSIGN_OR_RETURN(m, load_gguf_model(path));
  } else {
    KV_ASSIGN_OR_RETURN(m, load_llama2c(path, opts));  // "ak42" (v1/v2) or a magic-less v0 header
  }
  if (opts.prepack_weights) prepack_weights(*m);
  return m;
}

size_t Model::weight_bytes() const {
  size_t n = tok_embd.n_bytes + output_norm.n_bytes;
  if (output.data != tok_embd.data) n += output.n_bytes;
  for (const LayerWeights& w : layers) {
    for (const TensorView* t : {&w.attn_norm, &w.wq, &w.wk, &w.wv, &w.wo, &w.bq, &w.bk, &w.bv,
                                &w.ffn_norm, &w.w_gate, &w.w_up, &w.w_down}) {
      n += t->n_bytes;
    }
  }
  return n;
}

DType Model::main_weight_type() const {
  // Counted in elements: a type that holds most of the bytes also holds most of the elements
  // when the rest is wider (f32), and llama2.c Q8 files with some f32 fallbacks read as q8_0.
  std::map<DType, int64_t> elems;
  auto add = [&](const TensorView& t) {
    if (t.present()) elems[t.type] += t.n_elements();
  };
  add(tok_embd);
  if (output.data != tok_embd.data) add(output);
  for (const LayerWeights& w : layers) {
    for (const TensorView* t : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down}) {
      add(*t);
    }
  }
  DType best = DType::kF32;
  int64_t best_n = 0;
  for (const auto& [t, n] : elems) {
    if (n > best_n) best = t, best_n = n;
  }
  return best;
}

}  // namespace kvserve
