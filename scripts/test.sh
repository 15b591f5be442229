#!/usr/bin/env bash
# Every test: builds and runs the suite (ctest) in the release build, then in an ASan + UBSan build.
# Usage: scripts/test.sh [release|sanitize|all]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
modes=${1:-all}
[ "$modes" = all ] && modes="release sanitize"

# The server's black-box tests also drive it with the official `openai` npm client.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d tests/server/node/node_modules/openai ]; then
  tests/server/setup_node.sh || tests/server/setup_node.sh ||
    echo "test.sh: warning: could not install the openai npm client; its test will be skipped" >&2
fi
for mode in $modes; do
  scripts/build.sh "$mode"
  dir=build; [ "$mode" = sanitize ] && dir=build-asan
  echo "== tests ($mode build)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$dir" --output-on-failure -j "$(nproc)"
done
