// kvserve: the command-line entry point. Each subcommand lives in its own cmd_*.cpp.
#include <CLI/CLI.hpp>

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
  }
  return rc;
}
