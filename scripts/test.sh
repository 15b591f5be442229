#!/usr/bin/env bash
# Every test: builds and runs the suite (ctest) in the release build, then in an ASan + UBSan build.
# Usage: scripts/test.sh [release|sanitize|all]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
modes=${1:-all}
[ "$modes" = all ] && modes="release sanitize"
for mode in $modes; do
  scripts/build.sh "$mode"
  dir=build; [ "$mode" = sanitize ] && dir=build-asan
  echo "== tests ($mode build)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$dir" --output-on-failure -j "$(nproc)"
done
