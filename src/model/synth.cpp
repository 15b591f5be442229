// Synthetic GGUF writer: preset shapes, splitmix64 weights, SentencePiece-style vocabulary.
#include "model/synth.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

#include "kernels/quant.h"
#include "model/gguf.h"

namespace kvserve {

namespace {

struct Preset {
  const char* name;
  const char* arch;
  int n_embd, n_ff, n_layer, n_head, n_head_kv, n_vocab, n_ctx;
  float rope_base;
  float rms_eps;
  bool qkv_bias;
  bool tied;
  int sliding_window;
};

// Published shapes of the models these imitate.
constexpr Preset kPresets[] = {
    {"demo", "llama", 64, 128, 2, 4, 2, 512, 256, 10000.0f, 1e-5f, false, false, 0},
    {"stories15m", "llama", 288, 768, 6, 6, 6, 32000, 256, 10000.0f, 1e-5f, false, true, 0},
    {"smollm-135m", "llama", 576, 1536, 30, 9, 3, 49152, 2048, 10000.0f, 1e-5f, false, true, 0},
    {"qwen2.5-0.5b", "qwen2", 896, 4864, 24, 14, 2, 151936, 32768, 1000000.0f, 1e-6f, true, true,
     0},
    {"tinyllama-1.1b", "llama", 2048, 5632, 22, 32, 4, 32000, 2048, 10000.0f, 1e-5f, false, false,
     0},
    {"mistral-7b", "llama", 4096, 14336, 32, 32, 8, 32000, 32768, 10000.0f, 1e-5f, false, false,
     4096},
    {"llama-3-8b", "llama", 4096, 14336, 32, 32, 8, 128256, 8192, 500000.0f, 1e-5f, false, false,
     0},
};

const Preset* find_preset(std::string_view name) {
  for (const Preset& p : kPresets) {
    if (name == p.name) return &p;
  }
  return nullptr;
}

ModelConfig to_config(const Preset& p) {
  ModelConfig c;
  c.arch = p.arch;
  c.name = std::string("kvserve-synth-") + p.name;
  c.n_vocab = p.n_vocab;
  c.n_embd = p.n_embd;
  c.n_ff = p.n_ff;
  c.n_layer = p.n_layer;
  c.n_head = p.n_head;
  c.n_head_kv = p.n_head_kv;
  c.head_dim = p.n_embd / p.n_head;
  c.n_ctx_train = p.n_ctx;
  c.rms_eps = p.rms_eps;
  c.rope_freq_base = p.rope_base;
  c.rope_style = c.arch == "qwen2" ? RopeStyle::kNeox : RopeStyle::kNorm;
  c.sliding_window = p.sliding_window;
  c.has_qkv_bias = p.qkv_bias;
  c.tied_embeddings = p.tied;
  return c;
}

// splitmix64: tiny, fast and identical on every platform.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [-a, a): 24 random bits, exact in float.
  float uniform(float a) {
    const float u = static_cast<float>(next() >> 40) * (1.0f / 16777216.0f);
    return (2.0f * u - 1.0f) * a;
  }

 private:
  uint64_t s_;
};

// Uniform with standard deviation 0.02, like the usual N(0, 0.02) initialisation.
constexpr float kWeightRange = 0.034641016f;  // 0.02 * sqrt(3)
constexpr float kBiasRange = 0.02f;

enum class Fill { kOnes, kRandom, kBias };

struct TensorSpec {
  std::string name;
  DType type;
  std::vector<int64_t> dims;  // dims[0] innermost
  Fill fill;
};

std::vector<TensorSpec> tensor_specs(const ModelConfig& c, DType dtype) {
  const int64_t d = c.n_embd, q = c.q_dim(), kv = c.kv_dim(), ff = c.n_ff, V = c.n_vocab;
  std::vector<TensorSpec> t;
  t.push_back({"token_embd.weight", dtype, {d, V}, Fill::kRandom});
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    t.push_back({p + "attn_norm.weight", DType::kF32, {d}, Fill::kOnes});
    t.push_back({p + "attn_q.weight", dtype, {d, q}, Fill::kRandom});
    t.push_back({p + "attn_k.weight", dtype, {d, kv}, Fill::kRandom});
    t.push_back({p + "attn_v.weight", dtype, {d, kv}, Fill::kRandom});
    if (c.has_qkv_bias) {
      t.push_back({p + "attn_q.bias", DType::kF32, {q}, Fill::kBias});
      t.push_back({p + "attn_k.bias", DType::kF32, {kv}, Fill::kBias});
      t.push_back({p + "attn_v.bias", DType::kF32, {kv}, Fill::kBias});
    }
    t.push_back({p + "attn_output.weight", dtype, {q, d}, Fill::kRandom});
    t.push_back({p + "ffn_norm.weight", DType::kF32, {d}, Fill::kOnes});
    t.push_back({p + "ffn_gate.weight", dtype, {d, ff}, Fill::kRandom});
    t.push_back({p + "ffn_up.weight", dtype, {d, ff}, Fill::kRandom});
    t.push_back({p + "ffn_down.weight", dtype, {ff, d}, Fill::kRandom});
  }
  t.push_back({"output_norm.weight", DType::kF32, {d}, Fill::kOnes});
  if (!c.tied_embeddings) t.push_back({"output.weight", dtype, {d, V}, Fill::kRandom});
  return t;
}

