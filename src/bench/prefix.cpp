#include "bench/prefix.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "engine/sampler.h"

namespace kvserve::bench {

namespace {

std::vector<std::vector<int32_t>> make_prompts(const PrefixOptions& o, int n_vocab) {
  Rng rng(2024);
  auto tok = [&] { return 3 + static_cast<int32_t>(rng.next() % (n_vocab - 3)); };
  std::vector<int32_t> shared;
  for (int i = 0; i < o.n_shared; ++i) shared.push_back(tok());
  std::vector<std::vector<int32_t>> prompts;
  for (int r = 0; r < o.n_requests; ++r) {
    std::vector<int32_t> p = shared;
    for (int i = 0; i < o.n_suffix; ++i) p.push_back(tok());
    prompts.push_back(std::move(p));
  }
  return prompts;
}

Result<PrefixPass> run_pass(const Model& m, EngineOptions eo, bool on,
                            const std::vector<std::vector<int32_t>>& prompts) {
  eo.prefix_cache = on;
  KV_ASSIGN_OR_RETURN(auto gen, Generator::create(m, eo));
  PrefixPass pass;
  for (const auto& prompt : prompts) {
    GenerateRequest req;
    req.prompt = prompt;
    req.n_predict = 1;
    req.ignore_eos = true;
    req.sampling.temperature = 0;
    KV_ASSIGN_OR_RETURN(GenerateResult r, gen->generate(req));
    pass.ttft_ms.push_back(r.prefill_ms);
    pass.cached.push_back(r.n_cached_tokens);
  }
  pass.stats = gen->kv().stats();
  const std::vector<double> tail(pass.ttft_ms.begin() + 1, pass.ttft_ms.end());
  pass.ttft_p50 = percentile_nearest_rank(tail, 50);
  pass.ttft_p95 = percentile_nearest_rank(tail, 95);
  return pass;
}

}  // namespace

double percentile_nearest_rank(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * v.size()));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

Result<PrefixReport> run_prefix(const PrefixOptions& o) {
  if (o.n_shared < 0 || o.n_suffix < 1 || o.n_requests < 2) {
    return invalid_argument("need --shared >= 0, --suffix >= 1 and --requests >= 2");
  }
  EngineOptions eo = o.engine;
  const int n_prompt = o.n_shared + o.n_suffix, bs = eo.block_size;
  eo.n_ctx = n_prompt + 1;
  eo.kv_blocks = o.kv_blocks > 0 ? o.kv_blocks : 2 * blocks_for_tokens(n_prompt + 1, bs);
  KV_ASSIGN_OR_RETURN(auto m, o.load_model());
  const auto prompts = make_prompts(o, m->config.n_vocab);
  PrefixReport report;
  report.model = std::filesystem::path(m->path).filename().string();
  report.kv_blocks = eo.kv_blocks;
  KV_ASSIGN_OR_RETURN(report.off, run_pass(*m, eo, false, prompts));
  KV_ASSIGN_OR_RETURN(report.on, run_pass(*m, eo, true, prompts));
  report.hit_rate = report.on.stats.hit_rate();
  report.hit_rate_optimum = static_cast<double>(o.n_requests - 1) * (o.n_shared / bs) * bs /
                            (static_cast<double>(o.n_requests) * n_prompt);
  return report;
}

}  // namespace kvserve::bench
