#!/usr/bin/env bash
# The main job: build kvserve and run it. With no arguments it generates from the built-in demo
# model; otherwise the arguments go to kvserve (e.g. scripts/run.sh generate -m model.gguf -p Hi).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh release >&2
if [ $# -eq 0 ]; then
  set -- generate -p "Once upon a time" -n 48 --seed 1
fi
exec build/kvserve "$@"
