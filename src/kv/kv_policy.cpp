#include "kv/kv_policy.h"

#include <algorithm>

namespace kvserve {

Status validate_kv_policy(const KvPolicy& p) {
  if (const auto* w = std::get_if<WindowKv>(&p)) {
    if (w->window < 1) return invalid_argument("the attention window must be positive");
    if (w->sink < 0) return invalid_argument("the number of sink tokens must be >= 0");
  } else if (const auto* h = std::get_if<HeavyHitterKv>(&p)) {
    if (h->keep < 1) return invalid_argument("--kv-keep must be positive");
    if (h->recent < 0 || h->recent > h->keep) {
      return invalid_argument("the H2O recent window must be in [0, keep]");
    }
  }
  return Status::ok();
}

int kv_policy_max_blocks(const KvPolicy& p, int bs, int chunk) {
  auto blocks = [bs](int n) { return (n + bs - 1) / bs; };
  if (const auto* w = std::get_if<WindowKv>(&p)) {
    // Sinks, plus positions [n - window + 1, n + chunk), which straddle one more block.
    return blocks(w->sink) + blocks(w->window - 1 + chunk) + 1;
  }
  if (const auto* h = std::get_if<HeavyHitterKv>(&p)) {
    // keep + chunk slots, plus as many copies again for copy-on-write of shared blocks.
    return 2 * blocks(h->keep + chunk) + 1;
  }
  return 0;
}

int kv_policy_chunk(const KvPolicy& p, int bs, int chunk) {
  int bound = 0;
  if (const auto* w = std::get_if<WindowKv>(&p)) bound = w->window;
  if (const auto* h = std::get_if<HeavyHitterKv>(&p)) bound = h->keep;
  return bound > 0 ? std::min(chunk, std::max(bound, bs)) : chunk;
}

int kv_policy_seq_blocks(const KvPolicy& p, int bs, int chunk, int n_tokens) {
  const int all = (n_tokens + bs - 1) / bs;
  if (!kv_policy_bounded(p)) return all;
  return std::min(all, kv_policy_max_blocks(p, bs, kv_policy_chunk(p, bs, chunk)));
}

std::string kv_policy_name(const KvPolicy& p) {
  if (const auto* w = std::get_if<WindowKv>(&p)) {
    std::string s = "window " + std::to_string(w->window);
    return w->sink > 0 ? "sink " + std::to_string(w->sink) + " + " + s : s;
  }
  if (const auto* h = std::get_if<HeavyHitterKv>(&p)) {
    return "h2o keep " + std::to_string(h->keep) + " (recent " + std::to_string(h->recent) + ")";
  }
  return "full";
}

}  // namespace kvserve
