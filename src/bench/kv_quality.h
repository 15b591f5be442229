// KV quality benchmark (`kvserve bench kv-quality`): what KV-cache compression costs in quality.
// The text is tokenized, cut into segments, and each segment is scored teacher-forced
// (Generator::score, the decode path generation uses) under every config and under the
// reference, f32 K and V with full KV. Per config:
//   bytes/token   KV bytes per token from the config's layout (scales and headers included)
//   peak KV/seq   the most KV memory one sequence held (blocks used at the peak x block bytes)
//   perplexity    exp(mean NLL of the text's next tokens); change in % against the reference
//   mean KL       mean over scored positions of KL(p_ref || p_config), natural log
//   top-1         fraction of positions whose argmax equals the reference's
// All statistics are accumulated in double from stably log-softmaxed logits.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bench/common.h"
#include "kv/kv_policy.h"
#include "kv/kv_type.h"

namespace kvserve::bench {

// One config of --configs: settings joined by ':' (TYPE, k=TYPE, v=TYPE, window=W, sink=S,
// h2o=R, recent=N, block=B).
struct QualityConfig {
  std::string name;  // the spec as given
  KvType k = KvType::kF16, v = KvType::kF16;
  KvPolicy policy = FullKv{};
  int block_size = kDefaultBlockSize;
};
// block=B, else block_override when > 0, else default_block_size(k, v). Errors start with
// "--configs:" and quote the spec.
Result<QualityConfig> parse_quality_config(const std::string& spec, int block_override);
// f32,f16,bf16,q8,fp8,q4,k=q8:v=q4,window=W,sink=S:window=W-S,h2o=W with S = min(4, W / 2).
std::string default_quality_configs(int window);

struct QualityOptions {
  ModelLoader load_model;  // needs a tokenizer
  std::string text_path;   // UTF-8 text to score
  std::string configs;     // comma-separated; empty: default_quality_configs(window)
  int segment = 0;         // tokens per scored sequence, BOS included; 0: min(context, 512)
  int max_tokens = 0;      // 0: the whole text
  int window = 0;          // 0: max(segment / 4, 2)
  int block_size = 0;      // > 0: for every config without block=B, and the reference
  int n_ctx = 0;           // 0: the model's
  int n_threads = 0;
};

struct QualityRow {
  QualityConfig config;
  double bytes_per_token = 0, vs_f16 = 0;  // vs_f16: against f16 at kDefaultBlockSize
  int peak_blocks = 0;                     // per sequence, max over segments
  double peak_bytes = 0;
  double ppl = 0, ppl_change = 0;  // ppl_change: % against the reference
  double kl = 0, top1 = 0;         // means over the scored positions
  int64_t positions = 0;
  double ms_per_token = 0;
};

struct QualityReport {
  std::string model;  // file name
  int threads = 0;
  int segment = 0;  // tokens per segment (at most)
  int n_segments = 0;
  bool bos = false;       // each segment starts with BOS
  int64_t positions = 0;  // scored
  int window = 0;
  int ref_block_size = 0;
  double ref_ppl = 0;
  std::vector<QualityRow> rows;  // per config; filled at the end
};

// Called once the engines are created (segments_done 0) and after each scored segment.
using QualityProgress = std::function<void(const QualityReport&, int segments_done)>;
Result<QualityReport> run_kv_quality(const QualityOptions& o, const QualityProgress& progress = {});

}  // namespace kvserve::bench
