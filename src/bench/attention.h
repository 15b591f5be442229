// Attention benchmark (`kvserve bench attention`): the paged attention kernel alone, outside the
// model: one decode query per sequence over every layer of a preset's shape, K/V in blocks at
// shuffled places as a long-running cache leaves them. Reports the time per step (all layers)
// and the K/V bytes read per second, so a change to attention can be measured without the
// matmuls around it, and its rate compared with the machine's read bandwidth (`bench decode`
// measures that).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "kv/kv_type.h"

namespace kvserve::bench {

struct AttentionOptions {
  std::string preset = "smollm-135m";  // the shape: layers, heads, kv heads, head size
  std::vector<int> seqs = {1, 16};     // sequences per step
  std::vector<int> contexts = {320};   // tokens of context per sequence
  bool mixed = false;                  // contexts spread over [8, 2 * context], longest first
  KvType kv_type = KvType::kF16;       // K and V
  int block_size = kDefaultBlockSize;
  bool ordered = false;  // each sequence's blocks adjacent and in order
  int n_threads = 0;
  int repeat = 20;  // timed steps per point
};

struct AttentionRow {
  int seqs = 0;
  int context = 0;      // the mean
  double ms = 0;        // median step (every layer)
  double min_ms = 0;    // fastest step
  double mb = 0;        // K/V bytes read per step
  double gb_per_s = 0;  // mb / ms
};

struct AttentionReport {
  int n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0;  // the preset's shape
  int threads = 0;
  std::vector<AttentionRow> rows;  // per context, per sequence count
};

// The contexts of n sequences: all `ctx`, or (mixed) spread evenly over [8, 2 * ctx], longest
// first: a serving batch keeps its sequences in the order they were admitted, so the oldest,
// with the longest contexts, come first.
std::vector<int> contexts_of(int n, int ctx, bool mixed);

// Called once the shape and pool are set up (no rows yet) and after each row.
using AttentionProgress = std::function<void(const AttentionReport&)>;
// invalid_argument for block_size < 1, repeat < 1 or an unknown preset.
Result<AttentionReport> run_attention(const AttentionOptions& o,
                                      const AttentionProgress& progress = {});

}  // namespace kvserve::bench
