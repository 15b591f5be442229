// WindowKvPolicy: sliding-window attention with optional attention sinks. A query at position p
// sees [0, sink) and (p - window, p]; once a sequence has computed n_pos positions, no later
// query sees a block wholly between the sink blocks and the window's first block, so enforce()
// releases it (its table entry becomes kNoBlock). Needs no per-sequence state: the table and
// n_pos say everything.
#pragma once

#include <cstdint>

#include "kv/kv_policy_impl.h"

namespace kvserve {

class WindowKvPolicy final : public KvPolicyImpl {
 public:
  explicit WindowKvPolicy(const WindowKv& w) : window_(w), config_(w) {}

  const KvPolicy& config() const override { return config_; }
  const WindowKv* match_window() const override { return &window_; }
  Status enforce(SeqId seq, BlockTable& table, int n_pos, KvBlockOps& ops) override;
  void add_stats(KvCacheStats& st) const override;

 private:
  WindowKv window_;
  KvPolicy config_;
  int64_t n_released_ = 0;  // blocks released for leaving the window, engine-wide
};

}  // namespace kvserve
