// kvserve bench kv-quality: what KV-cache compression costs in quality. The text is tokenized,
// cut into segments, and each segment is scored teacher-forced (Generator::score, the decode
// path generation uses) under every config and under the reference, f32 K and V with full KV.
// Per config:
//   bytes/token   KV bytes per token from the config's layout (scales and headers included)
//   peak KV/seq   the most KV memory one sequence held (blocks used at the peak x block bytes)
//   perplexity    exp(mean NLL of the text's next tokens); change in % against the reference
//   mean KL       mean over scored positions of KL(p_ref || p_config), natural log
//   top-1         fraction of positions whose argmax equals the reference's
// All statistics are accumulated in double from stably log-softmaxed logits.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cli/common.h"
#include "core/bytes.h"
#include "kv/kv_policy.h"
#include "kv/kv_type.h"

namespace kvserve::cli {

namespace {

constexpr int kDefaultBlockSize = 16;
constexpr int kQ4BlockSize = 32;  // KIVI's group: q4 K is quantized per channel over a block

struct QualityFlags {
  ModelFlags model;
  std::string text_path;
  std::string configs;  // empty: the default list
  int segment = 0;      // 0: min(context, 512)
  int max_tokens = 0;   // 0: the whole text
  int window = 0;       // 0: segment / 4
  int block_size = 0;   // 0: 16, or 32 for configs with q4
  int n_ctx = 0;
  int n_threads = 0;
  bool json = false;
};

struct QualityConfig {
  std::string name;  // as given in --configs
  KvType k = KvType::kF16, v = KvType::kF16;
  KvPolicy policy = FullKv{};
  int block_size = kDefaultBlockSize;
};

// Accumulated over every scored position.
struct Stats {
  double nll = 0;  // sum of -log p(next token)
  double kl = 0;   // sum of KL(p_ref || p)
  int64_t agree = 0, n = 0;
  int peak_blocks = 0;  // max over segments
  double seconds = 0;
};

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

// One config: settings joined by ':' (see the --configs help).
Result<QualityConfig> parse_config(const std::string& spec, int block_override) {
  QualityConfig c;
  c.name = spec;
  bool have_k = false, have_v = false, have_bs = false;
  int window = -1, sink = -1, h2o = -1, recent = -1;
  std::stringstream ss(spec);
  std::string part;
  while (std::getline(ss, part, ':')) {
    if (part.empty()) return invalid_argument("--configs: empty setting in '" + spec + "'");
    const size_t eq = part.find('=');
    if (eq == std::string::npos) {  // a bare type sets K and V
      if (have_k || have_v) return invalid_argument("--configs: two KV types in '" + spec + "'");
      KV_ASSIGN_OR_RETURN(c.k, parse_type(part, spec));
      c.v = c.k;
      have_k = have_v = true;
      continue;
    }
    const std::string key = part.substr(0, eq), val = part.substr(eq + 1);
    auto set_once = [&](int& slot) -> Status {
      if (slot >= 0) return invalid_argument("--configs: '" + key + "' twice in '" + spec + "'");
      KV_ASSIGN_OR_RETURN(slot, parse_int(key, val));
      return Status::ok();
    };
    if (key == "k" || key == "v") {
      bool& have = key == "k" ? have_k : have_v;
      if (have) return invalid_argument("--configs: two " + key + " types in '" + spec + "'");
      KvType& dst = key == "k" ? c.k : c.v;
      KV_ASSIGN_OR_RETURN(dst, parse_type(val, spec));
      have = true;
    } else if (key == "window") {
      KV_RETURN_IF_ERROR(set_once(window));
    } else if (key == "sink") {
      KV_RETURN_IF_ERROR(set_once(sink));
    } else if (key == "h2o") {
      KV_RETURN_IF_ERROR(set_once(h2o));
    } else if (key == "recent") {
      KV_RETURN_IF_ERROR(set_once(recent));
    } else if (key == "block") {
      if (have_bs) return invalid_argument("--configs: 'block' twice in '" + spec + "'");
      KV_ASSIGN_OR_RETURN(c.block_size, parse_int(key, val));
      have_bs = true;
    } else {
      return invalid_argument("--configs: unknown setting '" + key + "' in '" + spec +
                              "' (k, v, window, sink, h2o, recent, block)");
    }
  }
  if (spec.empty()) return invalid_argument("--configs: empty config");
  if (h2o >= 0 && (window >= 0 || sink >= 0)) {
    return invalid_argument("--configs: h2o cannot be combined with window/sink in '" + spec + "'");
  }
  if (sink >= 0 && window < 0) {
    return invalid_argument("--configs: sink needs a window in '" + spec + "'");
  }
  if (recent >= 0 && h2o < 0) {
    return invalid_argument("--configs: recent needs h2o in '" + spec + "'");
  }
  if (window >= 0) c.policy = WindowKv{window, std::max(sink, 0)};
  if (h2o >= 0) c.policy = HeavyHitterKv{h2o, recent >= 0 ? recent : h2o / 4};
  if (Status st = validate_kv_policy(c.policy); !st.is_ok()) {
    return invalid_argument("--configs: '" + spec + "': " + st.message());
  }
  if (!have_bs) {
    c.block_size = block_override > 0                           ? block_override
                   : (c.k == KvType::kQ4 || c.v == KvType::kQ4) ? kQ4BlockSize
                                                                : kDefaultBlockSize;
  }
  return c;
}

std::string default_configs(int w) {
  const int sink = std::min(4, w / 2);
  return "f32,f16,bf16,q8,fp8,q4,k=q8:v=q4,window=" + std::to_string(w) +
         ",sink=" + std::to_string(sink) + ":window=" + std::to_string(w - sink) +
         ",h2o=" + std::to_string(w);
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

std::string policy_name(const QualityConfig& c) {
  return kv_policy_name(c.policy);
}

int run_kv_quality(const QualityFlags& f) {
  if (f.segment < 0) return report(invalid_argument("--segment must be positive"));
  if (f.max_tokens < 0) return report(invalid_argument("--max-tokens must be positive"));
  if (f.window < 0) return report(invalid_argument("--window must be positive"));
  if (f.block_size < 0) return report(invalid_argument("--block-size must be positive"));
  if (f.n_ctx < 0) return report(invalid_argument("--ctx must be positive"));
  auto text = read_text(f.text_path);
  if (!text) return report(text.status());
  auto loaded = load_model_from_flags(f.model);
  if (!loaded) return report(loaded.status());
  const Model& m = **loaded;
  if (!m.tokenizer) {
    return report(not_found("no tokenizer for " + m.path + ": pass --tokenizer FILE"));
  }
  const int n_vocab = m.config.n_vocab;
  const int n_ctx = f.n_ctx > 0 ? f.n_ctx : m.config.n_ctx_train;
  const int segment = f.segment > 0 ? f.segment : std::min(n_ctx, 512);
  if (segment < 2) return report(invalid_argument("--segment must be at least 2"));
  const int window = f.window > 0 ? f.window : std::max(segment / 4, 2);

  // Configs.
  std::vector<QualityConfig> configs;
  for (const std::string& spec :
       split_list(f.configs.empty() ? default_configs(window) : f.configs)) {
    auto c = parse_config(spec, f.block_size);
    if (!c) return report(c.status());
    configs.push_back(*c);
  }
  if (configs.empty()) return report(invalid_argument("--configs is empty"));

  // Tokens: the text without BOS, then segments of `segment` tokens each, BOS first when the
  // model adds one (so every text token of a segment is predicted).
  const bool add_bos = m.format == "llama2c" || m.tokenizer->add_bos_default();
  std::vector<int32_t> text_tokens = m.tokenizer->encode(*text, false);
  if (text_tokens.empty()) return report(invalid_argument("--text " + f.text_path + " is empty"));
  if (f.max_tokens > 0 && static_cast<int>(text_tokens.size()) > f.max_tokens) {
    text_tokens.resize(f.max_tokens);
  }
  const int per_segment = segment - (add_bos ? 1 : 0);
  if (per_segment < 1) return report(invalid_argument("--segment must be at least 2"));
  std::vector<std::vector<int32_t>> segments;
  for (size_t off = 0; off < text_tokens.size(); off += per_segment) {
    std::vector<int32_t> s;
    if (add_bos) s.push_back(m.tokenizer->bos());
    const size_t end = std::min(text_tokens.size(), off + per_segment);
    s.insert(s.end(), text_tokens.begin() + off, text_tokens.begin() + end);
    if (s.size() >= 2) segments.push_back(std::move(s));  // one token predicts nothing
  }
  if (segments.empty()) {
    return report(invalid_argument("--text " + f.text_path + " has too few tokens to score"));
  }

  // One engine per config (created up front, so a bad combination fails before any work).
  auto engine_options = [&](KvType k, KvType v, const KvPolicy& p, int bs) {
    EngineOptions eo;
    eo.block_size = bs;
    eo.kv_type_k = k;
    eo.kv_type_v = v;
    eo.kv_policy = p;
    eo.n_ctx = n_ctx;
    eo.n_threads = f.n_threads;
    eo.prefix_cache = false;
    return eo;
  };
  const int ref_bs = f.block_size > 0 ? f.block_size : kDefaultBlockSize;
  auto ref = Generator::create(m, engine_options(KvType::kF32, KvType::kF32, FullKv{}, ref_bs));
  if (!ref) return report(ref.status());
  std::vector<std::unique_ptr<Generator>> gens;
  for (const QualityConfig& c : configs) {
    auto g = Generator::create(m, engine_options(c.k, c.v, c.policy, c.block_size));
    if (!g) return report(Status(g.status().code(), c.name + ": " + g.status().message()));
    gens.push_back(std::move(*g));
  }
  const size_t f16_bytes_per_token =
      kv_layout_for(m.config,
                    engine_options(KvType::kF16, KvType::kF16, FullKv{}, kDefaultBlockSize))
          .bytes_per_block() /
      kDefaultBlockSize;

  const std::string model_name = std::filesystem::path(m.path).filename().string();
  const int threads = f.n_threads > 0 ? f.n_threads : ref->get()->pool().n_threads();
  int64_t n_scored = 0;
  for (const auto& s : segments) n_scored += static_cast<int64_t>(s.size()) - 1;
  if (!f.json) {
    std::printf(
        "model %s, text %s: %lld positions scored in %zu segment(s) of <= %d tokens%s, "
        "%d threads\n",
        model_name.c_str(), std::filesystem::path(f.text_path).filename().string().c_str(),
        static_cast<long long>(n_scored), segments.size(), segment, add_bos ? " (BOS first)" : "",
        threads);
    std::printf("reference: f32 K and V, full KV, block size %d\n", ref_bs);
    std::fflush(stdout);
  }

  // Segment by segment: the reference's logits, then every config against them.
  Stats ref_stats;
  std::vector<Stats> stats(configs.size());
  std::vector<float> ref_logits;  // [positions][n_vocab]
  std::vector<double> ref_lse;    // [positions]
  std::vector<int> ref_top;       // [positions]
  for (size_t si = 0; si < segments.size(); ++si) {
    const std::vector<int32_t>& toks = segments[si];
    const size_t n_pos = toks.size() - 1;
    ref_logits.assign(n_pos * n_vocab, 0.0f);
    ref_lse.assign(n_pos, 0.0);
    ref_top.assign(n_pos, 0);
    auto t0 = std::chrono::steady_clock::now();
    Status st = (*ref)->score(toks, [&](int pos, const float* lg) {
      std::copy(lg, lg + n_vocab, ref_logits.begin() + static_cast<size_t>(pos) * n_vocab);
      ref_lse[pos] = log_sum_exp(lg, n_vocab);
      ref_top[pos] = argmax(lg, n_vocab);
      ref_stats.nll += ref_lse[pos] - lg[toks[pos + 1]];
      ++ref_stats.n;
    });
    if (!st.is_ok()) return report(Status(st.code(), "reference f32: " + st.message()));
    ref_stats.seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (size_t ci = 0; ci < configs.size(); ++ci) {
      Stats& a = stats[ci];
      t0 = std::chrono::steady_clock::now();
      st = gens[ci]->score(toks, [&](int pos, const float* lg) {
        const double lse = log_sum_exp(lg, n_vocab);
        a.nll += lse - lg[toks[pos + 1]];
        const float* rl = ref_logits.data() + static_cast<size_t>(pos) * n_vocab;
        double kl = 0;
        for (int i = 0; i < n_vocab; ++i) {
          const double lp_ref = rl[i] - ref_lse[pos];
          const double lp = lg[i] - lse;
          kl += std::exp(lp_ref) * (lp_ref - lp);
        }
        a.kl += std::max(kl, 0.0);  // >= 0 exactly; rounding can leave -1e-17
        a.agree += argmax(lg, n_vocab) == ref_top[pos];
        ++a.n;
      });
      if (!st.is_ok()) return report(Status(st.code(), configs[ci].name + ": " + st.message()));
      a.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      a.peak_blocks = std::max(a.peak_blocks, gens[ci]->kv().n_blocks_used_peak());
    }
    if (!f.json && segments.size() > 1) {
      std::fprintf(stderr, "kvserve: segment %zu/%zu scored\n", si + 1, segments.size());
    }
  }

  const double ref_ppl = std::exp(ref_stats.nll / ref_stats.n);
  struct Row {
    const QualityConfig* c;
    double bytes_per_token, vs_f16, peak_bytes, ppl, ppl_change, kl, top1, ms_per_token;
    int peak_blocks;
  };
  std::vector<Row> rows;
  for (size_t ci = 0; ci < configs.size(); ++ci) {
    const Stats& a = stats[ci];
    const KvLayout& l = gens[ci]->kv().layout();
    Row r;
    r.c = &configs[ci];
    r.bytes_per_token = static_cast<double>(l.bytes_per_block()) / l.block_size;
    r.vs_f16 = r.bytes_per_token / static_cast<double>(f16_bytes_per_token);
    r.peak_blocks = a.peak_blocks;
    r.peak_bytes = static_cast<double>(a.peak_blocks) * static_cast<double>(l.bytes_per_block());
    r.ppl = std::exp(a.nll / a.n);
    r.ppl_change = 100.0 * (r.ppl / ref_ppl - 1.0);
    r.kl = a.kl / a.n;
    r.top1 = static_cast<double>(a.agree) / a.n;
    r.ms_per_token = 1000.0 * a.seconds / a.n;
    rows.push_back(r);
  }

  if (f.json) {
    nlohmann::json j;
    j["bench"] = "kv-quality";
    j["model"] = model_name;
    j["text"] = f.text_path;
    j["threads"] = threads;
    j["segment"] = segment;
    j["segments"] = segments.size();
    j["bos"] = add_bos;
    j["positions"] = n_scored;
    j["window"] = window;
    j["reference"] = {{"k_type", "f32"},
                      {"v_type", "f32"},
                      {"policy", "full"},
                      {"block_size", ref_bs},
                      {"perplexity", ref_ppl}};
    j["results"] = nlohmann::json::array();
    for (const Row& r : rows) {
      j["results"].push_back({{"name", r.c->name},
                              {"k_type", kv_type_name(r.c->k)},
                              {"v_type", kv_type_name(r.c->v)},
                              {"policy", policy_name(*r.c)},
                              {"block_size", r.c->block_size},
                              {"bytes_per_token", r.bytes_per_token},
                              {"bytes_per_token_vs_f16", r.vs_f16},
                              {"peak_kv_blocks_per_seq", r.peak_blocks},
                              {"peak_kv_bytes_per_seq", r.peak_bytes},
                              {"perplexity", r.ppl},
                              {"perplexity_change_pct", r.ppl_change},
                              {"mean_kl", r.kl},
                              {"top1_agreement", r.top1},
                              {"positions", stats[&r - rows.data()].n},
                              {"ms_per_token", r.ms_per_token}});
    }
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("reference perplexity %.4f\n", ref_ppl);
  std::printf("%-22s %-4s %-4s %-26s %5s %11s %6s %12s %10s %8s %10s %7s\n", "config", "K", "V",
              "policy", "block", "bytes/token", "x f16", "peak KV/seq", "perplexity", "vs f32",
              "mean KL", "top-1");
  for (const Row& r : rows) {
    std::printf("%-22s %-4s %-4s %-26s %5d %11.1f %6.3f %12s %10.4f %+7.2f%% %10.3e %6.2f%%\n",
                r.c->name.c_str(), kv_type_name(r.c->k), kv_type_name(r.c->v),
                policy_name(*r.c).c_str(), r.c->block_size, r.bytes_per_token, r.vs_f16,
                format_bytes(r.peak_bytes).c_str(), r.ppl, r.ppl_change, r.kl, 100.0 * r.top1);
  }
  std::printf(
      "bytes/token: K and V of all layers incl. scales; x f16: against f16 at block size %d; "
      "q4 configs use blocks of %d tokens (KIVI's group; q4 K is quantized per channel over a "
      "block) unless --block-size is given\n",
      kDefaultBlockSize, kQ4BlockSize);
  return 0;
}

}  // namespace

void register_bench_kv_quality(CLI::App* bench, int* rc) {
  auto f = std::make_shared<QualityFlags>();
  CLI::App* sub = bench->add_subcommand(
      "kv-quality", "perplexity, KL and top-1 agreement of KV types and policies vs f32 KV");
  sub->footer(
      "Each text segment is scored teacher-forced through the decode path, once with f32 K/V and\n"
      "full KV (the reference) and once per config.\n"
      "\n"
      "--configs: comma-separated configs; each is settings joined by ':'\n"
      "  TYPE        K and V type: f32, f16, bf16, q8, fp8, q4\n"
      "  k=TYPE      K type        v=TYPE      V type             (unset: f16)\n"
      "  window=W    sliding window of W positions\n"
      "  sink=S      with window: also keep the first S positions (attention sinks)\n"
      "  h2o=R       heavy-hitter eviction keeping R tokens\n"
      "  recent=N    with h2o: the newest N are always kept    (default R/4)\n"
      "  block=B     tokens per block (default: --block-size, else 32 with q4, else 16)\n"
      "  e.g. --configs f16,q8,q4,k=q8:v=q4,window=128,sink=4:window=124,q8:h2o=128\n"
      "Default: f32,f16,bf16,q8,fp8,q4,k=q8:v=q4,window=W,sink=4:window=W-4,h2o=W with\n"
      "W = --window (default segment / 4). Segments longer than the context need --ctx (the\n"
      "reference keeps every position).");
  add_model_flags(*sub, f->model);
  sub->add_option("--text", f->text_path, "text file to score (UTF-8)")
      ->required()
      ->type_name("FILE");
  sub->add_option("--configs", f->configs, "KV configs to compare (see below)");
  sub->add_option("--segment", f->segment,
                  "tokens per scored sequence, BOS included (default: min(context, 512))");
  sub->add_option("--max-tokens", f->max_tokens,
                  "score at most this many text tokens (default: all)");
  sub->add_option("--window", f->window, "W of the default policy configs (default: segment/4)");
  sub->add_option("--block-size", f->block_size, "tokens per block for every config");
  sub->add_option("-c,--ctx", f->n_ctx, "context limit (default: the model's)");
  add_threads_option(*sub, f->n_threads);
  sub->add_flag("--json", f->json, "print one JSON object");
  sub->callback([f, rc] { *rc = run_kv_quality(*f); });
}

}  // namespace kvserve::cli
