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
  const BlockTable* table;  // K/V of slots [0, pos0 + n_q) already written
  int pos0;                 // slot of the first query (its position unless H2O compacted)
  int n_q;                  // queries in this chunk
  int row0;                 // index of the first query's row in q / out
  // H2O: scores[t] += attention probability of slot t, summed over query heads and queries
  // (in a fixed order). nullptr: not wanted.
  float* scores = nullptr;
};

// What a query at slot p sees: window 0 = every slot [0, p]; else [p - window + 1, p] plus the
// sink slots [0, sink). Sink slots beyond the window are scored with q_sink (the query rotated
// for its StreamingLLM cache position, see ModelRunner), the rest with q.
struct AttentionWindow {
  int window = 0;
  int sink = 0;
};

// q, q_sink, out: [n_rows][n_head][head_dim] f32 (rows of all sequences, contiguous per
// sequence). q_sink may be null when win.sink == 0.
void attention_paged(const float* q, const float* q_sink, const std::vector<AttentionSeq>& seqs,
                     const KvStorage& kv, int layer, int n_head, float scale,
                     const AttentionWindow& win, float* out, ThreadPool& pool);

}  // namespace kvserve::kernels
