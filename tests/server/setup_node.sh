#!/usr/bin/env bash
# Installs the official `openai` npm client (v4) into tests/server/node/ for the black-box test
# tests/server/openai_client.test.mjs (run by ServerTest.OpenAINodeClient, skipped without it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v npm >/dev/null || { echo "setup_node: npm not found (install nodejs/npm)" >&2; exit 1; }
npm install --silent --no-audit --no-fund --prefix "$here/node" openai@4
