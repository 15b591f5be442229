// kvserve kv-size: the KV-cache capacity planner.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/common.h"
#include "core/bytes.h"
#include "kv/kv_planner.h"
#include "kv/kv_storage.h"

namespace kvserve::cli {

namespace {

struct KvSizeFlags {
  std::string model_path;
  int layers = 0, kv_heads = 0, head_dim = 0;
  int64_t ctx = 4096, batch = 1;
  std::optional<int> block_size;  // unset: the engine's default for the KV types
  KvTypeFlags kv_types;
  std::string memory;
  KvPolicyFlags policy;
  bool json = false;
};

// Tokens a request holds at most under a bounded policy (steady state), else ctx.
int64_t tokens_held(const KvPolicy& p, int64_t ctx) {
  if (const auto* w = std::get_if<WindowKv>(&p)) return std::min<int64_t>(ctx, w->sink + w->window);
  if (const auto* h = std::get_if<HeavyHitterKv>(&p)) return std::min<int64_t>(ctx, h->keep);
  return ctx;
}

// The model's shape: from -m (whose weights --memory then leaves out), or the shape flags.
Status fill_shape(const KvSizeFlags& f, KvPlanInput& in, std::string& source) {
  if (!f.model_path.empty()) {
    KV_ASSIGN_OR_RETURN(auto model, load_model(f.model_path));
    in.n_layer = model->config.n_layer;
    in.n_head_kv = model->config.n_head_kv;
    in.head_dim = model->config.head_dim;
    in.weight_bytes = model->weight_bytes();
    source = f.model_path;
    return Status::ok();
  }
  if (f.layers <= 0 || f.kv_heads <= 0 || f.head_dim <= 0) {
    return invalid_argument("give -m MODEL, or all of --layers, --kv-heads and --head-dim (> 0)");
  }
  in.n_layer = f.layers;
  in.n_head_kv = f.kv_heads;
  in.head_dim = f.head_dim;
  source = "--layers/--kv-heads/--head-dim";
  return Status::ok();
}

// The KV types, block size, tokens held and memory of the plan. Unknown types are named
// without their flag here ("unknown KV type 'q5'"), as the planner always has.
Status fill_kv(const KvSizeFlags& f, const KvPolicy& policy, KvPlanInput& in) {
  const std::string k_name =
      f.kv_types.kv_type_k.empty() ? f.kv_types.kv_type : f.kv_types.kv_type_k;
  const std::string v_name =
      f.kv_types.kv_type_v.empty() ? f.kv_types.kv_type : f.kv_types.kv_type_v;
  for (const std::string* n : {&k_name, &v_name}) {
    if (!kv_type_from_name(*n)) {
      return invalid_argument("unknown KV type '" + *n + "' (use " + kv_type_list() + ")");
    }
  }
  in.kv_type_k = *kv_type_from_name(k_name);
  in.kv_type_v = *kv_type_from_name(v_name);
  in.block_size = block_size_or_default(f.block_size, {in.kv_type_k, in.kv_type_v});
  if (in.block_size < 1 || in.block_size > 256)
    return invalid_argument("--block-size must be in [1, 256]");
  in.ctx = tokens_held(policy, f.ctx);
  in.batch = f.batch;
  KV_RETURN_IF_ERROR(check_kv_plan(in));
  if (!f.memory.empty()) {
    KV_ASSIGN_OR_RETURN(in.memory, parse_byte_size(f.memory));
  }
  return Status::ok();
}

void print_json(const KvSizeFlags& f, const KvPlanInput& in, const KvPlan& p,
                const KvPolicy& policy) {
  nlohmann::json j = {{"layers", in.n_layer},
                      {"kv_heads", in.n_head_kv},
                      {"head_dim", in.head_dim},
                      {"kv_type_k", kv_type_name(in.kv_type_k)},
                      {"kv_type_v", kv_type_name(in.kv_type_v)},
                      {"bytes_per_token_k", p.bytes_per_token_k},
                      {"bytes_per_token_v", p.bytes_per_token_v},
                      {"ctx", in.ctx},
                      {"batch", in.batch},
                      {"block_size", in.block_size},
                      {"bytes_per_token", p.bytes_per_token},
                      {"bytes_per_request", p.bytes_per_request},
                      {"bytes_per_request_paged", p.bytes_per_request_paged},
                      {"bytes_total", p.bytes_total},
                      {"policy", kv_policy_name(policy)},
                      {"ctx_requested", f.ctx}};
  if (in.memory > 0) {
    j["memory"] = in.memory;
    j["weight_bytes"] = in.weight_bytes;
    j["memory_for_kv"] = p.memory_for_kv;
    j["requests_fit"] = p.requests_fit;
  }
  std::printf("%s\n", j.dump().c_str());
}

void print_text(const KvSizeFlags& f, const std::string& source, const KvPlanInput& in,
                const KvPlan& p, const KvPolicy& policy) {
  std::printf("model          %s\n", source.c_str());
  std::printf("shape          %d layers x %d kv heads x %d head dim, K %s, V %s\n", in.n_layer,
              in.n_head_kv, in.head_dim, kv_type_name(in.kv_type_k), kv_type_name(in.kv_type_v));
  std::printf("per token      %s (%.6g bytes: K %.6g, V %.6g, scales and q4 headers included)\n",
              format_bytes(p.bytes_per_token).c_str(), p.bytes_per_token, p.bytes_per_token_k,
              p.bytes_per_token_v);
  std::printf("per request    %s for %lld tokens (%s in blocks of %d)",
              format_bytes(p.bytes_per_request).c_str(), static_cast<long long>(in.ctx),
              format_bytes(p.bytes_per_request_paged).c_str(), in.block_size);
  if (kv_policy_bounded(policy)) {
    std::printf(", at most %lld of %lld tokens held (%s)", static_cast<long long>(in.ctx),
                static_cast<long long>(f.ctx), kv_policy_name(policy).c_str());
  }
  std::printf("\n");
  std::printf("total          %s for %lld requests\n", format_bytes(p.bytes_total).c_str(),
              static_cast<long long>(in.batch));
  if (in.memory > 0) {
    if (in.weight_bytes > 0) {
      std::printf("memory         %s, less %s of weights = %s for KV\n",
                  format_bytes(static_cast<double>(in.memory)).c_str(),
                  format_bytes(static_cast<double>(in.weight_bytes)).c_str(),
                  format_bytes(std::max(0.0, p.memory_for_kv)).c_str());
    }
    std::printf("fits           %lld requests of %lld tokens in %s\n",
                static_cast<long long>(p.requests_fit), static_cast<long long>(f.ctx),
                format_bytes(static_cast<double>(in.memory)).c_str());
  }
}

int run(const KvSizeFlags& f) {
  KvPlanInput in;
  std::string source;
  if (Status st = fill_shape(f, in, source); !st.is_ok()) return report(st);
  if (f.ctx <= 0 || f.batch <= 0)
    return report(invalid_argument("--ctx and --batch must be positive"));
  auto policy = kv_policy_from_flags(f.policy);
  if (!policy) return report(policy.status());
  if (Status st = fill_kv(f, *policy, in); !st.is_ok()) return report(st);
  const KvPlan p = plan_kv(in);
  if (f.json) {
    print_json(f, in, p, *policy);
  } else {
    print_text(f, source, in, p, *policy);
  }
  return 0;
}

}  // namespace

void register_kv_size(CLI::App& app, int* rc) {
  auto f = std::make_shared<KvSizeFlags>();
  CLI::App* sub = app.add_subcommand("kv-size", "KV-cache capacity planner");
  sub->add_option("-m,--model", f->model_path, "model file to read the shape from");
  sub->add_option("--layers", f->layers, "layers");
  sub->add_option("--kv-heads", f->kv_heads, "KV heads");
  sub->add_option("--head-dim", f->head_dim, "head dimension");
  sub->add_option("--ctx", f->ctx, "tokens per request")->capture_default_str();
  sub->add_option("--batch", f->batch, "concurrent requests")->capture_default_str();
  add_block_size_flag(*sub, f->block_size);
  add_kv_type_flags(*sub, f->kv_types);
  sub->add_option("--memory", f->memory,
                  "memory available, e.g. 24GiB (weights subtracted with -m)");
  add_kv_policy_flags(*sub, f->policy);
  sub->add_flag("--json", f->json, "print JSON");
  sub->callback([f, rc] { *rc = run(*f); });
}

}  // namespace kvserve::cli
