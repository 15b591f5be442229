// FullKvPolicy: every position stays cached (the default); no per-sequence state.
#pragma once

#include "kv/kv_policy_impl.h"

namespace kvserve {

class FullKvPolicy final : public KvPolicyImpl {
 public:
  const KvPolicy& config() const override { return config_; }
  Status enforce(SeqId, BlockTable&, int, KvBlockOps&) override { return Status::ok(); }

 private:
  KvPolicy config_ = FullKv{};
};

}  // namespace kvserve
