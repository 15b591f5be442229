#include "bench/batch.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "core/thread_pool.h"
#include "engine/batch.h"
#include "engine/generator.h"
#include "engine/k_smoothing.h"
#include "engine/model_runner.h"
#include "engine/sampler.h"
#include "kernels/reduce.h"

namespace kvserve::bench {

namespace {

// b sequences: each prefills `context` random tokens and appends its first greedy token.
Status prefill_all(const Model& m, const BatchOptions& o, int b, KvCacheManager& kv,
                   ModelRunner& runner, std::vector<std::vector<int32_t>>& tokens) {
  Rng rng(4242);
  std::vector<float> logits;
  const int n_vocab = m.config.n_vocab;
  tokens.assign(b, {});
  for (int s = 0; s < b; ++s) {
    for (int i = 0; i < o.context; ++i)
      tokens[s].push_back(3 + static_cast<int32_t>(rng.next() % (n_vocab - 3)));
    KV_RETURN_IF_ERROR(kv.add_sequence(s));
    KV_RETURN_IF_ERROR(kv.reserve(s, o.context));
    Batch one;
    one.add(&kv.table(s), 0, tokens[s].data(), o.context);
    runner.forward(one, logits);
    kv.commit(s, o.context);
    tokens[s].push_back(kernels::argmax(logits.data(), n_vocab));
  }
  return Status::ok();
}

// One decode step of every sequence (its last token in, the greedy next one appended); the
// forward pass's ms.
Result<double> decode_step(const Model& m, KvCacheManager& kv, ModelRunner& runner,
                           std::vector<std::vector<int32_t>>& tokens, std::vector<float>& logits) {
  const int b = static_cast<int>(tokens.size());
  const size_t n_vocab = m.config.n_vocab;
  Batch batch;
  for (int s = 0; s < b; ++s) {
    const int pos = static_cast<int>(tokens[s].size()) - 1;
    KV_RETURN_IF_ERROR(kv.reserve(s, pos + 1));
    batch.add(&kv.table(s), pos, tokens[s].data() + pos, 1);
  }
  const auto t0 = std::chrono::steady_clock::now();
  runner.forward(batch, logits);
  const auto t1 = std::chrono::steady_clock::now();
  for (int s = 0; s < b; ++s) {
    kv.commit(s, static_cast<int>(tokens[s].size()));
    tokens[s].push_back(kernels::argmax(logits.data() + s * n_vocab, static_cast<int>(n_vocab)));
  }
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

Result<BatchRow> measure_batch(const Model& m, const BatchOptions& o, int b) {
  const int n_ctx = o.context + o.warmup + o.steps + 1;
  EngineOptions eo;
  eo.kv_type_k = eo.kv_type_v = o.kv_type;
  eo.block_size = default_block_size(o.kv_type, o.kv_type);
  eo.n_threads = o.n_threads;
  eo.n_ctx = n_ctx;
  eo.prefix_cache = false;
  eo.kv_blocks = b * ((n_ctx + eo.block_size - 1) / eo.block_size + 1);
  KV_ASSIGN_OR_RETURN(auto kv, make_kv_cache(m, eo, n_ctx, b));
  ThreadPool pool(o.n_threads);
  ModelRunner runner(m, kv->storage(), pool, kv->policy(),
                     k_smoothing_for(m, kv->layout(), kv->policy()));
  std::vector<std::vector<int32_t>> tokens;  // per sequence: its prompt, then its tokens
  KV_RETURN_IF_ERROR(prefill_all(m, o, b, *kv, runner, tokens));
  double timed_ms = 0;
  OpTimes ops;
  std::vector<float> logits;
  for (int step = 0; step < o.warmup + o.steps; ++step) {
    runner.set_op_times(o.ops && step >= o.warmup ? &ops : nullptr);
    KV_ASSIGN_OR_RETURN(const double ms, decode_step(m, *kv, runner, tokens, logits));
    if (step >= o.warmup) timed_ms += ms;
  }
  BatchRow r;
  r.batch = b;
  r.step_ms = timed_ms / o.steps;
  r.tokens_per_s = b * 1000.0 / r.step_ms;
  r.ops = ops;
  return r;
}

}  // namespace

Status check_batch_options(const BatchOptions& o) {
  if (o.context < 1 || o.steps < 1 || o.warmup < 0)
    return invalid_argument("need --context >= 1, --steps >= 1, --warmup >= 0");
  return Status::ok();
}

Result<BatchReport> run_batch(const BatchOptions& o, const BatchProgress& progress) {
  KV_RETURN_IF_ERROR(check_batch_options(o));
  KV_ASSIGN_OR_RETURN(auto m, o.load_model());
  BatchReport report;
  report.model = std::filesystem::path(m->path).filename().string();
  if (progress) progress(report);
  for (int b : o.batches) {
    KV_ASSIGN_OR_RETURN(BatchRow r, measure_batch(*m, o, b));
    report.rows.push_back(r);
    if (progress) progress(report);
  }
  return report;
}

const char* op_label(int o) {
  return o < kNumOps ? op_name(static_cast<Op>(o)) : "other";
}

double op_ms(const BatchRow& r, int o) {
  if (r.ops.forwards == 0) return 0;
  double sum = 0;
  for (double s : r.ops.seconds) sum += s;
  const double s =
      o < kNumOps ? r.ops.seconds[o] : std::max(0.0, r.step_ms / 1000 * r.ops.forwards - sum);
  return s * 1000 / r.ops.forwards;
}

}  // namespace kvserve::bench
