// llama2.c checkpoint loader: v0 (legacy fp32), v1 (fp32, "ak42"), v2 (Q8_0, "ak42").
#include "model/llama2c.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

namespace kvserve {

namespace {

constexpr size_t kV0HeaderBytes = 7 * sizeof(int32_t);
constexpr size_t kV12HeaderBytes = 256;
constexpr int kGroupSize = 32;  // the only Q8 group size we convert

// A read-only private mapping of a whole file.
struct MappedFile {
  void* data = nullptr;
  size_t size = 0;
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data) ::munmap(data, size);
  }
  const uint8_t* bytes() const { return static_cast<const uint8_t*>(data); }
};

// Owns everything the Model's views point into.
struct Llama2cStorage {
  std::unique_ptr<MappedFile> file;
  std::vector<std::vector<uint8_t>> buffers;  // converted tensors
};

Result<std::unique_ptr<MappedFile>> map_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    const std::string msg = path + ": cannot open: " + std::strerror(e);
    return e == ENOENT ? not_found(msg) : io_error(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument(path + ": not a readable regular file");
  }
  auto m = std::make_unique<MappedFile>();
  m->size = static_cast<size_t>(st.st_size);
  if (m->size > 0) {
    void* p = ::mmap(nullptr, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int e = errno;
    if (p == MAP_FAILED) {
      ::close(fd);
      return io_error(path + ": mmap failed: " + std::strerror(e));
    }
    m->data = p;
  }
  ::close(fd);
  return m;
}

struct Header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

Status bad_header(const std::string& path, bool has_magic, const char* field, int64_t v,
                  const std::string& want) {
  const std::string what = has_magic ? "llama2.c header field '"
                                     : "not a GGUF or llama2.c file: no GGUF or ak42 magic and "
                                       "not a plausible llama2.c v0 header: field '";
  return corrupt(path + ": " + what + field + "' = " + std::to_string(v) + ", expected " + want);
}

// Plausibility checks that also reject most files that are not llama2.c checkpoints at all.
Status check_header(const std::string& path, const Header& h, bool v0) {
  auto range = [&](const char* field, int64_t v, int64_t lo, int64_t hi) -> Status {
    if (v >= lo && v <= hi) return Status::ok();
    return bad_header(path, !v0, field, v, std::to_string(lo) + " to " + std::to_string(hi));
  };
  KV_RETURN_IF_ERROR(range("dim", h.dim, 1, 1 << 16));
  KV_RETURN_IF_ERROR(range("hidden_dim", h.hidden_dim, 1, 1 << 20));
  KV_RETURN_IF_ERROR(range("n_layers", h.n_layers, 1, 1024));
  KV_RETURN_IF_ERROR(range("n_heads", h.n_heads, 1, h.dim));
  KV_RETURN_IF_ERROR(range("n_kv_heads", h.n_kv_heads, 1, h.n_heads));
  const int64_t vocab = v0 ? std::abs(int64_t{h.vocab_size}) : h.vocab_size;
  KV_RETURN_IF_ERROR(range("vocab_size", vocab, 1, 1 << 22));
  KV_RETURN_IF_ERROR(range("seq_len", h.seq_len, 1, 1 << 24));
  if (h.dim % h.n_heads != 0 || (h.dim / h.n_heads) % 2 != 0) {
    return bad_header(path, !v0, "n_heads", h.n_heads,
                      "a divisor of dim " + std::to_string(h.dim) + " giving an even head size");
  }
  if (h.n_heads % h.n_kv_heads != 0) {
    return bad_header(path, !v0, "n_kv_heads", h.n_kv_heads,
                      "a divisor of n_heads " + std::to_string(h.n_heads));
  }
  return Status::ok();
}

