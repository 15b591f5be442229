#include "kv/kv_policy.h"

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
