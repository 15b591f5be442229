// Shared pieces of the kvserve subcommands: model resolution (with the embedded demo model),
// engine options from flags, and error reporting.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/common.h"
#include "core/status.h"
#include "engine/generator.h"
#include "kv/kv_type.h"
#include "model/model.h"

namespace kvserve::cli {

// Flags every command that runs the model shares.
struct ModelFlags {
  std::string model_path;  // empty: the demo model
  std::string tokenizer_path;
};
void add_model_flags(CLI::App& app, ModelFlags& f);

// The KV flags, each declared once here and shared by every command that takes it.
// --kv-type T (K and V), and where a command sets them apart, --kv-type-k / --kv-type-v.
struct KvTypeFlags {
  std::string kv_type = "f16";       // both K and V
  std::string kv_type_k, kv_type_v;  // override kv_type for K or V when set
};
void add_kv_type_flags(CLI::App& app, KvTypeFlags& f, bool k_and_v_apart = true);
// A KV type named by `flag` (--kv-type, ...); an unknown name's error lists the types.
Result<KvType> parse_kv_type_flag(const char* flag, const std::string& name);
struct KvTypes {
  KvType k = KvType::kF16, v = KvType::kF16;
};
// The K and V types the flags name; errors name the flag ("--kv-type must be one of ...").
Result<KvTypes> kv_types_from_flags(const KvTypeFlags& f);

// --block-size B; unset: default_block_size() of the KV types (kv/kv_type.h).
void add_block_size_flag(CLI::App& app, std::optional<int>& block_size);
inline int block_size_or_default(const std::optional<int>& block_size, KvTypes t) {
  return block_size ? *block_size : default_block_size(t.k, t.v);
}

// Bounded KV (kv/kv_policy.h): --swa W, or --kv-sink S --kv-window W, or
// --kv-evict h2o --kv-keep R [--kv-recent N].
struct KvPolicyFlags {
  int swa = 0, kv_sink = 0, kv_window = 0, kv_keep = 0, kv_recent = -1;
  std::string kv_evict = "none";
};
void add_kv_policy_flags(CLI::App& app, KvPolicyFlags& f);
// The bounded-KV policy the flags ask for (FullKv when none); errors name the flag.
Result<KvPolicy> kv_policy_from_flags(const KvPolicyFlags& f);

struct EngineFlags {
  std::optional<int> block_size;
  std::string kv_budget;  // "512MiB"
  bool kv_lazy = false;   // --kv-lazy: KvCommit::kOnWrite
  int kv_blocks = 0;
  KvTypeFlags kv_types;
  KvPolicyFlags policy;
  int n_ctx = 0;
  int n_threads = 0;
};
// The KV, policy, context and thread flags of the commands that run the engine (generate, serve).
void add_engine_flags(CLI::App& app, EngineFlags& f);
// EngineOptions from the flags: block size as asked or the KV types' default; errors name the
// flag. Combinations the kernels cannot do are refused later, when the engine is created.
Result<EngineOptions> engine_options(const EngineFlags& f);

// The demo model's path: a synth model written deterministically on first use under
// $XDG_CACHE_HOME/kvserve (or ~/.cache/kvserve). Prints a note to stderr when it is used.
Result<std::string> demo_model_path();
// Loads -m, or the demo model when none is given (and says so on stderr).
Result<std::unique_ptr<Model>> load_model_from_flags(const ModelFlags& f);

// Cache directory for generated files (demo model, bench presets); created if missing.
Result<std::string> cache_dir();

// Prefix-cache controls shared by generate and bench prefix: --prefix-cache on|off, --hash.
struct PrefixFlags {
  std::string prefix_cache = "on";
  std::string hash = "xxh3";
};
void add_prefix_flags(CLI::App& app, PrefixFlags& f);
Status apply_prefix_flags(const PrefixFlags& f, EngineOptions& o);

// A synth preset model cached under cache_dir() (synth-PRESET-DTYPE-s0.gguf), written once.
Result<std::string> synth_preset_path(const std::string& preset, DType dtype);
// The benchmarks' model: -m when given, else a synth preset (--preset, --dtype).
struct BenchModelFlags : ModelFlags {
  std::string preset = "smollm-135m";
  std::string dtype = "q8_0";
};
void add_bench_model_flags(CLI::App& app, BenchModelFlags& f,
                           const char* preset_help = "synth preset (when no -m)");
// -m, else the preset's cached synth model (written on first use).
Result<std::string> bench_model_path(const BenchModelFlags& f);
// Loads bench_model_path(f) (with --tokenizer) when a benchmark asks for its model.
bench::ModelLoader bench_model_loader(const BenchModelFlags& f);

// -t,--threads: 0 (one per core) up to kMaxThreads; more is refused by the parser, as creating
// them would fail (std::system_error) part-way through building a thread pool.
constexpr int kMaxThreads = 1024;
void add_threads_option(CLI::App& app, int& n_threads);

// "1,4,16" -> {1, 4, 16}; invalid_argument naming `flag` for anything not a positive integer.
Result<std::vector<int>> parse_positive_ints(const std::string& text, const char* flag);
// "a,b,,c" -> {"a", "b", "c"}.
std::vector<std::string> split_list(const std::string& text);

// Prints "kvserve: error: ..." to stderr and returns the exit code for the status.
int report(const Status& st);

// Subcommands: each registers itself and returns the exit code through *rc when run.
void register_generate(CLI::App& app, int* rc);
void register_kv_size(CLI::App& app, int* rc);
void register_synth(CLI::App& app, int* rc);
void register_inspect(CLI::App& app, int* rc);
void register_bench(CLI::App& app, int* rc);
void register_bench_prefix(CLI::App* bench, int* rc);  // `kvserve bench prefix`
void register_serve(CLI::App& app, int* rc);
void register_bench_serve(CLI::App* bench, int* rc);       // `kvserve bench serve`
void register_bench_kv_quality(CLI::App* bench, int* rc);  // `kvserve bench kv-quality`
void register_bench_batch(CLI::App* bench, int* rc);       // `kvserve bench batch`
void register_bench_attention(CLI::App* bench, int* rc);   // `kvserve bench attention`

}  // namespace kvserve::cli
