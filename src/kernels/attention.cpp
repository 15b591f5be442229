#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/attention_impl.h"

namespace kvserve::kernels {

namespace {

// Contexts are cut into partitions of this many positions; each (query, partition) is one task,
// all kv heads together (or, with few queries, one task per kv head, so every thread has work),
// and partitions are merged in order afterwards. The cut depends only on the context length,
// never on the thread count, so results are the same however the work is spread.
constexpr int kPartition = 256;

struct Task {
  int seq;         // index into seqs
  int i;           // query index within the chunk
  int g0, g1;      // kv heads [g0, g1)
  int begin, end;  // slots [begin, end), within one partition
  bool sink;       // scored with q_sink
  bool first;      // the first task of its (seq, i, g0)
};

// Per-task partial results: m (max score) and l (sum of exp) per query head, and the
// unnormalised output o = sum exp(s - m) * v; e keeps exp(s - m) itself for H2O. A task fills
// the entries of its own heads.
struct Partials {
  std::vector<float> m, l;  // [n_tasks][n_head]
  std::vector<float> o;     // [n_tasks][n_head][hd]
  std::vector<float> e;     // [n_tasks][n_head][kPartition] when some sequence wants scores
};

// Appends the tasks of one query and kv heads [g0, g1): slot ranges cut at multiples of
// kPartition. The cut depends only on the slot p and the window, so decode and recomputation
// agree.
void add_tasks(std::vector<Task>& tasks, int seq, int i, int g0, int g1, int p,
               const AttentionWindow& w) {
  bool first = true;
  auto add_range = [&](int begin, int end, bool sink) {
    for (int b = begin; b < end;) {
      const int e = std::min(end, (b / kPartition + 1) * kPartition);
      tasks.push_back({seq, i, g0, g1, b, e, sink, first});
      first = false;
      b = e;
    }
  };
  const int lo = w.window > 0 ? std::max(0, p - w.window + 1) : 0;
  if (lo > w.sink && w.sink > 0) add_range(0, w.sink, true);
  add_range(lo <= w.sink ? 0 : lo, p + 1, false);
}

// Prefetching. A thread reads a stream of short runs scattered over the cache (a run: the rows
// of one task and one kv head that lie in one block, i.e. part of one tile): its task's K runs,
// block by block and every kv head of a block in turn (adjacent tiles), then its V runs, then
// the next task's K runs. While it reads run i, the tile function prefetches the start of the
// run kAheadBlocks blocks later, a little at a time. Software prefetches each hold one of the
// core's few line-fill buffers until memory answers, which caps a core at about 9 GB/s here;
// the L2 streamer has no such cap but needs a run to have started. So only the first
// kPrefetchCap bytes of a run are prefetched and the streamer fetches the rest (half of an f16
// 2 KiB tile; the measurements behind the cap are in docs/benchmarks.md, "Attention and the
// line-fill buffers").
constexpr int kAheadBlocks = 2;
constexpr size_t kPrefetchCap = 1024;

// A run's rows in memory, and where its positions go in the task's scores.
struct Run {
  const uint8_t* rows;    // the first row
  const uint8_t* header;  // q4 K: the tile's header
  KvType type;            // as stored (a q4 K block not full yet reads as f16 staging)
  size_t bytes;           // len rows
  int at;                 // index of the first position within the task
  int len;
  int g;  // kv head

