#!/usr/bin/env bash
# Side-by-side with llama.cpp: the same GGUF files, the same thread count, in one run.
# llama.cpp comes from the npm package node-llama-cpp (its source bundle, built once); it is never
# part of kvserve or its tests. Usage:
#   [KVSERVE_BIN=path/to/kvserve] [KVSERVE_PEER_DIR=dir] \
#   bench/peer/compare.sh [-t THREADS] [-p PROMPT_TOKENS] [-n GEN_TOKENS] [MODEL.gguf ...]
# With no models it writes smollm-135m in f16 and q8_0 with `kvserve synth`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
threads=$(nproc); n_prompt=512; n_gen=128
while getopts "t:p:n:" o; do
  case $o in t) threads=$OPTARG ;; p) n_prompt=$OPTARG ;; n) n_gen=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
peer=${KVSERVE_PEER_DIR:-/tmp/kvserve-peer}
# KVSERVE_BIN: another kvserve build to compare (default: the release build, built if missing).
kvserve=${KVSERVE_BIN:-$repo/build/kvserve}
[ -x "$kvserve" ] || "$repo/scripts/build.sh" release >&2

# llama.cpp's own benchmark, built from the source bundle node-llama-cpp ships (about 7 min on 2 cores).
bench_bin=$peer/llama.cpp-build/bin/llama-bench
if [ ! -x "$bench_bin" ]; then
  mkdir -p "$peer" && cd "$peer"
  [ -f package.json ] || npm init -y >/dev/null
  NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --omit=optional node-llama-cpp@3.22.1 \
    @node-llama-cpp/linux-x64@3.22.1 >&2
  [ -d llama.cpp-src ] || git clone -q node_modules/node-llama-cpp/llama/gitRelease.bundle llama.cpp-src
  # Not GGML_NATIVE: llama.cpp's native build crashed in its AMX path on this VM. Name the ISA
  # explicitly instead.
  cmake -S llama.cpp-src -B llama.cpp-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON \
    -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
    -DGGML_OPENMP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2
  cmake --build llama.cpp-build -j "$(nproc)" --target llama-bench >&2
fi

models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  mkdir -p "$peer/models"
  for dt in f16 q8_0; do
    f=$peer/models/smollm-135m-$dt.gguf
    [ -f "$f" ] || "$kvserve" synth --preset smollm-135m --dtype "$dt" -o "$f"
    models+=("$f")
  done
fi

out=$(mktemp -d)
for m in "${models[@]}"; do
  name=$(basename "$m" .gguf)
  # llama.cpp: pp = prefill of n_prompt tokens, tg = n_gen tokens generated from an empty context.
  "$bench_bin" -m "$m" -t "$threads" -p "$n_prompt" -n "$n_gen" -r 3 -o json > "$out/$name.llama.json"
  # kvserve: the same two measurements, f16 KV like llama.cpp's default.
  # Like llama-bench -r 3: a warm-up run, then the mean of 3.
  "$kvserve" bench decode -m "$m" -t "$threads" --contexts "$n_prompt" --gen 1 --skip-nocache \
    --repeat 3 --json | tail -n 1 > "$out/$name.kv_pp.json"
  "$kvserve" bench decode -m "$m" -t "$threads" --contexts 1 --gen "$n_gen" --skip-nocache \
    --repeat 3 --json | tail -n 1 > "$out/$name.kv_tg.json"
done
python3 "$here/report.py" "$out" "$threads"
