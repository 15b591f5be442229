#include "server/metrics.h"

#include <cstdio>

namespace kvserve::server {

namespace {

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void metric(std::string& out, const char* name, const char* type, const char* help, double v) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
         name + " " + num(v) + "\n";
}

void histogram(std::string& out, const char* name, const char* help, const Histogram* h) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " histogram\n";
  Histogram::Snapshot s;
  if (h) s = h->snapshot();
  for (size_t i = 0; i < s.bounds.size(); ++i) {
    out += std::string(name) + "_bucket{le=\"" + num(s.bounds[i]) + "\"} " +
           std::to_string(s.buckets[i]) + "\n";
  }
  out += std::string(name) + "_bucket{le=\"+Inf\"} " + std::to_string(s.count) + "\n";
  out += std::string(name) + "_sum " + num(s.sum) + "\n";
  out += std::string(name) + "_count " + std::to_string(s.count) + "\n";
}

}  // namespace

std::string render_metrics(const EngineLoop* engine) {
  static const EngineStats kEmpty;
  const EngineStats& s = engine ? engine->stats() : kEmpty;
  const int total = s.kv_blocks_total.load();
  std::string out;
  metric(out, "kvserve_kv_usage_ratio", "gauge", "Fraction of KV cache blocks in use.",
         total > 0 ? static_cast<double>(s.kv_blocks_used.load()) / total : 0.0);
  metric(out, "kvserve_kv_blocks_total", "gauge", "KV cache blocks in the pool.", total);
  metric(out, "kvserve_kv_blocks_used", "gauge", "KV cache blocks held by sequences.",
         s.kv_blocks_used.load());
  metric(out, "kvserve_kv_blocks_free", "gauge", "KV cache blocks free.", s.kv_blocks_free.load());
  metric(out, "kvserve_kv_blocks_cached", "gauge",
         "Free KV blocks still holding reusable prefix-cache content.", s.kv_blocks_cached.load());
  metric(out, "kvserve_prefix_cache_queries_total", "counter",
         "Prompt tokens looked up in the prefix cache.", s.prefix_cache_queries_total.load());
  metric(out, "kvserve_prefix_cache_hits_total", "counter",
         "Prompt tokens served from the prefix cache.", s.prefix_cache_hits_total.load());
  metric(out, "kvserve_requests_running", "gauge", "Sequences admitted and running.",
         s.seqs_running.load());
  metric(out, "kvserve_requests_waiting", "gauge", "Sequences waiting for admission.",
         s.seqs_waiting.load());
  metric(out, "kvserve_requests_in_flight", "gauge", "Sequences submitted and not finished.",
         engine ? engine->n_in_flight() : 0);
  metric(out, "kvserve_requests_total", "counter", "Requests accepted by the engine.",
         s.requests_total.load());
  metric(out, "kvserve_preemptions_total", "counter",
         "Sequences preempted (blocks freed; recomputed or swapped back later).",
         s.preemptions_total.load());
  metric(out, "kvserve_preemptions_swapped_total", "counter",
         "Preemptions that copied the sequence's KV to host memory instead of recomputing it.",
         s.swapped_out_total.load());
  metric(out, "kvserve_swap_bytes", "gauge", "Host memory holding swapped-out KV.",
         s.swap_bytes.load());
  metric(out, "kvserve_prompt_tokens_total", "counter", "Prompt tokens of accepted sequences.",
         s.prompt_tokens_total.load());
  metric(out, "kvserve_generated_tokens_total", "counter", "Tokens generated.",
         s.generated_tokens_total.load());
  metric(out, "kvserve_engine_steps_total", "counter", "Forward passes run by the engine.",
         s.steps_total.load());
  histogram(out, "kvserve_time_to_first_token_seconds",
            "Time from request arrival to its first generated token.",
            engine ? &s.time_to_first_token : nullptr);
  histogram(out, "kvserve_inter_token_latency_seconds", "Time between consecutive tokens.",
            engine ? &s.inter_token_latency : nullptr);
  return out;
}

}  // namespace kvserve::server