ModelConfig config_from_header(const std::string& path, const Header& h) {
  ModelConfig c;
  c.arch = "llama";
  c.name = std::filesystem::path(path).stem().string();
  c.n_vocab = std::abs(h.vocab_size);
  c.n_embd = h.dim;
  c.n_ff = h.hidden_dim;
  c.n_layer = h.n_layers;
  c.n_head = h.n_heads;
  c.n_head_kv = h.n_kv_heads;
  c.head_dim = h.dim / h.n_heads;
  c.n_ctx_train = h.seq_len;
  c.rms_eps = 1e-5f;
  c.rope_freq_base = 10000.0f;
  c.rope_style = RopeStyle::kNorm;
  return c;
}

TensorView make_view(const std::string& name, DType type, int64_t cols, int64_t rows,
                     const void* data) {
  TensorView t;
  t.name = name;
  t.type = type;
  t.n_dims = rows == 1 ? 1 : 2;
  t.ne[0] = cols;
  t.ne[1] = rows;
  t.data = data;
  t.n_bytes = row_bytes(type, cols) * static_cast<size_t>(rows);
  return t;
}

std::string blk(int l, const char* what) {
  return "blk." + std::to_string(l) + "." + what + ".weight";
}

// Matrix kinds in the order llama2.c stores them, with their [rows][cols] shapes.
enum Mat { kWq, kWk, kWv, kWo, kW1, kW2, kW3, kNumMats };
const char* const kMatNames[kNumMats] = {"attn_q",   "attn_k",   "attn_v", "attn_output",
                                         "ffn_gate", "ffn_down", "ffn_up"};

void mat_shape(const ModelConfig& c, int m, int64_t* rows, int64_t* cols) {
  const int64_t d = c.n_embd, kv = c.kv_dim(), ff = c.n_ff;
  const int64_t shapes[kNumMats][2] = {{d, d}, {kv, d}, {kv, d}, {d, d}, {ff, d}, {d, ff}, {ff, d}};
  *rows = shapes[m][0];
  *cols = shapes[m][1];
}

TensorView* mat_slot(LayerWeights& lw, int m) {
  switch (m) {
    case kWq:
      return &lw.wq;
    case kWk:
      return &lw.wk;
    case kWv:
      return &lw.wv;
    case kWo:
      return &lw.wo;
    case kW1:
      return &lw.w_gate;
    case kW2:
      return &lw.w_down;
    default:
      return &lw.w_up;
  }
}

// Bounds-checked cursor over the mapped file.
struct Cursor {
  const uint8_t* base;
  size_t pos;
  const uint8_t* take(size_t n) {
    const uint8_t* p = base + pos;
    pos += n;
    return p;
  }
};

// ---- fp32 layouts (v0 and v1) ----------------------------------------------------------------

uint64_t fp32_floats(const ModelConfig& c, bool shared, bool with_freqs) {
  const uint64_t d = c.n_embd, L = c.n_layer, kv = c.kv_dim(), ff = c.n_ff, V = c.n_vocab;
  uint64_t n = V * d + L * d * 2 + d;                                      // embeddings, norms
  n += L * (d * d * 2 + kv * d * 2 + ff * d * 3);                          // matrices
  if (with_freqs) n += static_cast<uint64_t>(c.n_ctx_train) * c.head_dim;  // cos + sin
  if (!shared) n += V * d;
  return n;
}

void place_fp32_matrices(Model& m, Cursor& cur) {
  const ModelConfig& c = m.config;
  for (int k = 0; k < kNumMats; ++k) {
    int64_t rows, cols;
    mat_shape(c, k, &rows, &cols);
    for (int l = 0; l < c.n_layer; ++l) {
      *mat_slot(m.layers[l], k) =
          make_view(blk(l, kMatNames[k]), DType::kF32, cols, rows, cur.take(rows * cols * 4));
    }
  }
}

