#include "cli/common.h"
#include "core/bytes.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "core/hash.h"
#include "kv/kv_storage.h"
#include "model/synth.h"

namespace kvserve::cli {

namespace {
constexpr const char* kDemoPreset = "stories15m";
constexpr DType kDemoDType = DType::kQ8_0;
constexpr uint64_t kDemoSeed = 42;
}  // namespace

void add_model_flags(CLI::App& app, ModelFlags& f) {
  app.add_option("-m,--model", f.model_path,
                 "model file: GGUF or llama2.c checkpoint (default: the built-in demo model)");
  app.add_option("--tokenizer", f.tokenizer_path,
                 "llama2.c tokenizer.bin (default: tokenizer.bin or tok*.bin beside the model)");
}

void add_threads_option(CLI::App& app, int& n_threads) {
  app.add_option("-t,--threads", n_threads, "threads (default: one per core)")
      ->check(CLI::Range(0, kMaxThreads));
}

void add_kv_type_flags(CLI::App& app, KvTypeFlags& f, bool k_and_v_apart) {
  app.add_option("--kv-type", f.kv_type,
                 std::string("KV element type of K and V: ") + kv_type_list())
      ->capture_default_str();
  if (!k_and_v_apart) return;
  app.add_option("--kv-type-k", f.kv_type_k, "K element type (default: --kv-type)");
  app.add_option("--kv-type-v", f.kv_type_v, "V element type (default: --kv-type)");
}

Result<KvType> parse_kv_type_flag(const char* flag, const std::string& name) {
  auto t = kv_type_from_name(name);
  if (!t) {
    return invalid_argument(std::string(flag) + " must be one of " + kv_type_list() + ", got '" +
                            name + "'");
  }
  return *t;
}

Result<KvTypes> kv_types_from_flags(const KvTypeFlags& f) {
  // Unknown names are refused here; combinations the kernels cannot do (q4 on an odd
  // head_dim, ...) when the engine is created for a model (KvLayout::check).
  KvTypes t;
  KV_ASSIGN_OR_RETURN(t.k, parse_kv_type_flag("--kv-type", f.kv_type));
  t.v = t.k;
  if (!f.kv_type_k.empty()) {
    KV_ASSIGN_OR_RETURN(t.k, parse_kv_type_flag("--kv-type-k", f.kv_type_k));
  }
  if (!f.kv_type_v.empty()) {
    KV_ASSIGN_OR_RETURN(t.v, parse_kv_type_flag("--kv-type-v", f.kv_type_v));
  }
  return t;
}

void add_block_size_flag(CLI::App& app, std::optional<int>& block_size) {
  app.add_option("--block-size", block_size,
                 "tokens per KV block, 1-256 (default: " + std::to_string(kDefaultBlockSize) +
                     ", or " + std::to_string(kQ4DefaultBlockSize) + " when K or V is q4)");
}

void add_kv_policy_flags(CLI::App& app, KvPolicyFlags& f) {
  app.add_option("--swa", f.swa,
                 "sliding-window attention over the last W tokens (frees the rest)");
  app.add_option("--kv-sink", f.kv_sink,
                 "attention sinks: always keep the first S tokens (with --kv-window)");
  app.add_option("--kv-window", f.kv_window,
                 "with --kv-sink: keep the last W tokens (StreamingLLM)");
  app.add_option("--kv-evict", f.kv_evict, "token eviction: none or h2o (heavy hitters)")
      ->capture_default_str();
  app.add_option("--kv-keep", f.kv_keep, "h2o: tokens kept per sequence");
  app.add_option("--kv-recent", f.kv_recent,
                 "h2o: of --kv-keep, newest tokens always kept (default keep/4)");
}

void add_engine_flags(CLI::App& app, EngineFlags& f) {
  add_block_size_flag(app, f.block_size);
  app.add_option("--kv-budget", f.kv_budget, "KV cache memory, e.g. 512MiB or 2GiB");
  app.add_option("--kv-blocks", f.kv_blocks, "KV cache size in blocks (overrides --kv-budget)");
  app.add_flag("--kv-lazy", f.kv_lazy,
               "commit KV memory as blocks are first written, not at start-up (decode steps "
               "then pay the page faults)");
  add_kv_type_flags(app, f.kv_types);
  add_kv_policy_flags(app, f.policy);
  app.add_option("-c,--ctx", f.n_ctx, "context length (default: the model's)");
  add_threads_option(app, f.n_threads);
}

Result<KvPolicy> kv_policy_from_flags(const KvPolicyFlags& f) {
  const bool window = f.swa != 0 || f.kv_sink != 0 || f.kv_window != 0;
  if (f.kv_evict != "none" && f.kv_evict != "h2o") {
    return invalid_argument("--kv-evict must be none or h2o, got '" + f.kv_evict + "'");
  }
  const bool h2o = f.kv_evict == "h2o";
  if (window && h2o) return invalid_argument("--kv-evict h2o cannot be combined with a window");
  if ((f.kv_keep != 0 || f.kv_recent >= 0) && !h2o) {
    return invalid_argument("--kv-keep and --kv-recent need --kv-evict h2o");
  }
  if (f.swa != 0 && (f.kv_sink != 0 || f.kv_window != 0)) {
    return invalid_argument("use either --swa W or --kv-sink S --kv-window W");
  }
  KvPolicy p = FullKv{};
  if (f.swa != 0) {
    p = WindowKv{f.swa, 0};
  } else if (f.kv_sink != 0 || f.kv_window != 0) {
    if (f.kv_window == 0) return invalid_argument("--kv-sink needs --kv-window");
    p = WindowKv{f.kv_window, f.kv_sink};
  } else if (h2o) {
    if (f.kv_keep == 0) return invalid_argument("--kv-evict h2o needs --kv-keep R");
    p = HeavyHitterKv{f.kv_keep, f.kv_recent >= 0 ? f.kv_recent : f.kv_keep / 4};
  }
  KV_RETURN_IF_ERROR(validate_kv_policy(p));
  return p;
}

Result<EngineOptions> engine_options(const EngineFlags& f) {
  EngineOptions o;
  o.kv_blocks = f.kv_blocks;
  o.n_ctx = f.n_ctx;
  o.n_threads = f.n_threads;
  o.kv_commit = f.kv_lazy ? KvCommit::kOnWrite : KvCommit::kAtStart;
  if (f.n_ctx < 0) return invalid_argument("--ctx must be positive");
  if (!f.kv_budget.empty()) {
    KV_ASSIGN_OR_RETURN(o.kv_bytes, parse_byte_size(f.kv_budget));
  }
  KV_ASSIGN_OR_RETURN(const KvTypes t, kv_types_from_flags(f.kv_types));
  o.kv_type_k = t.k;
  o.kv_type_v = t.v;
  o.block_size = block_size_or_default(f.block_size, t);
  KV_ASSIGN_OR_RETURN(o.kv_policy, kv_policy_from_flags(f.policy));
  return o;
}

Result<std::string> cache_dir() {
  std::string base;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) {
    base = x;
  } else if (const char* h = std::getenv("HOME"); h && *h) {
    base = std::string(h) + "/.cache";
  } else {
    base = "/tmp";
  }
  const std::string dir = base + "/kvserve";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return io_error("cannot create cache directory " + dir + ": " + ec.message());
  return dir;
}