// Generates one tensor row by row and hands the bytes to the sink in chunks of a few MiB.
Status produce_tensor(const TensorSpec& t, uint64_t seed, size_t index,
                      const GgufWriter::ByteSink& sink) {
  SplitMix64 rng(seed * 0xD1B54A32D192ED03ull + (index + 1) * 0x9E3779B97F4A7C15ull);
  const int64_t cols = t.dims[0];
  int64_t rows = 1;
  for (size_t i = 1; i < t.dims.size(); ++i) rows *= t.dims[i];
  const size_t rb = row_bytes(t.type, cols);
  constexpr size_t kChunk = size_t{4} << 20;
  std::vector<float> src(static_cast<size_t>(cols));
  std::vector<uint8_t> chunk;
  chunk.reserve(std::max(kChunk, rb));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& x : src) {
      x = t.fill == Fill::kOnes   ? 1.0f
          : t.fill == Fill::kBias ? rng.uniform(kBiasRange)
                                  : rng.uniform(kWeightRange);
    }
    const size_t at = chunk.size();
    chunk.resize(at + rb);
    kernels::quantize_row(t.type, src.data(), chunk.data() + at, cols);
    if (chunk.size() + rb > kChunk) {
      KV_RETURN_IF_ERROR(sink(chunk.data(), chunk.size()));
      chunk.clear();
    }
  }
  return chunk.empty() ? Status::ok() : sink(chunk.data(), chunk.size());
}

