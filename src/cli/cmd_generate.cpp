// kvserve generate: one prompt, one continuation, through the paged KV cache.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "cli/common.h"

namespace kvserve::cli {

namespace {

struct GenerateFlags {
  ModelFlags model;
  EngineFlags engine;
  PrefixFlags prefix;
  std::string prompt;
  std::string prompt_tokens;
  int n_predict = 128;
  float temperature = 0.8f;
  int top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  int repeat_last_n = 64;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int64_t seed = -1;
  bool no_kv_cache = false;
  bool ignore_eos = false;
  std::vector<std::string> stop;
  bool json = false;
};

double decode_tps(const GenerateResult& res) {
  return res.decode_ms > 0 ? res.n_decode_steps * 1000.0 / res.decode_ms : 0;
}

Result<std::vector<int32_t>> parse_token_list(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (...) {
      used = 0;
    }
    if (used == 0 || item.find_first_not_of(" \t", used) != std::string::npos || v < 0 ||
        v > INT32_MAX) {
      return invalid_argument("--prompt-tokens: '" + item + "' is not a token id");
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) return invalid_argument("--prompt-tokens is empty");
  return ids;
}

// The request: the prompt (token ids as given, or the text encoded) and the sampling flags.
// *seed is the seed used (random unless --seed).
Result<GenerateRequest> make_request(const GenerateFlags& f, const Model& m, uint64_t* seed) {
  GenerateRequest req;
  if (!f.prompt_tokens.empty()) {
    KV_ASSIGN_OR_RETURN(req.prompt, parse_token_list(f.prompt_tokens));
  } else {
    if (!m.tokenizer) {
      return not_found("no tokenizer for " + m.path +
                       ": pass --tokenizer FILE or use --prompt-tokens");
    }
    // llama2.c checkpoints always get BOS, as run.c does; GGUF follows its metadata.
    const bool add_bos = m.format == "llama2c" || m.tokenizer->add_bos_default();
    req.prompt = m.tokenizer->encode(f.prompt, add_bos);
  }
  req.n_predict = f.n_predict;
  req.ignore_eos = f.ignore_eos;
  if (!f.stop.empty() && !m.tokenizer) {
    return invalid_argument("--stop needs the model's tokenizer (none for " + m.path + ")");
  }
  req.stop = f.stop;
  req.use_kv_cache = !f.no_kv_cache;
  req.sampling.temperature = f.temperature;
  req.sampling.top_k = f.top_k;
  req.sampling.top_p = f.top_p;
  req.sampling.min_p = f.min_p;
  req.sampling.repeat_penalty = f.repeat_penalty;
  req.sampling.repeat_last_n = f.repeat_last_n;
  req.sampling.frequency_penalty = f.frequency_penalty;
  req.sampling.presence_penalty = f.presence_penalty;
  *seed = f.seed >= 0 ? static_cast<uint64_t>(f.seed) : std::random_device{}();
  req.sampling.seed = *seed;
  return req;
}

// "f16", or "q4/q8" when K and V differ.
std::string kv_types_name(const KvLayout& kv) {
  return kv.k_type == kv.v_type
             ? kv_type_name(kv.k_type)
             : std::string(kv_type_name(kv.k_type)) + "/" + kv_type_name(kv.v_type);
}

double prefill_tps(const GenerateRequest& req, const GenerateResult& res) {
  return res.prefill_ms > 0 ? req.prompt.size() * 1000.0 / res.prefill_ms : 0.0;
}

void print_json(const GenerateFlags& f, const Model& m, const EngineOptions& eo, Generator& gen,
                const GenerateRequest& req, const GenerateResult& res, uint64_t seed) {
  const KvLayout& kv = gen.kv().layout();
  nlohmann::json j;
  j["model"] = m.path;
  j["prompt_tokens"] = req.prompt;
  j["tokens"] = res.tokens;
  j["text"] = res.text;  // EOS adds none; cut before a stop string
  j["finish_reason"] = res.finish_reason;
  j["seed"] = seed;
  j["kv_cache"] = req.use_kv_cache;
  j["cached_tokens"] = res.n_cached_tokens;
  j["prefix_cache"] = eo.prefix_cache && req.use_kv_cache;
  j["timings"] = {{"prefill_ms", res.prefill_ms},
                  {"decode_ms", res.decode_ms},
                  {"decode_tokens_per_s", decode_tps(res)},
                  {"prefill_tokens_per_s", prefill_tps(req, res)}};
  j["kv"] = {{"block_size", kv.block_size},
             {"blocks_total", gen.kv().n_blocks_total()},
             {"blocks_used_peak", res.blocks_used_peak},
             {"bytes_per_token", kv.bytes_per_token()},
             {"type", kv_types_name(kv)},
             {"type_k", kv_type_name(kv.k_type)},
             {"type_v", kv_type_name(kv.v_type)},
             {"policy", kv_policy_name(gen.kv().policy())}};
  std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

void print_stats(Generator& gen, const GenerateRequest& req, const GenerateResult& res) {
  const KvLayout& kv = gen.kv().layout();
  std::fputc('\n', stdout);
  std::fflush(stdout);  // the text ends before the stats line, also when both are piped
  std::fprintf(stderr,
               "kvserve: %zu prompt tokens in %.1f ms (%.1f tok/s), %zu generated, %.1f tok/s "
               "decode, KV peak %d of %d blocks of %d tokens (%s, %s), finish: %s\n",
               req.prompt.size(), res.prefill_ms, prefill_tps(req, res), res.tokens.size(),
               decode_tps(res), res.blocks_used_peak, gen.kv().n_blocks_total(), kv.block_size,
               kv_types_name(kv).c_str(), kv_policy_name(gen.kv().policy()).c_str(),
               res.finish_reason.c_str());
}

// Text mode streams the prompt and then the engine's text as it becomes safe to show (held
// back where it could still be a stop string). The prompt is echoed with the first token, once
// the request has passed every check and its prefill: a request refused (sampling values, a
// prompt over the context, no KV memory) prints only its error.
class TextStream {
 public:
  TextStream(const Model& m, const GenerateRequest& req) : m_(m), req_(req) {}
  void echo_prompt() {
    int32_t prev = -1;
    for (int32_t t : req_.prompt) {
      std::fputs(m_.tokenizer->decode_token(prev, t).c_str(), stdout);
      prev = t;
    }
    echoed_ = true;
  }
  bool on_token(int32_t) {
    if (!echoed_) echo_prompt();
    return true;
  }
  void on_text(std::string_view text) {
    if (!echoed_) echo_prompt();
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  }
  bool echoed() const { return echoed_; }

 private:
  const Model& m_;
  const GenerateRequest& req_;
  bool echoed_ = false;
};

int run(const GenerateFlags& f) {
  if (f.prompt.empty() == f.prompt_tokens.empty()) {
    return report(invalid_argument("give exactly one of -p TEXT or --prompt-tokens IDS"));
  }
  auto eo = engine_options(f.engine);
  if (!eo) return report(eo.status());
  if (Status st = apply_prefix_flags(f.prefix, *eo); !st.is_ok()) return report(st);
  auto model = load_model_from_flags(f.model);
  if (!model) return report(model.status());
  const Model& m = **model;
  uint64_t seed = 0;
  auto req = make_request(f, m, &seed);
  if (!req) return report(req.status());
  auto gen = Generator::create(m, *eo);
  if (!gen) return report(gen.status());

  const bool text = !f.json && m.tokenizer;
  TextStream stream(m, *req);
  if (text) {
    req->on_token = [&](int32_t t) { return stream.on_token(t); };
    req->on_text = [&](std::string_view piece) { stream.on_text(piece); };
  }
  auto res = (*gen)->generate(*req);
  if (!res) {
    if (stream.echoed()) std::fputc('\n', stdout);
    return report(res.status());
  }
  if (text && !stream.echoed()) stream.echo_prompt();  // nothing generated (-n 0)
  if (f.json) {
    print_json(f, m, *eo, **gen, *req, *res, seed);
  } else {
    print_stats(**gen, *req, *res);
  }
  return 0;
}

}  // namespace

void register_generate(CLI::App& app, int* rc) {
  auto f = std::make_shared<GenerateFlags>();
  CLI::App* sub = app.add_subcommand("generate", "generate text from a prompt");
  add_model_flags(*sub, f->model);
  add_engine_flags(*sub, f->engine);
  add_prefix_flags(*sub, f->prefix);
  sub->add_option("-p,--prompt", f->prompt, "prompt text");
  sub->add_option("--prompt-tokens", f->prompt_tokens,
                  "prompt as token ids, e.g. 1,2,3 (used as given)");
  sub->add_option("-n,--n-predict", f->n_predict, "tokens to generate")->capture_default_str();
  sub->add_option("--temp,--temperature", f->temperature, "temperature (0 = greedy)")
      ->capture_default_str();
  sub->add_option("--top-k", f->top_k, "top-k (0 = off)")->capture_default_str();
  sub->add_option("--top-p", f->top_p, "top-p (1 = off)")->capture_default_str();
  sub->add_option("--min-p", f->min_p, "min-p (0 = off)")->capture_default_str();
  sub->add_option("--repeat-penalty", f->repeat_penalty, "repetition penalty (1 = off)")
      ->capture_default_str();
  sub->add_option("--repeat-last-n", f->repeat_last_n, "tokens the penalty looks back over")
      ->capture_default_str();
  sub->add_option("--frequency-penalty", f->frequency_penalty,
                  "subtracted from a token's logit per time it was generated (0 = off, [-2, 2])")
      ->capture_default_str();
  sub->add_option("--presence-penalty", f->presence_penalty,
                  "subtracted once a token was generated (0 = off, [-2, 2])")
      ->capture_default_str();
  sub->add_option("-s,--seed", f->seed, "random seed (default: random)");
  sub->add_flag("--no-kv-cache", f->no_kv_cache,
                "recompute the whole sequence every step (baseline)");
  sub->add_flag("--ignore-eos", f->ignore_eos, "keep generating past end-of-sequence");
  sub->add_option("--stop", f->stop,
                  "stop before this text (repeatable); the output ends before it, finish: stop");
  sub->add_flag("--json", f->json, "print one JSON object instead of text");
  sub->callback([f, rc] { *rc = run(*f); });
}

}  // namespace kvserve::cli