Result<std::string> demo_model_path() {
  KV_ASSIGN_OR_RETURN(std::string dir, cache_dir());
  const std::string path = dir + "/demo-" + kDemoPreset + "-" + dtype_name(kDemoDType) + "-s" +
                           std::to_string(kDemoSeed) + ".gguf";
  if (!std::filesystem::exists(path)) {
    std::fprintf(stderr,
                 "kvserve: writing the built-in demo model (%s, %s, random weights) to %s\n",
                 kDemoPreset, dtype_name(kDemoDType), path.c_str());
    // Write to a temporary name, then rename, so an interrupted run leaves no half file.
    const std::string tmp = path + ".tmp." + std::to_string(getpid());
    SynthOptions so;
    so.preset = kDemoPreset;
    so.dtype = kDemoDType;
    so.out_path = tmp;
    so.seed = kDemoSeed;
    Status st = write_synth_model(so);
    if (!st.is_ok()) {
      std::remove(tmp.c_str());
      return st;
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) return io_error("cannot move the demo model into place: " + ec.message());
  }
  return path;
}

Result<std::unique_ptr<Model>> load_model_from_flags(const ModelFlags& f) {
  std::string path = f.model_path;
  if (path.empty()) {
    KV_ASSIGN_OR_RETURN(path, demo_model_path());
    std::fprintf(stderr, "kvserve: no -m given; using the built-in demo model %s\n", path.c_str());
  }
  LoadOptions lo;
  lo.tokenizer_path = f.tokenizer_path;
  return load_model(path, lo);
}

