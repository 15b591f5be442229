// A forward batch: chunks of tokens from one or more sequences, computed in one pass over the
// weights. The token rows of each sequence are contiguous, in the order of `seqs`.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/block_table.h"

namespace kvserve {

struct BatchSeq {
  const BlockTable* table = nullptr;  // covers slots [0, slot0 + n_tokens)
  int pos0 = 0;                       // position of the chunk's first token (RoPE)
  int n_tokens = 0;
  bool logits_all = false;       // logits for every token of the chunk, else the last only
  int slot0 = 0;                 // its cache slot: == pos0 unless H2O has evicted tokens
  float* attn_scores = nullptr;  // H2O: per-slot attention to accumulate into, or null
};

struct Batch {
  std::vector<int32_t> tokens;  // [n_rows]
  std::vector<BatchSeq> seqs;

  // slot0 < 0: the chunk's slots are its positions.
  void add(const BlockTable* table, int pos0, const int32_t* toks, int n, bool logits_all = false,
           int slot0 = -1, float* attn_scores = nullptr) {
    seqs.push_back({table, pos0, n, logits_all, slot0 < 0 ? pos0 : slot0, attn_scores});
    tokens.insert(tokens.end(), toks, toks + n);
  }
  int n_rows() const { return static_cast<int>(tokens.size()); }
  // Rows of logits forward() returns.
  int n_outputs() const {
    int n = 0;
    for (const auto& s : seqs) n += s.logits_all ? s.n_tokens : 1;
    return n;
  }
};

}  // namespace kvserve
