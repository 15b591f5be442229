// KvPolicy: how much of a sequence's KV cache attention keeps, so memory can be bounded
// whatever the sequence length. Variants as types:
//   FullKv         every position (the default).
//   WindowKv       the last `window` positions (sliding-window attention, Mistral style), plus,
//                  with sink > 0, the first `sink` positions (attention sinks, StreamingLLM).
//                  Blocks wholly outside both are freed as the sequence moves on.
//   HeavyHitterKv  H2O: at most `keep` tokens, the `recent` newest plus those with the largest
//                  attention accumulated so far; the others are evicted after each step.
// This is the configuration, a value copied into options; the behaviour (what enforce_policy()
// releases or evicts, and the per-sequence state it needs) is in kv/kv_policy_impl.h.
#pragma once

#include <string>
#include <variant>

#include "core/status.h"

namespace kvserve {

struct FullKv {};

struct WindowKv {
  int window = 0;  // > 0: positions (p - window, p] are attended by the query at p
  int sink = 0;    // >= 0: positions [0, sink) are attended too
};

struct HeavyHitterKv {
  int keep = 0;    // > 0: tokens kept per sequence (heavy hitters + recent)
  int recent = 0;  // in [0, keep]: newest tokens always kept
};

using KvPolicy = std::variant<FullKv, WindowKv, HeavyHitterKv>;

// Checks the numbers of a policy ("--swa must be positive", ...).
Status validate_kv_policy(const KvPolicy& p);
// "full", "window 256", "sink 4 + window 252", "h2o keep 256 (recent 64)".
std::string kv_policy_name(const KvPolicy& p);
// True when memory per sequence is bounded independently of its length.
inline bool kv_policy_bounded(const KvPolicy& p) {
  return !std::holds_alternative<FullKv>(p);
}
// Under a bounded policy: the most blocks one sequence holds while computing a chunk of `chunk`
// tokens (sinks + window + chunk, or keep + chunk, rounded out to blocks). 0 for FullKv.
int kv_policy_max_blocks(const KvPolicy& p, int block_size, int chunk);
// The prefill chunk a policy allows: at most the window (or keep), so a long prompt never holds
// more than about twice the bound.
int kv_policy_chunk(const KvPolicy& p, int block_size, int chunk);
// Blocks one sequence of n_tokens holds at most when computed in chunks of up to `chunk` tokens:
// all of its blocks under FullKv, else no more than the policy's bound.
int kv_policy_seq_blocks(const KvPolicy& p, int block_size, int chunk, int n_tokens);

// Window geometry, in blocks: the blocks holding the sinks, and the first block the window of
// a query at position `pos` reaches (queries after it reach no earlier block).
inline int window_sink_blocks(const WindowKv& w, int block_size) {
  return (w.sink + block_size - 1) / block_size;
}
inline int window_first_block(const WindowKv& w, int pos, int block_size) {
  const int lo = pos - w.window + 1;
  return (lo > 0 ? lo : 0) / block_size;
}

}  // namespace kvserve
