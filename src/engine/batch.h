// A forward batch: chunks of tokens from one or more sequences, computed in one pass over the
// weights. The token rows of each sequence are contiguous, in the order of `seqs`.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/block_table.h"

namespace kvserve {

struct BatchSeq {
  const BlockTable* table = nullptr;  // covers positions [0, pos0 + n_tokens)
  int pos0 = 0;                       // position of the chunk's first token
  int n_tokens = 0;
  bool logits_all = false;            // logits for every token of the chunk, else the last only
};

struct Batch {
  std::vector<int32_t> tokens;  // [n_rows]
  std::vector<BatchSeq> seqs;

  void add(const BlockTable* table, int pos0, const int32_t* toks, int n, bool logits_all = false) {
    seqs.push_back({table, pos0, n, logits_all});
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
