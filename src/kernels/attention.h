// Attention over the paged KV cache: queries read K and V through each sequence's block table.
// Covers decode (one query over every cached token) and chunked prefill (a chunk of causal
// queries over the cached tokens plus the chunk itself), grouped-query aware: query head h reads
// kv head h / (n_head / n_head_kv).
//
// Determinism: the output for a query at position p depends only on q and K/V of positions
// [0, p], computed in a fixed order, so decode and full recomputation agree bitwise.
#pragma once

#include <vector>

#include "core/thread_pool.h"
#include "kv/block_table.h"
#include "kv/kv_storage.h"

namespace kvserve::kernels {

struct AttentionSeq {
  const BlockTable* table;  // K/V of positions [0, pos0 + n_q) already written
  int pos0;                 // position of the first query
  int n_q;                  // queries in this chunk
  int row0;                 // index of the first query's row in q / out
};

// q, out: [n_rows][n_head][head_dim] f32 (rows of all sequences, contiguous per sequence).
void attention_paged(const float* q, const std::vector<AttentionSeq>& seqs, const KvStorage& kv,
                     int layer, int n_head, float scale, float* out, ThreadPool& pool);

}  // namespace kvserve::kernels
