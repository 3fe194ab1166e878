#!/usr/bin/env bash
# Installs, builds and starts an exo-node serving the chat API and web UI (http://localhost:52415/)
# on the default model, joined to any exo-node cluster on the LAN. Extra arguments go to
# `exo-node serve` (e.g. --model PATH, --cluster_key KEY, --nocluster).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
./scripts/setup.sh
log "building (Release)"
configure_and_build build -DCMAKE_BUILD_TYPE=Release -DEXO_BUILD_TESTS=OFF
log "starting: web UI and OpenAI API on http://localhost:52415/ (Ctrl-C stops)"
exec ./build/exo-node serve "$@"