void place_norms(Model& m, Cursor& cur, bool grouped) {
  const ModelConfig& c = m.config;
  const size_t nb = static_cast<size_t>(c.n_embd) * 4;
  // v0: all rms_att, then (after the attention matrices) all rms_ffn; v1/v2: both up front.
  for (int l = 0; l < c.n_layer; ++l) {
    m.layers[l].attn_norm = make_view(blk(l, "attn_norm"), DType::kF32, c.n_embd, 1, cur.take(nb));
  }
  if (!grouped) return;
  for (int l = 0; l < c.n_layer; ++l) {
    m.layers[l].ffn_norm = make_view(blk(l, "ffn_norm"), DType::kF32, c.n_embd, 1, cur.take(nb));
  }
  m.output_norm = make_view("output_norm.weight", DType::kF32, c.n_embd, 1, cur.take(nb));
}

void set_output(Model& m, bool shared, const TensorView& wcls) {
  m.config.tied_embeddings = shared;
  m.output = shared ? m.tok_embd : wcls;
  if (!shared) m.output.name = "output.weight";
}

Status load_v0(Model& m, const MappedFile& f, const Header& h) {
  const ModelConfig& c = m.config;
  const bool shared = h.vocab_size > 0;
  const uint64_t want = kV0HeaderBytes + 4 * fp32_floats(c, shared, true);
  if (f.size != want) {
    return corrupt(m.path + ": llama2.c v0 checkpoint is " + std::to_string(f.size) +
                   " bytes but its header (dim " + std::to_string(h.dim) + ", " +
                   std::to_string(h.n_layers) + " layers, vocab " + std::to_string(h.vocab_size) +
                   ") needs exactly " + std::to_string(want) +
                   (f.size < want ? " (truncated)" : " (size mismatch)"));
  }
  Cursor cur{f.bytes(), kV0HeaderBytes};
  const size_t nb = static_cast<size_t>(c.n_embd) * 4;
  m.tok_embd =
      make_view("token_embd.weight", DType::kF32, c.n_embd, c.n_vocab, cur.take(nb * c.n_vocab));
  place_norms(m, cur, false);
  // wq, wk, wv, wo, then rms_ffn, then w1, w2, w3.
  for (int k = kWq; k <= kW3; ++k) {
    if (k == kW1) {
      for (int l = 0; l < c.n_layer; ++l) {
        m.layers[l].ffn_norm =
            make_view(blk(l, "ffn_norm"), DType::kF32, c.n_embd, 1, cur.take(nb));
      }
    }
    int64_t rows, cols;
    mat_shape(c, k, &rows, &cols);
    for (int l = 0; l < c.n_layer; ++l) {
      *mat_slot(m.layers[l], k) =
          make_view(blk(l, kMatNames[k]), DType::kF32, cols, rows, cur.take(rows * cols * 4));
    }
  }
  m.output_norm = make_view("output_norm.weight", DType::kF32, c.n_embd, 1, cur.take(nb));
  cur.take(static_cast<size_t>(c.n_ctx_train) * c.head_dim * 4);  // freq_cis real + imag
  TensorView wcls;
  if (!shared)
    wcls = make_view("output.weight", DType::kF32, c.n_embd, c.n_vocab, cur.take(nb * c.n_vocab));
  set_output(m, shared, wcls);
  return Status::ok();
}

Status load_v1(Model& m, const MappedFile& f, bool shared) {
  const ModelConfig& c = m.config;
  const uint64_t want = kV12HeaderBytes + 4 * fp32_floats(c, shared, false);
  if (f.size != want) {
    return corrupt(m.path + ": llama2.c v1 checkpoint is " + std::to_string(f.size) +
                   " bytes but its header needs exactly " + std::to_string(want) +
                   (f.size < want ? " (truncated)" : " (size mismatch)"));
  }
  Cursor cur{f.bytes(), kV12HeaderBytes};
  place_norms(m, cur, true);
  const size_t nb = static_cast<size_t>(c.n_embd) * 4;
  m.tok_embd =
      make_view("token_embd.weight", DType::kF32, c.n_embd, c.n_vocab, cur.take(nb * c.n_vocab));
  place_fp32_matrices(m, cur);
  TensorView wcls;
  if (!shared)
    wcls = make_view("output.weight", DType::kF32, c.n_embd, c.n_vocab, cur.take(nb * c.n_vocab));
  set_output(m, shared, wcls);
  return Status::ok();
}

