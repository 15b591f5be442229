#include "bench/decode.h"

#include <algorithm>
#include <filesystem>

#include "bench/common.h"
#include "core/membw.h"
#include "core/thread_pool.h"
#include "engine/generator.h"
#include "engine/sampler.h"

namespace kvserve::bench {

namespace {

// One run's prompt: ctx random ids in [3, n_vocab), seeded by the point and the run.
std::vector<int32_t> random_prompt(int ctx, int run, int n_vocab) {
  Rng rng(1234 + ctx + 7919 * run);
  std::vector<int32_t> p;
  for (int i = 0; i < ctx; ++i) p.push_back(3 + static_cast<int32_t>(rng.next() % (n_vocab - 3)));
  return p;
}

Result<DecodeRow> measure(const Model& m, int ctx, bool cache, const DecodeOptions& o) {
  const int n_gen = cache ? o.n_gen : o.n_nocache_steps + 1;
  EngineOptions eo;
  eo.block_size = o.block_size;
  eo.kv_type_k = eo.kv_type_v = o.kv_type;
  eo.n_threads = o.n_threads;
  eo.n_ctx = ctx + n_gen + 1;
  eo.prefix_cache = false;
  KV_ASSIGN_OR_RETURN(auto gen, Generator::create(m, eo));
  DecodeRow row;
  row.ctx = ctx;
  row.cache = cache;
  const int runs = std::max(1, o.repeat) + (o.warmup ? 1 : 0);
  int n_measured = 0;
  for (int run = 0; run < runs; ++run) {
    GenerateRequest req;
    req.prompt = random_prompt(ctx, run, m.config.n_vocab);
    req.n_predict = n_gen;
    req.ignore_eos = true;
    req.use_kv_cache = cache;
    KV_ASSIGN_OR_RETURN(GenerateResult r, gen->generate(req));
    if (o.warmup && run == 0) continue;
    const double ms_tok = r.n_decode_steps ? r.decode_ms / r.n_decode_steps : 0;
    row.prefill_tps += ctx * 1000.0 / r.prefill_ms;
    row.decode_tps += ms_tok > 0 ? 1000.0 / ms_tok : 0;
    row.ms_per_token += ms_tok;
    ++n_measured;
  }
  row.prefill_tps /= n_measured;
  row.decode_tps /= n_measured;
  row.ms_per_token /= n_measured;
  // A decode step reads every weight once and the K/V of every cached position (the mean
  // context over the measured steps).
  const double mean_ctx = ctx + n_gen / 2.0;
  row.bytes_per_token = static_cast<double>(m.weight_bytes()) +
                        (cache ? gen->kv().layout().bytes_per_token() * mean_ctx : 0.0);
  return row;
}

}  // namespace

double decode_bytes_per_s(const DecodeRow& r) {
  return r.cache ? r.bytes_per_token * r.decode_tps : 0.0;
}

double roofline_fraction(const DecodeRow& r, double read_bytes_per_s) {
  return read_bytes_per_s > 0 ? decode_bytes_per_s(r) / read_bytes_per_s : 0.0;
}

std::vector<DecodeGrowth> decode_growth(const DecodeReport& report) {
  std::vector<DecodeGrowth> out;
  for (bool cache : {true, false}) {
    const DecodeRow *lo = nullptr, *hi = nullptr;
    for (const DecodeRow& r : report.rows) {
      if (r.cache != cache) continue;
      if (!lo || r.ctx < lo->ctx) lo = &r;
      if (!hi || r.ctx > hi->ctx) hi = &r;
    }
    if (lo && hi && lo != hi && lo->ms_per_token > 0)
      out.push_back({cache, lo->ctx, hi->ctx, hi->ms_per_token / lo->ms_per_token});
  }
  return out;
}

Result<DecodeReport> run_decode(const DecodeOptions& o, const DecodeProgress& progress) {
  DecodeReport report;
  report.threads = thread_count(o.n_threads);
  {
    ThreadPool pool(report.threads);
    report.read_bytes_per_s = measure_read_bandwidth(pool);
  }
  if (progress) progress(report);
  for (const auto& path : o.model_paths) {
    LoadOptions lo;
    lo.tokenizer_path = o.tokenizer_path;
    KV_ASSIGN_OR_RETURN(auto m, load_model(path, lo));
    const std::string name = std::filesystem::path(path).filename().string();
    for (bool cache : {true, false}) {
      if (!cache && o.skip_nocache) continue;
      for (int ctx : o.contexts) {
        KV_ASSIGN_OR_RETURN(DecodeRow r, measure(*m, ctx, cache, o));
        r.model = name;
        report.rows.push_back(r);
        if (progress) progress(report);
      }
    }
  }
  return report;
}

}  // namespace kvserve::bench