  AttnPrefetch range() const { return {rows, bytes}; }
  AttnPrefetch start() const { return {rows, std::min(bytes, kPrefetchCap)}; }
};

// Appends the K or V runs of a task: its positions cut at block boundaries, each block's kv
// heads in turn (their tiles are adjacent in memory). max_runs bounds how many (of the next
// task, only the first few are prefetched).
void add_runs(std::vector<Run>& runs, const KvStorage& kv, int layer, const AttentionSeq& s,
              const Task& k, KvRole role, int max_runs = 1 << 30) {
  const int bs = kv.layout().block_size;
  int c = 0;
  for (int t = k.begin; t < k.end;) {
    const int off = t % bs, len = std::min(bs - off, k.end - t);
    const BlockId b = s.table->blocks[t / bs];
    for (int g = k.g0; g < k.g1; ++g, ++c) {
      if (c == max_runs) return;
      const KvTileView v = role == KvRole::kK ? kv.k_view(layer, b, g) : kv.v_view(layer, b, g);
      runs.push_back(
          {v.rows + off * v.stride, v.header, v.type, len * v.stride, t - k.begin, len, g});
    }
    t += len;
  }
}

// A task's fixed work (its runs' set-up, the softmax per head, the output), in positions, per
// kv head.
constexpr int kTaskCost = 8;
// Fewer queries than this per thread: one task per kv head (see attention_paged).
constexpr int kMinQueriesPerThread = 4;

thread_local std::vector<float> t_scores;  // [n_head][kPartition]
thread_local std::vector<int64_t> t_cost;  // [n_tasks + 1] summed task costs
thread_local std::vector<Run> t_runs;      // this task's K runs, V runs, the next task's first

// One task: partial attention of the query heads of kv heads [k.g0, k.g1) over slots
// [k.begin, k.end); query head h reads kv head h / n_gqa. m_out, l_out, o_out, e_out: the
// query's entries for every head, of which the task writes its own. next / next_seq: the task this
// thread runs next (or nullptr), whose first runs are prefetched at the end of this one; warm:
// nothing has prefetched this task's start.
void attend_partition(const AttnTileFns& fns, const float* q, const AttentionSeq& s, const Task& k,
                      const Task* next, const AttentionSeq* next_seq, bool warm,
                      const KvStorage& kv, int layer, int n_head, float scale, float* m_out,
                      float* l_out, float* o_out, float* e_out) {
  const KvLayout& L = kv.layout();
  const int hd = L.head_dim, n_gqa = n_head / L.n_head_kv;
  const int n = k.end - k.begin;
  std::vector<float>& sc = t_scores;
  sc.resize(static_cast<size_t>(n_head) * kPartition);
  const int h0 = k.g0 * n_gqa, h1 = k.g1 * n_gqa;  // the task's query heads
  // The query's heads: [n_head][hd]; kv head g's n_gqa heads start at qr + g * n_gqa * hd.
  const float* qr = q + static_cast<size_t>(s.row0 + k.i) * n_head * hd;
  // The scores and outputs of kv head g's query heads.
  auto sc_of = [&](int g) { return sc.data() + static_cast<size_t>(g) * n_gqa * kPartition; };
  auto o_of = [&](int g) { return o_out + static_cast<size_t>(g) * n_gqa * hd; };

  std::vector<Run>& runs = t_runs;
  runs.clear();
  add_runs(runs, kv, layer, s, k, KvRole::kK);
  const int n_runs = static_cast<int>(runs.size());
  add_runs(runs, kv, layer, s, k, KvRole::kV);
  const int ahead_runs = kAheadBlocks * (k.g1 - k.g0);
  if (next) add_runs(runs, kv, layer, *next_seq, *next, KvRole::kK, ahead_runs);
  auto ahead = [&](int i) {
    const int j = i + ahead_runs;
    return j < static_cast<int>(runs.size()) ? runs[j].start() : AttnPrefetch{};
  };
  if (warm) {
    for (int i = 0; i < ahead_runs && i < static_cast<int>(runs.size()); ++i) {
      prefetch_now(runs[i].range());
    }
  }

  for (int i = 0; i < n_runs; ++i) {
    const Run& r = runs[i];
    fns.scores(qr + static_cast<size_t>(r.g) * n_gqa * hd, n_gqa, r.rows, r.header, r.type, r.len,
               hd, scale, sc_of(r.g) + r.at, kPartition, ahead(i));
  }
  for (int h = h0; h < h1; ++h) {
    float* sh = sc.data() + static_cast<size_t>(h) * kPartition;
    const float m = fns.max(sh, n);
    m_out[h] = m;
    l_out[h] = fns.exp_sum(sh, n, m);
    if (e_out) std::copy(sh, sh + n, e_out + static_cast<size_t>(h) * kPartition);
  }
  std::fill(o_out + static_cast<size_t>(h0) * hd, o_out + static_cast<size_t>(h1) * hd, 0.0f);
  for (int i = n_runs; i < 2 * n_runs; ++i) {
    const Run& r = runs[i];
    fns.accum(sc_of(r.g) + r.at, kPartition, n_gqa, r.rows, r.type, r.len, hd, o_of(r.g), ahead(i));
  }
}

// The tasks of one call: per query, its kv heads in one task (or, with fewer queries than
// kMinQueriesPerThread per thread, one task per kv head, so a lone decode keeps the threads
// busy; each head's arithmetic is the same either way), cut into partitions.
std::vector<Task> make_tasks(const std::vector<AttentionSeq>& seqs, int n_head_kv, int n_threads,
                             const AttentionWindow& win) {
  int n_queries = 0;
  for (const AttentionSeq& s : seqs) n_queries += s.n_q;
  const int group = n_queries >= kMinQueriesPerThread * n_threads ? n_head_kv : 1;
  std::vector<Task> tasks;
  for (int s = 0; s < static_cast<int>(seqs.size()); ++s) {
    for (int i = 0; i < seqs[s].n_q; ++i) {
      for (int g = 0; g < n_head_kv; g += group) {
        add_tasks(tasks, s, i, g, g + group, seqs[s].pos0 + i, win);
      }
    }
  }
  return tasks;
}

// Merges tasks [t0, t1), the partitions of one query's kv heads, into og ([n_head][hd]) in
// partition order: out = sum_p o_p e^(m_p - M) / sum_p l_p e^(m_p - M); with s.scores, adds
// each slot's probability e_t * e^(m_p - M) / denom, slot by slot in task order.
void merge_partitions(const std::vector<Task>& tasks, size_t t0, size_t t1, const AttentionSeq& s,
                      const Partials& part, int n_head, int n_gqa, int hd, float* og) {
  const Task& k = tasks[t0];
  for (int h = k.g0 * n_gqa; h < k.g1 * n_gqa; ++h) {
    float mx = -std::numeric_limits<float>::infinity();
    for (size_t t = t0; t < t1; ++t) mx = std::max(mx, part.m[t * n_head + h]);
    float denom = 0;
    float* oh = og + static_cast<size_t>(h) * hd;
    std::fill(oh, oh + hd, 0.0f);
    for (size_t t = t0; t < t1; ++t) {
      const float w = std::exp(part.m[t * n_head + h] - mx);
      denom += part.l[t * n_head + h] * w;
      const float* o = &part.o[(t * n_head + h) * hd];
      for (int e = 0; e < hd; ++e) oh[e] += o[e] * w;
    }
    const float inv = 1.0f / denom;
    for (int e = 0; e < hd; ++e) oh[e] *= inv;
    if (!s.scores) continue;
    for (size_t t = t0; t < t1; ++t) {
      const float w = std::exp(part.m[t * n_head + h] - mx) * inv;
      const float* e = &part.e[(t * n_head + h) * kPartition];
      for (int j = 0; j < tasks[t].end - tasks[t].begin; ++j)
        s.scores[tasks[t].begin + j] += e[j] * w;
    }
  }
}

}  // namespace

void attention_paged(const float* q, const float* q_sink, const std::vector<AttentionSeq>& seqs,
                     const KvStorage& kv, int layer, int n_head, float scale,
                     const AttentionWindow& win, float* out, ThreadPool& pool) {
  const KvLayout& L = kv.layout();
  const int hd = L.head_dim, n_gqa = n_head / L.n_head_kv;
  const std::vector<Task> tasks = make_tasks(seqs, L.n_head_kv, pool.n_threads(), win);
  const bool want_scores = std::any_of(seqs.begin(), seqs.end(),
                                       [](const AttentionSeq& s) { return s.scores != nullptr; });
  const AttnTileFns& fns = attn_tile_fns(cpu_level(), hd);
  // The calling thread's buffers; workers reach them through this reference (a thread_local
  // named inside the lambda would be each worker's own).
  thread_local Partials t_part;
  Partials& part = t_part;
  const size_t n_tasks = tasks.size();
  part.m.resize(n_tasks * n_head);
  part.l.resize(n_tasks * n_head);
  part.o.resize(n_tasks * n_head * hd);
  if (want_scores) part.e.resize(n_tasks * n_head * kPartition);

  // A (query, kv heads) whose context is one partition needs no merge: its task writes and
  // normalises its output in place, with the merge's operations (w = e^0 = 1), so the result
  // is the same bits. Most decode contexts are a single partition, and the merge is serial.
  auto alone = [&](size_t t) {
    return tasks[t].first && (t + 1 == n_tasks || tasks[t + 1].first) && !seqs[tasks[t].seq].scores;
  };
  auto out_of = [&](const Task& k) {
    return out + static_cast<size_t>(seqs[k.seq].row0 + k.i) * n_head * hd;
  };
  // Tasks differ in cost (contexts differ, causal rows, the last partition is partial): the
  // threads' runs are cut by cost, positions plus a task's fixed work, so a batch whose long
  // contexts sit together does not leave one thread in a long claim while the other waits.
  std::vector<int64_t>& cost = t_cost;
  cost.assign(1, 0);
  for (const Task& k : tasks) {
    cost.push_back(cost.back() + static_cast<int64_t>(k.end - k.begin + kTaskCost) * (k.g1 - k.g0));
  }
  pool.parallel_for_costed(cost, [&](int64_t b, int64_t end) {
    for (int64_t t = b; t < end; ++t) {
      const Task& k = tasks[t];
      const Task* next = t + 1 < end ? &tasks[t + 1] : nullptr;
      float* e = seqs[k.seq].scores ? &part.e[t * n_head * kPartition] : nullptr;
      const bool direct = alone(t);
      float* o = direct ? out_of(k) : &part.o[t * n_head * hd];
      attend_partition(fns, k.sink ? q_sink : q, seqs[k.seq], k, next,
                       next ? &seqs[next->seq] : nullptr, t == b, kv, layer, n_head, scale,
                       &part.m[t * n_head], &part.l[t * n_head], o, e);
      if (!direct) continue;
      for (int h = k.g0 * n_gqa; h < k.g1 * n_gqa; ++h) {
        const float inv = 1.0f / (0.0f + part.l[t * n_head + h]);
        float* oh = o + static_cast<size_t>(h) * hd;
        for (int c = 0; c < hd; ++c) oh[c] = (0.0f + oh[c]) * inv;
      }
    }
  });

  // Merge the partitions of each (query, kv heads); the merge is serial.
  for (size_t t0 = 0; t0 < n_tasks;) {
    size_t t1 = t0 + 1;
    while (t1 < n_tasks && !tasks[t1].first) ++t1;
    if (!alone(t0)) {
      merge_partitions(tasks, t0, t1, seqs[tasks[t0].seq], part, n_head, n_gqa, hd,
                       out_of(tasks[t0]));
    }
    t0 = t1;
  }
}

}  // namespace kvserve::kernels
