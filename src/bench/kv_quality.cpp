#include "bench/kv_quality.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/generator.h"

namespace kvserve::bench {

namespace {

Result<int> parse_int(const std::string& key, const std::string& text) {
  size_t used = 0;
  int x = 0;
  try {
    x = std::stoi(text, &used);
  } catch (...) {
    used = 0;
  }
  if (text.empty() || used != text.size() || x < 0) {
    return invalid_argument("--configs: '" + key + "=" + text + "' needs a number >= 0");
  }
  return x;
}

Result<KvType> parse_type(const std::string& text, const std::string& spec) {
  auto t = kv_type_from_name(text);
  if (!t) {
    return invalid_argument("--configs: unknown KV type '" + text + "' in '" + spec +
                            "' (types: " + kv_type_list() + ")");
  }
  return *t;
}

// A config's settings as parsed so far; -1: not given.
struct ConfigParts {
  bool have_k = false, have_v = false, have_bs = false;
  int window = -1, sink = -1, h2o = -1, recent = -1;
};

// One ':'-separated setting of `spec` into c / p.
Status apply_setting(const std::string& part, const std::string& spec, QualityConfig& c,
                     ConfigParts& p) {
  if (part.empty()) return invalid_argument("--configs: empty setting in '" + spec + "'");
  const size_t eq = part.find('=');
  if (eq == std::string::npos) {  // a bare type sets K and V
    if (p.have_k || p.have_v) return invalid_argument("--configs: two KV types in '" + spec + "'");
    KV_ASSIGN_OR_RETURN(c.k, parse_type(part, spec));
    c.v = c.k;
    p.have_k = p.have_v = true;
    return Status::ok();
  }
  const std::string key = part.substr(0, eq), val = part.substr(eq + 1);
  auto set_once = [&](int& slot) -> Status {
    if (slot >= 0) return invalid_argument("--configs: '" + key + "' twice in '" + spec + "'");
    KV_ASSIGN_OR_RETURN(slot, parse_int(key, val));
    return Status::ok();
  };
  if (key == "k" || key == "v") {
    bool& have = key == "k" ? p.have_k : p.have_v;
    if (have) return invalid_argument("--configs: two " + key + " types in '" + spec + "'");
    KvType& dst = key == "k" ? c.k : c.v;
    KV_ASSIGN_OR_RETURN(dst, parse_type(val, spec));
    have = true;
    return Status::ok();
  }
  if (key == "window") return set_once(p.window);
  if (key == "sink") return set_once(p.sink);
  if (key == "h2o") return set_once(p.h2o);
  if (key == "recent") return set_once(p.recent);
  if (key == "block") {
    if (p.have_bs) return invalid_argument("--configs: 'block' twice in '" + spec + "'");
    KV_ASSIGN_OR_RETURN(c.block_size, parse_int(key, val));
    p.have_bs = true;
    return Status::ok();
  }
  return invalid_argument("--configs: unknown setting '" + key + "' in '" + spec +
                          "' (k, v, window, sink, h2o, recent, block)");
}

// The policy and block size from the parsed settings, checked together.
Status finish_config(const ConfigParts& p, int block_override, QualityConfig& c) {
  const std::string& spec = c.name;
  if (p.h2o >= 0 && (p.window >= 0 || p.sink >= 0)) {
    return invalid_argument("--configs: h2o cannot be combined with window/sink in '" + spec + "'");
  }
  if (p.sink >= 0 && p.window < 0) {
    return invalid_argument("--configs: sink needs a window in '" + spec + "'");
  }
  if (p.recent >= 0 && p.h2o < 0) {
    return invalid_argument("--configs: recent needs h2o in '" + spec + "'");
  }
  if (p.window >= 0) c.policy = WindowKv{p.window, std::max(p.sink, 0)};
  if (p.h2o >= 0) c.policy = HeavyHitterKv{p.h2o, p.recent >= 0 ? p.recent : p.h2o / 4};
  if (Status st = validate_kv_policy(c.policy); !st.is_ok()) {
    return invalid_argument("--configs: '" + spec + "': " + st.message());
  }
  if (!p.have_bs) c.block_size = block_override > 0 ? block_override : default_block_size(c.k, c.v);
  return Status::ok();
}

// Stable log-sum-exp of logits[0..n) in double.
double log_sum_exp(const float* logits, int n) {
  double mx = logits[0];
  for (int i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp(static_cast<double>(logits[i]) - mx);
  return mx + std::log(s);
}

int argmax(const float* logits, int n) {
  return static_cast<int>(std::max_element(logits, logits + n) - logits);
}

Result<std::string> read_text(const std::string& path) {
  if (path.empty()) return invalid_argument("--text FILE is required");
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return invalid_argument("--text " + path + " is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("cannot read --text " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return io_error("error reading --text " + path);
  return ss.str();
}

Status check_options(const QualityOptions& o) {
  if (o.segment < 0) return invalid_argument("--segment must be positive");
  if (o.max_tokens < 0) return invalid_argument("--max-tokens must be positive");
  if (o.window < 0) return invalid_argument("--window must be positive");
  if (o.block_size < 0) return invalid_argument("--block-size must be positive");
  if (o.n_ctx < 0) return invalid_argument("--ctx must be positive");
  return Status::ok();
}

// The text's tokens (no BOS, at most max_tokens) cut into segments of `segment` tokens, each
// with BOS first when the model adds one (so every text token of a segment is predicted).
Result<std::vector<std::vector<int32_t>>> make_segments(const Model& m, const std::string& text,
                                                        const QualityOptions& o, int segment,
                                                        bool add_bos) {
  std::vector<int32_t> text_tokens = m.tokenizer->encode(text, false);
  if (text_tokens.empty()) return invalid_argument("--text " + o.text_path + " is empty");
  if (o.max_tokens > 0 && static_cast<int>(text_tokens.size()) > o.max_tokens) {
    text_tokens.resize(o.max_tokens);
  }
  const int per_segment = segment - (add_bos ? 1 : 0);
  if (per_segment < 1) return invalid_argument("--segment must be at least 2");
  std::vector<std::vector<int32_t>> segments;
  for (size_t off = 0; off < text_tokens.size(); off += per_segment) {
    std::vector<int32_t> s;
    if (add_bos) s.push_back(m.tokenizer->bos());
    const size_t end = std::min(text_tokens.size(), off + per_segment);
    s.insert(s.end(), text_tokens.begin() + off, text_tokens.begin() + end);
    if (s.size() >= 2) segments.push_back(std::move(s));  // one token predicts nothing
  }
  if (segments.empty()) {
    return invalid_argument("--text " + o.text_path + " has too few tokens to score");
  }
  return segments;
}

EngineOptions engine_options(const QualityOptions& o, int n_ctx, KvType k, KvType v,
                             const KvPolicy& p, int bs) {
  EngineOptions eo;
  eo.block_size = bs;
  eo.kv_type_k = k;
  eo.kv_type_v = v;
  eo.kv_policy = p;
  eo.n_ctx = n_ctx;
  eo.n_threads = o.n_threads;
  eo.prefix_cache = false;
  return eo;
}

// Accumulated over every scored position.
struct Stats {
  double nll = 0;  // sum of -log p(next token)
  double kl = 0;   // sum of KL(p_ref || p)
  int64_t agree = 0, n = 0;
  int peak_blocks = 0;  // max over segments
  double seconds = 0;
};

// The reference's log-softmax inputs for one segment, [positions][...].
struct RefLogits {
  std::vector<float> logits;  // [positions][n_vocab]
  std::vector<double> lse;
  std::vector<int> top;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Status score_reference(Generator& ref, const std::vector<int32_t>& toks, int n_vocab, RefLogits& r,
                       Stats& stats) {
  const size_t n_pos = toks.size() - 1;
  r.logits.assign(n_pos * n_vocab, 0.0f);
  r.lse.assign(n_pos, 0.0);
  r.top.assign(n_pos, 0);
  const auto t0 = std::chrono::steady_clock::now();
  Status st = ref.score(toks, [&](int pos, const float* lg) {
    std::copy(lg, lg + n_vocab, r.logits.begin() + static_cast<size_t>(pos) * n_vocab);
    r.lse[pos] = log_sum_exp(lg, n_vocab);
    r.top[pos] = argmax(lg, n_vocab);
    stats.nll += r.lse[pos] - lg[toks[pos + 1]];
    ++stats.n;
  });
  if (!st.is_ok()) return Status(st.code(), "reference f32: " + st.message());
  stats.seconds += seconds_since(t0);
  return Status::ok();
}

Status score_config(Generator& gen, const std::string& name, const std::vector<int32_t>& toks,
                    int n_vocab, const RefLogits& ref, Stats& a) {
  const auto t0 = std::chrono::steady_clock::now();
  Status st = gen.score(toks, [&](int pos, const float* lg) {
    const double lse = log_sum_exp(lg, n_vocab);
    a.nll += lse - lg[toks[pos + 1]];
    const float* rl = ref.logits.data() + static_cast<size_t>(pos) * n_vocab;
    double kl = 0;
    for (int i = 0; i < n_vocab; ++i) {
      const double lp_ref = rl[i] - ref.lse[pos];
      const double lp = lg[i] - lse;
      kl += std::exp(lp_ref) * (lp_ref - lp);
    }
    a.kl += std::max(kl, 0.0);  // >= 0 exactly; rounding can leave -1e-17
    a.agree += argmax(lg, n_vocab) == ref.top[pos];
    ++a.n;
  });
  if (!st.is_ok()) return Status(st.code(), name + ": " + st.message());
  a.seconds += seconds_since(t0);
  a.peak_blocks = std::max(a.peak_blocks, gen.kv().n_blocks_used_peak());
  return Status::ok();
}

QualityRow make_row(const QualityConfig& c, const Stats& a, const KvLayout& l,
                    double f16_bytes_per_token, double ref_ppl) {
  QualityRow r;
  r.config = c;
  r.bytes_per_token = static_cast<double>(l.bytes_per_block()) / l.block_size;
  r.vs_f16 = r.bytes_per_token / f16_bytes_per_token;
  r.peak_blocks = a.peak_blocks;
  r.peak_bytes = static_cast<double>(a.peak_blocks) * static_cast<double>(l.bytes_per_block());
  r.ppl = std::exp(a.nll / a.n);
  r.ppl_change = 100.0 * (r.ppl / ref_ppl - 1.0);
  r.kl = a.kl / a.n;
  r.top1 = static_cast<double>(a.agree) / a.n;
  r.positions = a.n;
  r.ms_per_token = 1000.0 * a.seconds / a.n;
  return r;
}

// What a run works on once set up: the model, its segments, the configs and their engines.
struct Setup {
  std::unique_ptr<Model> model;
  std::vector<std::vector<int32_t>> segments;
  std::vector<QualityConfig> configs;
  std::unique_ptr<Generator> ref;
  std::vector<std::unique_ptr<Generator>> gens;
  int n_ctx = 0;
};

// Text, model, segment / window, configs and segments, in that order (so a bad argument is
// reported before any work that depends on it).
Status prepare(const QualityOptions& o, Setup& s, QualityReport& report) {
  KV_RETURN_IF_ERROR(check_options(o));
  KV_ASSIGN_OR_RETURN(const std::string text, read_text(o.text_path));
  KV_ASSIGN_OR_RETURN(s.model, o.load_model());
  const Model& m = *s.model;
  if (!m.tokenizer) return not_found("no tokenizer for " + m.path + ": pass --tokenizer FILE");
  s.n_ctx = o.n_ctx > 0 ? o.n_ctx : m.config.n_ctx_train;
  report.segment = o.segment > 0 ? o.segment : std::min(s.n_ctx, 512);
  if (report.segment < 2) return invalid_argument("--segment must be at least 2");
  report.window = o.window > 0 ? o.window : std::max(report.segment / 4, 2);
  const std::string specs = o.configs.empty() ? default_quality_configs(report.window) : o.configs;
  std::stringstream ss(specs);
  for (std::string spec; std::getline(ss, spec, ',');) {
    if (spec.empty()) continue;
    KV_ASSIGN_OR_RETURN(QualityConfig c, parse_quality_config(spec, o.block_size));
    s.configs.push_back(c);
  }
  if (s.configs.empty()) return invalid_argument("--configs is empty");
  report.bos = m.format == "llama2c" || m.tokenizer->add_bos_default();
  KV_ASSIGN_OR_RETURN(s.segments, make_segments(m, text, o, report.segment, report.bos));
  return Status::ok();
}

// One engine per config, created up front, so a bad combination fails before any work.
Status create_engines(const QualityOptions& o, Setup& s, QualityReport& report) {
  const Model& m = *s.model;
  report.ref_block_size = o.block_size > 0 ? o.block_size : kDefaultBlockSize;
  KV_ASSIGN_OR_RETURN(
      s.ref, Generator::create(m, engine_options(o, s.n_ctx, KvType::kF32, KvType::kF32, FullKv{},
                                                 report.ref_block_size)));
  for (const QualityConfig& c : s.configs) {
    auto g = Generator::create(m, engine_options(o, s.n_ctx, c.k, c.v, c.policy, c.block_size));
    if (!g) return Status(g.status().code(), c.name + ": " + g.status().message());
    s.gens.push_back(std::move(*g));
  }
  return Status::ok();
}

}  // namespace

Result<QualityConfig> parse_quality_config(const std::string& spec, int block_override) {
  QualityConfig c;
  c.name = spec;
  ConfigParts p;
  std::stringstream ss(spec);
  for (std::string part; std::getline(ss, part, ':');) {
    KV_RETURN_IF_ERROR(apply_setting(part, spec, c, p));
  }
  if (spec.empty()) return invalid_argument("--configs: empty config");
  KV_RETURN_IF_ERROR(finish_config(p, block_override, c));
  return c;
}

std::string default_quality_configs(int w) {
  const int sink = std::min(4, w / 2);
  return "f32,f16,bf16,q8,fp8,q4,k=q8:v=q4,window=" + std::to_string(w) +
         ",sink=" + std::to_string(sink) + ":window=" + std::to_string(w - sink) +
         ",h2o=" + std::to_string(w);
}

Result<QualityReport> run_kv_quality(const QualityOptions& o, const QualityProgress& progress) {
  QualityReport report;
  Setup s;
  KV_RETURN_IF_ERROR(prepare(o, s, report));
  KV_RETURN_IF_ERROR(create_engines(o, s, report));
  const Model& m = *s.model;
  const int n_vocab = m.config.n_vocab;
  report.model = std::filesystem::path(m.path).filename().string();
  report.threads = o.n_threads > 0 ? o.n_threads : s.ref->pool().n_threads();
  report.n_segments = static_cast<int>(s.segments.size());
  for (const auto& seg : s.segments) report.positions += static_cast<int64_t>(seg.size()) - 1;
  if (progress) progress(report, 0);

  // Segment by segment: the reference's logits, then every config against them.
  Stats ref_stats;
  std::vector<Stats> stats(s.configs.size());
  RefLogits ref;
  for (size_t si = 0; si < s.segments.size(); ++si) {
    const std::vector<int32_t>& toks = s.segments[si];
    KV_RETURN_IF_ERROR(score_reference(*s.ref, toks, n_vocab, ref, ref_stats));
    for (size_t ci = 0; ci < s.configs.size(); ++ci) {
      KV_RETURN_IF_ERROR(
          score_config(*s.gens[ci], s.configs[ci].name, toks, n_vocab, ref, stats[ci]));
    }
    if (progress) progress(report, static_cast<int>(si) + 1);
  }

  report.ref_ppl = std::exp(ref_stats.nll / ref_stats.n);
  const double f16_bytes_per_token = static_cast<double>(
      kv_layout_for(m.config, engine_options(o, s.n_ctx, KvType::kF16, KvType::kF16, FullKv{},
                                             kDefaultBlockSize))
          .bytes_per_block() /
      kDefaultBlockSize);
  for (size_t ci = 0; ci < s.configs.size(); ++ci) {
    report.rows.push_back(make_row(s.configs[ci], stats[ci], s.gens[ci]->kv().layout(),
                                   f16_bytes_per_token, report.ref_ppl));
  }
  return report;
}

}  // namespace kvserve::bench
