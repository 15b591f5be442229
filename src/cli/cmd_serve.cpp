// kvserve serve: the OpenAI-compatible HTTP server over the continuous-batching engine.
// The listener starts first (GET /health answers 503 while the model loads); SIGTERM or SIGINT
// drains the requests in flight, then the process exits 0.
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <filesystem>

#include "cli/common.h"
#include "core/bytes.h"
#include "core/memory_info.h"
#include "engine/engine_loop.h"
#include "model/gguf.h"
#include "server/chat_template.h"
#include "server/http_server.h"

namespace kvserve::cli {

namespace {

struct ServeFlags {
  ModelFlags model;
  EngineFlags engine;
  PrefixFlags prefix;
  std::string host = "127.0.0.1";
  int port = 8080;
  int max_batch_tokens = 512;
  int max_seqs = 16;
  int max_queue = 256;
  std::string scheduler = "continuous";
  std::string preemption = "swap";
  std::string swap_space = "1GiB";
  std::string api_key;
  std::string chat_template;
  std::string served_model_name;
  int http_threads = 0;
  double drain_timeout_s = 30;
};

// The chat template family: --chat-template, else detected from tokenizer.chat_template.
std::string chat_template_for(const Model& m, const std::string& flag) {
  if (!flag.empty()) return flag;
  if (m.format != "gguf") return {};
  auto g = GgufFile::open(m.path);
  if (!g) return {};
  auto t = (*g)->get_string("tokenizer.chat_template");
  if (!t) return {};
  if (auto family = server::detect_chat_template(*t)) return *family;
  std::fprintf(stderr,
               "kvserve: warning: the model's chat template is not one kvserve can render; "
               "/v1/chat/completions answers 400 unless --chat-template is given\n");
  return {};
}

// The engine loop's options from the flags, every flag checked before anything starts.
Result<EngineLoopOptions> loop_options(const ServeFlags& f) {
  if (!f.chat_template.empty() && !server::is_chat_template_name(f.chat_template)) {
    return invalid_argument(
        "--chat-template must be one of chatml, llama-3, llama-2, mistral, zephyr; got '" +
        f.chat_template + "'");
  }
  const auto kind = scheduler_kind_from_name(f.scheduler);
  if (!kind) return invalid_argument("--scheduler must be continuous, static or static-shrink");
  if (f.preemption != "recompute" && f.preemption != "swap") {
    return invalid_argument("--preemption must be recompute or swap");
  }
  KV_ASSIGN_OR_RETURN(const size_t swap_bytes, parse_byte_size(f.swap_space));
  // The swap area grows as sequences are swapped out, mid-serving: one larger than the memory
  // there is would end in the OOM killer under load, so it is refused now.
  if (const auto avail = available_memory();
      f.preemption == "swap" && avail && swap_bytes > *avail) {
    return invalid_argument("--swap-space " + f.swap_space + " is more than the " +
                            format_bytes(static_cast<double>(*avail)) + " of memory available");
  }
  EngineLoopOptions lo;
  KV_ASSIGN_OR_RETURN(lo.engine, engine_options(f.engine));
  KV_RETURN_IF_ERROR(apply_prefix_flags(f.prefix, lo.engine));
  lo.sched.kind = *kind;
  lo.sched.max_batch_tokens = f.max_batch_tokens;
  lo.sched.max_seqs = f.max_seqs;
  lo.sched.preemption = f.preemption == "swap" ? PreemptionMode::kSwap : PreemptionMode::kRecompute;
  lo.sched.swap_bytes = swap_bytes;
  lo.max_queue = f.max_queue;
  return lo;
}

server::ServerOptions server_options(const ServeFlags& f) {
  server::ServerOptions so;
  so.host = f.host;
  so.port = f.port;
  so.api_key = f.api_key;
  so.model_name = f.served_model_name;
  if (so.model_name.empty()) {
    so.model_name = f.model.model_path.empty()
                        ? "kvserve-demo"
                        : std::filesystem::path(f.model.model_path).stem().string();
  }
  return so;
}

// The listener starts first, then the model loads and the engine is attached; the process
// serves until SIGTERM or SIGINT.
int run_serve(const ServeFlags& f) {
  auto lo = loop_options(f);
  if (!lo) return report(lo.status());

  // Signals go to sigwait below, never to a handler thread.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  const server::ServerOptions so = server_options(f);
  server::HttpServer http(so);
  const int n_threads = f.http_threads > 0 ? f.http_threads : f.max_seqs + f.max_queue + 8;
  if (Status st = http.start(std::min(n_threads, 1024)); !st.is_ok()) return report(st);
  std::fprintf(stderr, "kvserve: listening on http://%s:%d (loading the model)\n", f.host.c_str(),
               f.port);

  auto model = load_model_from_flags(f.model);
  if (!model) {
    http.drain_and_stop(std::chrono::milliseconds(0));
    return report(model.status());
  }
  auto engine = EngineLoop::create(**model, *lo);
  if (!engine) {
    http.drain_and_stop(std::chrono::milliseconds(0));
    return report(engine.status());
  }
  const std::string tmpl = chat_template_for(**model, f.chat_template);
  http.set_engine(engine->get(), tmpl);
  std::fprintf(stderr,
               "kvserve: ready: %s, context %d, %d KV blocks, scheduler %s, chat template %s\n",
               so.model_name.c_str(), (*engine)->n_ctx(), (*engine)->stats().kv_blocks_total.load(),
               f.scheduler.c_str(), tmpl.empty() ? "(none)" : tmpl.c_str());

  int sig = 0;
  sigwait(&sigs, &sig);
  std::fprintf(stderr, "kvserve: %s received; draining %d in-flight sequences\n",
               sig == SIGTERM ? "SIGTERM" : "SIGINT", (*engine)->n_in_flight());
  http.drain_and_stop(std::chrono::milliseconds(static_cast<int64_t>(f.drain_timeout_s * 1000)));
  std::fprintf(stderr, "kvserve: stopped\n");
  return 0;
}

}  // namespace

void register_serve(CLI::App& app, int* rc) {
  auto f = std::make_shared<ServeFlags>();
  CLI::App* cmd =
      app.add_subcommand("serve", "OpenAI-compatible HTTP server with continuous batching");
  add_model_flags(*cmd, f->model);
  add_engine_flags(*cmd, f->engine);
  add_prefix_flags(*cmd, f->prefix);
  cmd->add_option("--host", f->host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", f->port, "port to listen on")->capture_default_str();
  cmd->add_option("--max-batch-tokens", f->max_batch_tokens, "tokens per forward pass")
      ->capture_default_str();
  cmd->add_option("--max-seqs", f->max_seqs, "sequences running at once")->capture_default_str();
  cmd->add_option("--max-queue", f->max_queue,
                  "sequences that may wait beyond --max-seqs; more get 503")
      ->capture_default_str();
  cmd->add_option("--scheduler", f->scheduler,
                  "continuous, or a baseline: static (request-level batching: rows compute until "
                  "the batch's longest ends) or static-shrink (finished rows leave)")
      ->capture_default_str();
  cmd->add_option("--preemption", f->preemption,
                  "when KV runs out: swap (copy the newest sequence's KV to host memory) or "
                  "recompute (free it, recompute later)")
      ->capture_default_str();
  cmd->add_option("--swap-space", f->swap_space, "host memory for swapped-out KV")
      ->capture_default_str();
  cmd->add_option("--api-key", f->api_key, "require Authorization: Bearer KEY on /v1/*");
  cmd->add_option("--chat-template", f->chat_template,
                  "chatml, llama-3, llama-2, mistral or zephyr (default: from the model)");
  cmd->add_option("--served-model-name", f->served_model_name, "model id in responses");
  cmd->add_option("--http-threads", f->http_threads, "HTTP worker threads (default: enough)");
  cmd->add_option("--drain-timeout", f->drain_timeout_s, "seconds to wait for requests on SIGTERM")
      ->capture_default_str();
  cmd->callback([f, rc] { *rc = run_serve(*f); });
}

}  // namespace kvserve::cli
