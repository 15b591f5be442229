// kvserve inspect: what a model file holds.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/bytes.h"
#include "kv/kv_planner.h"
#include "kv/kv_storage.h"

namespace kvserve::cli {

namespace {

struct InspectFlags {
  ModelFlags model;
  bool json = false;
};

const char* rope_style_name(RopeStyle s) {
  return s == RopeStyle::kNorm ? "norm (adjacent pairs)" : "neox (half split)";
}
const char* rope_scaling_name(RopeScaling s) {
  switch (s) {
    case RopeScaling::kNone:
      return "none";
    case RopeScaling::kLinear:
      return "linear";
    case RopeScaling::kLlama3:
      return "llama3";
  }
  return "?";
}

void collect(const TensorView& t, std::map<std::string, std::pair<int, size_t>>& by_type) {
  if (!t.present()) return;
  auto& e = by_type[dtype_name(t.type)];
  e.first++;
  e.second += t.n_bytes;
}

using TypeCounts = std::map<std::string, std::pair<int, size_t>>;  // dtype: tensors, bytes

TypeCounts tensors_by_type(const Model& m) {
  TypeCounts by_type;
  collect(m.tok_embd, by_type);
  collect(m.output_norm, by_type);
  if (!m.config.tied_embeddings) collect(m.output, by_type);
  for (const auto& l : m.layers) {
    for (const TensorView* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv,
                                &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down})
      collect(*t, by_type);
  }
  return by_type;
}

// True bytes per token of each KV type (K and V of that type, scales and q4 K block headers
// included) at blocks of kBlock, the same for every type so that they compare; types this
// head_dim cannot use are left out.
constexpr int kBlock = kDefaultBlockSize;
struct KvCosts {
  std::map<std::string, double> total, k, v;
};
KvCosts kv_costs(const ModelConfig& c) {
  KvCosts out;
  for (KvType t :
       {KvType::kF32, KvType::kF16, KvType::kBF16, KvType::kQ8, KvType::kFP8, KvType::kQ4}) {
    KvPlanInput in;
    in.n_layer = c.n_layer;
    in.n_head_kv = c.n_head_kv;
    in.head_dim = c.head_dim;
    in.block_size = kBlock;
    in.kv_type_k = in.kv_type_v = t;
    if (!check_kv_plan(in).is_ok()) continue;
    const KvPlan p = plan_kv(in);
    out.total[kv_type_name(t)] = p.bytes_per_token;
    out.k[kv_type_name(t)] = p.bytes_per_token_k;
    out.v[kv_type_name(t)] = p.bytes_per_token_v;
  }
  return out;
}

void print_json(const Model& m, const TypeCounts& by_type, const KvCosts& kv) {
  const ModelConfig& c = m.config;
  nlohmann::json j;
  j["path"] = m.path;
  j["format"] = m.format;
  j["arch"] = c.arch;
  j["name"] = c.name;
  j["n_vocab"] = c.n_vocab;
  j["n_embd"] = c.n_embd;
  j["n_ff"] = c.n_ff;
  j["n_layer"] = c.n_layer;
  j["n_head"] = c.n_head;
  j["n_head_kv"] = c.n_head_kv;
  j["head_dim"] = c.head_dim;
  j["n_ctx_train"] = c.n_ctx_train;
  j["rms_eps"] = c.rms_eps;
  j["rope_freq_base"] = c.rope_freq_base;
  j["rope_scaling"] = rope_scaling_name(c.rope_scaling);
  j["sliding_window"] = c.sliding_window;
  j["qkv_bias"] = c.has_qkv_bias;
  j["tied_embeddings"] = c.tied_embeddings;
  j["weight_bytes"] = m.weight_bytes();
  for (const auto& [t, e] : by_type)
    j["tensor_types"][t] = {{"count", e.first}, {"bytes", e.second}};
  j["kv_bytes_per_token"] = kv.total;
  j["kv_bytes_per_token_k"] = kv.k;
  j["kv_bytes_per_token_v"] = kv.v;
  j["kv_block_size"] = kBlock;
  if (m.tokenizer) {
    j["tokenizer"] = {{"kind", m.tokenizer->kind()},
                      {"n_vocab", m.tokenizer->n_vocab()},
                      {"bos", m.tokenizer->bos()},
                      {"eos", m.tokenizer->eos()},
                      {"add_bos", m.tokenizer->add_bos_default()}};
  }
  std::printf("%s\n", j.dump(2).c_str());
}

void print_text(const Model& m, const TypeCounts& by_type, KvCosts& kv) {
  const ModelConfig& c = m.config;
  std::printf("file           %s (%s)\n", m.path.c_str(), m.format.c_str());
  std::printf("architecture   %s%s%s\n", c.arch.c_str(), c.name.empty() ? "" : ", ",
              c.name.c_str());
  std::printf("vocab          %d\n", c.n_vocab);
  std::printf("embedding      %d, feed-forward %d, layers %d\n", c.n_embd, c.n_ff, c.n_layer);
  std::printf(
      "attention      %d heads, %d kv heads (%s), head dim %d\n", c.n_head, c.n_head_kv,
      c.n_head == c.n_head_kv ? "multi-head" : (c.n_head_kv == 1 ? "multi-query" : "grouped-query"),
      c.head_dim);
  std::printf(
      "context        %d trained%s\n", c.n_ctx_train,
      c.sliding_window ? (", sliding window " + std::to_string(c.sliding_window)).c_str() : "");
  std::printf("rope           base %g, %s, scaling %s (factor %g)\n", c.rope_freq_base,
              rope_style_name(c.rope_style), rope_scaling_name(c.rope_scaling),
              c.rope_scale_factor);
  std::printf("norm eps       %g%s%s\n", c.rms_eps, c.has_qkv_bias ? ", q/k/v biases" : "",
              c.tied_embeddings ? ", tied output embedding" : "");
  std::printf("weights        %s\n", format_bytes(static_cast<double>(m.weight_bytes())).c_str());
  for (const auto& [t, e] : by_type)
    std::printf("  %-6s       %d tensors, %s\n", t.c_str(), e.first,
                format_bytes(static_cast<double>(e.second)).c_str());
  std::printf("KV per token   (K + V bytes, blocks of %d)\n", kBlock);
  for (const auto& [t, b] : kv.total) {
    std::printf("  %-6s       %.6g (K %.6g, V %.6g) = %.3fx f16\n", t.c_str(), b, kv.k[t], kv.v[t],
                b / kv.total["f16"]);
  }
  if (m.tokenizer) {
    std::printf("tokenizer      %s, %d tokens, bos %d, eos %d, add bos %s\n", m.tokenizer->kind(),
                m.tokenizer->n_vocab(), m.tokenizer->bos(), m.tokenizer->eos(),
                m.tokenizer->add_bos_default() ? "yes" : "no");
  } else {
    std::printf("tokenizer      none (use --tokenizer)\n");
  }
}

int run(const InspectFlags& f) {
  auto mr = load_model_from_flags(f.model);
  if (!mr) return report(mr.status());
  const Model& m = **mr;
  const TypeCounts by_type = tensors_by_type(m);
  KvCosts kv = kv_costs(m.config);
  if (f.json) {
    print_json(m, by_type, kv);
  } else {
    print_text(m, by_type, kv);
  }
  return 0;
}

}  // namespace

void register_inspect(CLI::App& app, int* rc) {
  auto f = std::make_shared<InspectFlags>();
  CLI::App* sub = app.add_subcommand("inspect", "show a model's architecture, tensors and KV cost");
  add_model_flags(*sub, f->model);
  sub->add_flag("--json", f->json, "print JSON");
  sub->callback([f, rc] { *rc = run(*f); });
}

}  // namespace kvserve::cli
