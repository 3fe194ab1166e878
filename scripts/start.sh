#!/usr/bin/env bash
# Installs, builds and starts exo-node on the default model. Extra arguments go to exo-node chat.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
./scripts/setup.sh
log "building (Release)"
configure_and_build build -DCMAKE_BUILD_TYPE=Release -DEXO_BUILD_TESTS=OFF
exec ./build/exo-node chat "$@"