void add_prefix_flags(CLI::App& app, PrefixFlags& f) {
  app.add_option("--prefix-cache", f.prefix_cache, "share KV blocks across requests: on or off")
      ->capture_default_str();
  app.add_option("--hash", f.hash, "prefix-cache key hash: xxh3 or sha256")->capture_default_str();
}

Status apply_prefix_flags(const PrefixFlags& f, EngineOptions& o) {
  if (f.prefix_cache != "on" && f.prefix_cache != "off") {
    return invalid_argument("--prefix-cache must be on or off, got '" + f.prefix_cache + "'");
  }
  o.prefix_cache = f.prefix_cache == "on";
  auto h = hash_kind_from_name(f.hash);
  if (!h) return invalid_argument("--hash must be xxh3 or sha256, got '" + f.hash + "'");
  o.hash = *h;
  return Status::ok();
}

void add_bench_model_flags(CLI::App& app, BenchModelFlags& f, const char* preset_help) {
  add_model_flags(app, f);
  app.add_option("--preset", f.preset, preset_help)->capture_default_str();
  app.add_option("--dtype", f.dtype, "synth weight type")->capture_default_str();
}

Result<std::string> bench_model_path(const BenchModelFlags& f) {
  if (!f.model_path.empty()) return f.model_path;
  auto dt = dtype_from_name(f.dtype);
  if (!dt) return invalid_argument("bad --dtype '" + f.dtype + "'");
  return synth_preset_path(f.preset, *dt);
}

bench::ModelLoader bench_model_loader(const BenchModelFlags& f) {
  return [f]() -> Result<std::unique_ptr<Model>> {
    KV_ASSIGN_OR_RETURN(const std::string path, bench_model_path(f));
    LoadOptions lo;
    lo.tokenizer_path = f.tokenizer_path;
    return load_model(path, lo);
  };
}

Result<std::string> synth_preset_path(const std::string& preset, DType dtype) {
  KV_ASSIGN_OR_RETURN(std::string dir, cache_dir());
  const std::string path = dir + "/synth-" + preset + "-" + dtype_name(dtype) + "-s0.gguf";
  if (std::filesystem::exists(path)) return path;
  std::fprintf(stderr, "kvserve: writing synth model %s\n", path.c_str());
  SynthOptions so;
  so.preset = preset;
  so.dtype = dtype;
  so.out_path = path + ".tmp." + std::to_string(getpid());
  Status st = write_synth_model(so);
  if (!st.is_ok()) {
    std::remove(so.out_path.c_str());
    return st;
  }
  std::error_code ec;
  std::filesystem::rename(so.out_path, path, ec);
  if (ec) return io_error("cannot rename " + so.out_path + ": " + ec.message());
  return path;
}

int report(const Status& st) {
  std::fprintf(stderr, "kvserve: error: %s\n", st.to_string().c_str());
  switch (st.code()) {
    case StatusCode::kInvalidArgument:
      return 2;
    default:
      return 1;
  }
}

Result<std::vector<int>> parse_positive_ints(const std::string& text, const char* flag) {
  std::vector<int> v;
  for (const std::string& item : split_list(text)) {
    size_t used = 0;
    int x = 0;
    try {
      x = std::stoi(item, &used);
    } catch (...) {
      used = 0;
    }
    if (used != item.size() || x <= 0) {
      return invalid_argument(std::string(flag) + ": '" + item + "' is not a positive integer");
    }
    v.push_back(x);
  }
  if (v.empty()) return invalid_argument(std::string(flag) + " is empty");
  return v;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> v;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) v.push_back(item);
  }
  return v;
}

}  // namespace kvserve::cli
