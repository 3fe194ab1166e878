#!/usr/bin/env bash
# Runs every test: unit and integration tests (optimised build), the end-to-end Python tests,
# the kernels cross-built for aarch64 and checked under qemu-user, the unit tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer (except the slow
# RealModel suites that run the default model), and each fuzz target
# for a bounded time. Set FUZZ_SECONDS (default 30) to fuzz longer.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
./scripts/setup.sh
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"

log "1/5 build and run tests (RelWithDebInfo)"
configure_and_build build-tests -DCMAKE_BUILD_TYPE=RelWithDebInfo
(cd build-tests && ctest --output-on-failure -j "$JOBS")

log "2/5 end-to-end tests (Python)"
EXO_NODE_BIN="$PWD/build-tests/exo-node" "$EXO_VENV/bin/python" -m pytest -q tests/e2e

log "3/5 cross-build the kernels for aarch64 (NEON) and check them under qemu-user"
cmake -S tests/kernels/cross -B build-aarch64 -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" >/dev/null
ninja -C build-aarch64 -j "$JOBS" kernels_check >/dev/null
qemu-aarch64 -L /usr/aarch64-linux-gnu build-aarch64/kernels_check
EXO_SIMD=scalar qemu-aarch64 -L /usr/aarch64-linux-gnu build-aarch64/kernels_check

log "4/5 build and run tests under ASan + UBSan"
configure_and_build build-asan -DCMAKE_BUILD_TYPE=Debug -DEXO_SANITIZE=address,undefined \
  -DCMAKE_CXX_FLAGS=-O1
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j "$JOBS" -E RealModel)

log "5/5 fuzz targets, ${FUZZ_SECONDS}s each"
configure_and_build build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DEXO_BUILD_FUZZ=ON -DEXO_ONLY_PARSERS=ON -DEXO_BUILD_TESTS=OFF
for fuzzer in build-fuzz/tests/fuzz/*_fuzz; do
  name=$(basename "$fuzzer" _fuzz)
  corpus=$(mktemp -d)
  [[ -d tests/fuzz/corpus/$name ]] && cp -r tests/fuzz/corpus/$name/. "$corpus/"
  log "fuzzing $name"
  "$fuzzer" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=0 "$corpus" \
    2> "build-fuzz/$name.log" || { tail -50 "build-fuzz/$name.log"; exit 1; }
  rm -rf "$corpus"
done
log "all tests passed"