// ---- Q8 layout (v2) --------------------------------------------------------------------------

uint64_t q8_bytes(uint64_t n_elems) {
  return n_elems + n_elems / kGroupSize * 4;
}

// Converts one llama2.c Q8 tensor ([rows][cols] int8 values, then one fp32 scale per 32
// consecutive elements of the flattened tensor).
TensorView convert_q8(Llama2cStorage& st, Cursor& cur, const std::string& name, int64_t rows,
                      int64_t cols) {
  const size_t n = static_cast<size_t>(rows * cols);
  const int8_t* q = reinterpret_cast<const int8_t*>(cur.take(n));
  const uint8_t* s_bytes = cur.take(n / kGroupSize * 4);
  auto scale = [&](size_t g) {
    float s;
    std::memcpy(&s, s_bytes + g * 4, 4);
    return s;
  };
  std::vector<uint8_t>& buf = st.buffers.emplace_back();
  if (cols % kGroupSize == 0) {  // every group lies within one row: keep it quantized
    buf.resize(n / kGroupSize * sizeof(BlockQ8_0));
    BlockQ8_0* blocks = reinterpret_cast<BlockQ8_0*>(buf.data());
    for (size_t g = 0; g < n / kGroupSize; ++g) {
      blocks[g].d = fp32_to_fp16(scale(g));
      std::memcpy(blocks[g].qs, q + g * kGroupSize, kGroupSize);
    }
    return make_view(name, DType::kQ8_0, cols, rows, buf.data());
  }
  buf.resize(n * sizeof(float));  // groups straddle rows: dequantize exactly
  float* out = reinterpret_cast<float*>(buf.data());
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]) * scale(i / kGroupSize);
  return make_view(name, DType::kF32, cols, rows, buf.data());
}

Status load_v2(Model& m, Llama2cStorage& st, bool shared, int32_t group_size) {
  const MappedFile& f = *st.file;
  const ModelConfig& c = m.config;
  if (group_size != kGroupSize) {
    return unsupported(m.path + ": llama2.c Q8_0 group size " + std::to_string(group_size) +
                       " is not supported (only " + std::to_string(kGroupSize) + ")");
  }
  const uint64_t d = c.n_embd, L = c.n_layer, V = c.n_vocab;
  uint64_t want = kV12HeaderBytes + 4 * (2 * L * d + d) + q8_bytes(V * d);
  for (int k = 0; k < kNumMats; ++k) {
    int64_t rows, cols;
    mat_shape(c, k, &rows, &cols);
    if ((rows * cols) % kGroupSize != 0) {
      return corrupt(m.path + ": llama2.c Q8_0 tensor " + kMatNames[k] + " has " +
                     std::to_string(rows * cols) + " elements, not a multiple of the group size " +
                     std::to_string(kGroupSize));
    }
    want += L * q8_bytes(static_cast<uint64_t>(rows * cols));
  }
  if ((V * d) % kGroupSize != 0) {
    return corrupt(m.path + ": llama2.c Q8_0 token embedding size is not a multiple of 32");
  }
  if (!shared) want += q8_bytes(V * d);
  if (f.size != want) {
    return corrupt(m.path + ": llama2.c v2 (Q8_0) checkpoint is " + std::to_string(f.size) +
                   " bytes but its header needs exactly " + std::to_string(want) +
                   (f.size < want ? " (truncated)" : " (size mismatch)"));
  }
  Cursor cur{f.bytes(), kV12HeaderBytes};
  place_norms(m, cur, true);
  m.tok_embd = convert_q8(st, cur, "token_embd.weight", c.n_vocab, c.n_embd);
  for (int k = 0; k < kNumMats; ++k) {
    int64_t rows, cols;
    mat_shape(c, k, &rows, &cols);
    for (int l = 0; l < c.n_layer; ++l) {
      *mat_slot(m.layers[l], k) = convert_q8(st, cur, blk(l, kMatNames[k]), rows, cols);
    }
  }
  TensorView wcls;
  if (!shared) wcls = convert_q8(st, cur, "output.weight", c.n_vocab, c.n_embd);
  set_output(m, shared, wcls);
  return Status::ok();
}

