// kvserve: the command-line entry point. Each subcommand lives in its own cmd_*.cpp.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "cli/common.h"

int main(int argc, char** argv) {
  CLI::App app{"kvserve: an LLM inference engine built around its KV cache"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kvserve 0.1.0");
  int rc = 0;
  kvserve::cli::register_generate(app, &rc);
  kvserve::cli::register_kv_size(app, &rc);
  kvserve::cli::register_synth(app, &rc);
  kvserve::cli::register_inspect(app, &rc);
  kvserve::cli::register_bench(app, &rc);
  kvserve::cli::register_serve(app, &rc);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    // Errors are Status values; an exception reaching here is a library's (a thread or an
    // allocation the system refused): a message and an exit code, not std::terminate's abort.
    std::fprintf(stderr, "kvserve: error: %s\n", e.what());
    return 1;
  }
  return rc;
}
