// Runs the real kvserve binary for the CLI tests and captures what it prints.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace kvserve::test {

struct Proc {
  int rc;
  std::string out;  // stdout, and stderr too when merge_stderr
};

// `env` is a prefix for the shell command (e.g. "XDG_CACHE_HOME=/tmp/x").
inline Proc run_kvserve(const std::string& args, bool merge_stderr = true,
                        const std::string& env = "") {
  const std::string cmd =
      env + " " + KVSERVE_BINARY + " " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  Proc p{-1, ""};
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return p;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) p.out.append(buf.data(), n);
  const int status = pclose(f);
  p.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return p;
}

// The JSON object a `--json` command prints last, on a line of its own (the whole output when
// it is nothing else); a discarded value (not an object) when there is none.
inline nlohmann::json last_json_line(const std::string& out) {
  const size_t at = out.rfind("\n{");
  return nlohmann::json::parse(at == std::string::npos ? out : out.substr(at + 1), nullptr, false);
}

}  // namespace kvserve::test