Status attach_tokenizer(Model& m, const LoadOptions& opts) {
  std::string tok = opts.tokenizer_path;
  if (tok.empty()) tok = find_llama2c_tokenizer(m.path);
  if (tok.empty()) return Status::ok();
  auto t = tokenizer_from_llama2c(tok, m.config.n_vocab);
  if (!t.is_ok()) {
    const Status& s = t.status();
    return Status(s.code(), m.path + ": cannot load tokenizer " + tok + ": " + s.message());
  }
  m.tokenizer = std::move(t).value();
  return Status::ok();
}

}  // namespace

std::string find_llama2c_tokenizer(const std::string& model_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path dir = fs::path(model_path).parent_path();
  if (dir.empty()) dir = ".";
  if (fs::is_regular_file(dir / "tokenizer.bin", ec)) return (dir / "tokenizer.bin").string();
  std::vector<std::string> found;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() >= 7 && name.rfind("tok", 0) == 0 &&
        name.compare(name.size() - 4, 4, ".bin") == 0 && it->is_regular_file(ec)) {
      found.push_back(it->path().string());
    }
  }
  if (found.empty()) return "";
  std::sort(found.begin(), found.end());
  return found.front();
}

Result<std::unique_ptr<Model>> load_llama2c(const std::string& path, const LoadOptions& opts) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, map_file(path));
  const MappedFile& f = *file;
  uint32_t magic = 0;
  if (f.size >= 4) std::memcpy(&magic, f.bytes(), 4);
  int version = 0;
  Header h{};
  bool shared = true;
  int32_t group_size = 0;
  if (magic == kLlama2cMagic) {
    if (f.size < kV12HeaderBytes) {
      return corrupt(path + ": truncated: llama2.c header needs 256 bytes, the file has " +
                     std::to_string(f.size));
    }
    int32_t v;
    std::memcpy(&v, f.bytes() + 4, 4);
    if (v != 1 && v != 2) {
      return unsupported(path + ": llama2.c checkpoint version " + std::to_string(v) +
                         " is not supported (expected 0, 1 or 2)");
    }
    version = v;
    std::memcpy(&h, f.bytes() + 8, sizeof h);
    shared = f.bytes()[8 + sizeof h] != 0;
    if (version == 2) std::memcpy(&group_size, f.bytes() + 9 + sizeof h, 4);
    KV_RETURN_IF_ERROR(check_header(path, h, false));
  } else {
    if (f.size < kV0HeaderBytes) {
      return corrupt(path + ": not a GGUF or llama2.c file: " + std::to_string(f.size) +
                     " bytes is too short for a header (truncated?)");
    }
    std::memcpy(&h, f.bytes(), sizeof h);
    KV_RETURN_IF_ERROR(check_header(path, h, true));
    shared = h.vocab_size > 0;
  }

  auto model = std::make_unique<Model>();
  model->path = path;
  model->format = "llama2c";
  model->config = config_from_header(path, h);
  model->layers.resize(h.n_layers);
  auto storage = std::make_shared<Llama2cStorage>();
  storage->file = std::move(file);
  switch (version) {
    case 0:
      KV_RETURN_IF_ERROR(load_v0(*model, *storage->file, h));
      break;
    case 1:
      KV_RETURN_IF_ERROR(load_v1(*model, *storage->file, shared));
      break;
    default:
      KV_RETURN_IF_ERROR(load_v2(*model, *storage, shared, group_size));
      break;
  }
  model->storage = storage;
  KV_RETURN_IF_ERROR(attach_tokenizer(*model, opts));
  return model;
}

}  // namespace kvserve