// ~300 common English words (TinyStories-flavoured), most common first.
constexpr const char* kWords[] = {
    "the",     "and",       "to",        "a",         "was",     "he",        "she",      "it",
    "of",      "in",        "you",       "said",      "his",     "her",       "they",     "that",
    "with",    "for",       "on",        "is",        "not",     "at",        "but",      "had",
    "one",     "day",       "all",       "so",        "were",    "we",        "be",       "have",
    "i",       "are",       "this",      "from",      "there",   "what",      "up",       "out",
    "as",      "time",      "very",      "little",    "big",     "could",     "go",       "can",
    "do",      "play",      "saw",       "happy",     "did",     "then",      "upon",     "once",
    "mom",     "dad",       "friend",    "friends",   "named",   "girl",      "boy",      "lily",
    "tim",     "ben",       "sue",       "sam",       "tom",     "anna",      "max",      "wanted",
    "went",    "loved",     "like",      "liked",     "see",     "look",      "looked",   "found",
    "made",    "make",      "came",      "come",      "get",     "got",       "new",      "good",
    "fun",     "help",      "helped",    "toy",       "toys",    "ball",      "tree",     "park",
    "house",   "home",      "dog",       "cat",       "bird",    "fish",      "sun",      "sky",
    "water",   "food",      "cake",      "red",       "blue",    "green",     "yellow",   "small",
    "sad",     "scared",    "kind",      "nice",      "pretty",  "together",  "again",    "after",
    "before",  "because",   "when",      "where",     "who",     "how",       "why",      "if",
    "or",      "no",        "yes",       "some",      "many",    "more",      "about",    "into",
    "over",    "down",      "away",      "back",      "around",  "too",       "also",     "just",
    "now",     "only",      "other",     "their",     "them",    "him",       "me",       "my",
    "your",    "our",       "us",        "its",       "an",      "by",        "will",     "would",
    "should",  "know",      "knew",      "think",     "thought", "feel",      "felt",     "want",
    "need",    "take",      "took",      "give",      "gave",    "say",       "tell",     "told",
    "ask",     "asked",     "run",       "ran",       "walk",    "walked",    "jump",     "jumped",
    "eat",     "ate",       "sleep",     "smile",     "smiled",  "laugh",     "laughed",  "cry",
    "cried",   "share",     "learn",     "learned",   "keep",    "let",       "put",      "find",
    "try",     "tried",     "open",      "close",     "start",   "stop",      "turn",     "show",
    "hear",    "heard",     "live",      "lived",     "love",    "hug",       "hold",     "bring",
    "sing",    "song",      "read",      "book",      "school",  "teacher",   "world",    "garden",
    "flower",  "flowers",   "car",       "boat",      "box",     "door",      "room",     "bed",
    "hand",    "head",      "eyes",      "face",      "heart",   "name",      "thing",    "things",
    "way",     "place",     "night",     "morning",   "long",    "little",    "first",    "last",
    "best",    "better",    "great",     "old",       "young",   "every",     "each",     "never",
    "always",  "something", "everyone",  "nothing",   "people",  "animals",   "family",   "mother",
    "father",  "sister",    "brother",   "baby",      "man",     "woman",     "king",     "queen",
    "magic",   "dragon",    "bear",      "rabbit",    "bunny",   "duck",      "mouse",    "lion",
    "frog",    "forest",    "river",     "sea",       "beach",   "sand",      "rain",     "snow",
    "wind",    "cold",      "hot",       "warm",      "soft",    "fast",      "slow",     "high",
    "far",     "near",      "inside",    "outside",   "under",   "through",   "than",     "which",
    "while",   "until",     "today",     "tomorrow",  "story",   "adventure", "surprise", "idea",
    "special", "careful",   "important", "beautiful", "funny",   "excited",   "angry",    "tired",
    "hungry",  "brave",     "strong",    "shiny",     "bright",  "dark",      "quiet",    "loud",
    "clean",   "dirty",     "people",    "work",      "worked",  "thank",     "thanks",   "sorry",
    "please",  "hello",     "goodbye",   "picture",   "paint",   "draw",      "color",    "colors",
    "game",    "games",     "race",      "climb",     "swim",    "fly",       "flew",     "grow",
    "grew",    "build",     "built",     "pick",      "picked",  "carry",
};

constexpr const char* kSuffixes[] = {"s",    "ed",   "ing",  "ly",   "er",   "est", "tion",
                                     "ness", "ment", "able", "ful",  "less", "y",   "en",
                                     "es",   "ies",  "ight", "ould", "ain",  "own", "ound"};

const char kSpace[] = "\xe2\x96\x81";  // U+2581, SentencePiece's word-boundary mark

// Adds s to the normal pieces if it is new and there is room.
struct PieceSet {
  std::vector<std::string>* out;
  size_t limit;
  std::set<std::string> seen;
  bool add(const std::string& s) {
    if (out->size() >= limit) return false;
    if (seen.insert(s).second) out->push_back(s);
    return true;
  }
  bool full() const { return out->size() >= limit; }
};

// "a".."z", "aa".."zz", "aaa".. for the n-th string in that order.
std::string letters(uint64_t n) {
  size_t len = 1;
  uint64_t count = 26;
  while (n >= count) {
    n -= count;
    ++len;
    count *= 26;
  }
  std::string s(len, 'a');
  for (size_t i = len; i-- > 0;) {
    s[i] = static_cast<char>('a' + n % 26);
    n /= 26;
  }
  return s;
}

}  // namespace

std::vector<std::string> synth_preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.push_back(p.name);
  return names;
}

Result<ModelConfig> synth_preset(std::string_view name) {
  const Preset* p = find_preset(name);
  if (!p) return not_found("unknown synth preset '" + std::string(name) + "'");
  return to_config(*p);
}

