// A KvBlockOps that records what a policy does, with a fake storage of one value per
// (block, slot), so policy implementations are tested without a pool or memory.
#pragma once

#include <map>
#include <set>
#include <span>
#include <utility>
#include <vector>

#include "kv/kv_policy_impl.h"

namespace kvserve::test {

class FakeBlockOps final : public KvBlockOps {
 public:
  explicit FakeBlockOps(int block_size) : bs_(block_size) {}

  int block_size() const override { return bs_; }
  bool is_private(BlockId id) const override { return shared.count(id) == 0; }
  Status copy_on_write(BlockTable& table, std::span<const int> logical) override {
    if (fail_copies) return out_of_memory("fake: no blocks");
    for (int b : logical) {
      const BlockId fresh = next_id++;
      for (int s = 0; s < bs_; ++s) {
        auto it = rows.find({table.blocks[b], s});
        if (it != rows.end()) rows[{fresh, s}] = it->second;
      }
      copied.push_back(table.blocks[b]);
      table.blocks[b] = fresh;
    }
    return Status::ok();
  }
  void release(BlockId id) override { released.push_back(id); }
  void copy_token(BlockId src, int src_slot, BlockId dst, int dst_slot) override {
    rows[{dst, dst_slot}] = rows.at({src, src_slot});
  }

  // A table of n_slots slots in consecutive block ids from `first`, slot i holding value i.
  BlockTable table_with(int n_slots, BlockId first) {
    BlockTable t;
    for (int b = 0; b < blocks_for_tokens(n_slots, bs_); ++b) t.blocks.push_back(first + b);
    t.n_tokens = n_slots;
    for (int i = 0; i < n_slots; ++i) rows[{t.blocks[i / bs_], i % bs_}] = i;
    return t;
  }
  int value_at(const BlockTable& t, int slot) const {
    return rows.at({t.blocks[slot / bs_], slot % bs_});
  }

  std::set<BlockId> shared;                     // blocks that are not private (shared or keyed)
  bool fail_copies = false;                     // copy_on_write fails with out_of_memory
  std::vector<BlockId> released;                // in release order
  std::vector<BlockId> copied;                  // originals replaced by copy_on_write
  std::map<std::pair<BlockId, int>, int> rows;  // (block, slot) -> the value stored there
  BlockId next_id = 1000;

 private:
  int bs_;
};

}  // namespace kvserve::test