SynthVocab synth_vocab(int n_vocab) {
  SynthVocab v;
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    v.tokens.push_back(hex);
    v.types.push_back(6);
  }
  const size_t n_special = v.tokens.size();
  PieceSet pieces{&v.tokens, static_cast<size_t>(std::max(n_vocab, 0)), {}};
  pieces.add(kSpace);
  for (char ch = 0x21; ch < 0x7f; ++ch) pieces.add(std::string(1, ch));
  for (const char* w : kWords) {
    const std::string word = w;
    std::string cap = word;
    cap[0] = static_cast<char>(cap[0] - 'a' + 'A');  // sentence starts and names
    for (size_t k = 1; k <= word.size(); ++k) pieces.add(kSpace + word.substr(0, k));
    for (size_t k = 2; k <= word.size(); ++k) pieces.add(word.substr(0, k));
    for (size_t k = 1; k <= cap.size(); ++k) pieces.add(kSpace + cap.substr(0, k));
    for (size_t k = 1; k <= cap.size(); ++k) pieces.add(cap.substr(0, k));
  }
  for (const char* s : kSuffixes) {
    const std::string suf = s;
    for (size_t k = 1; k <= suf.size(); ++k) pieces.add(suf.substr(0, k));
  }
  for (uint64_t i = 0; !pieces.full(); ++i) pieces.add(kSpace + letters(i));
  v.tokens.resize(static_cast<size_t>(std::max(n_vocab, 0)));
  v.types.resize(v.tokens.size(), 1);
  v.scores.assign(v.tokens.size(), 0.0f);
  for (size_t i = n_special; i < v.tokens.size(); ++i) {
    v.scores[i] = -static_cast<float>(i - n_special);
  }
  return v;
}

Status write_synth_model(const SynthOptions& opts) {
  const Preset* p = find_preset(opts.preset);
  if (!p) {
    std::string names;
    for (const std::string& n : synth_preset_names()) names += (names.empty() ? "" : ", ") + n;
    return invalid_argument("unknown synth preset '" + opts.preset + "' (known: " + names + ")");
  }
  if (!kernels::can_quantize(opts.dtype)) {
    return invalid_argument(std::string("synth: cannot write weights of type ") +
                            dtype_name(opts.dtype) + " (use f32, f16, bf16, q8_0 or q4_0)");
  }
  const ModelConfig c = to_config(*p);
  const std::vector<TensorSpec> specs = tensor_specs(c, opts.dtype);
  const int block = dtype_info(opts.dtype).block_elems;
  for (const TensorSpec& t : specs) {
    if (t.dims[0] % dtype_info(t.type).block_elems != 0) {
      return invalid_argument("synth: preset " + opts.preset + " tensor '" + t.name + "' has " +
                              std::to_string(t.dims[0]) + " columns, not a multiple of the " +
                              dtype_name(opts.dtype) + " block size " + std::to_string(block));
    }
  }

  GgufWriter w;
  const std::string a = c.arch + ".";
  w.set_string("general.architecture", c.arch);
  w.set_string("general.name", c.name);
  w.set_u32(a + "context_length", static_cast<uint32_t>(c.n_ctx_train));
  w.set_u32(a + "embedding_length", static_cast<uint32_t>(c.n_embd));
  w.set_u32(a + "feed_forward_length", static_cast<uint32_t>(c.n_ff));
  w.set_u32(a + "block_count", static_cast<uint32_t>(c.n_layer));
  w.set_u32(a + "attention.head_count", static_cast<uint32_t>(c.n_head));
  w.set_u32(a + "attention.head_count_kv", static_cast<uint32_t>(c.n_head_kv));
  w.set_u32(a + "attention.key_length", static_cast<uint32_t>(c.head_dim));
  w.set_u32(a + "attention.value_length", static_cast<uint32_t>(c.head_dim));
  w.set_u32(a + "rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  w.set_u32(a + "vocab_size", static_cast<uint32_t>(c.n_vocab));
  w.set_f32(a + "attention.layer_norm_rms_epsilon", c.rms_eps);
  w.set_f32(a + "rope.freq_base", c.rope_freq_base);
  if (c.sliding_window > 0) {
    w.set_u32(a + "attention.sliding_window", static_cast<uint32_t>(c.sliding_window));
  }
  SynthVocab vocab = synth_vocab(c.n_vocab);
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string_array("tokenizer.ggml.tokens", vocab.tokens);
  w.set_f32_array("tokenizer.ggml.scores", vocab.scores);
  w.set_i32_array("tokenizer.ggml.token_type", vocab.types);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  vocab = {};

  for (const TensorSpec& t : specs) w.add_tensor_deferred(t.name, t.type, t.dims);
  return w.write_streaming(opts.out_path,
                           [&](size_t i, const GgufWriter::ByteSink& sink) -> Status {
                             return produce_tensor(specs[i], opts.seed, i, sink);
                           });
}

}  // namespace kvserve
