#!/usr/bin/env bash
# Runs every test: installs what is missing, builds, runs ctest (unit, LibTorch bridge, interop
# with the real Python torch), then the fuzzers under ASan + UBSan for a bounded time.
#   scripts/test.sh            # everything
#   CKPT_FUZZ_SECONDS=60 scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build
(cd build && ctest --output-on-failure -j2 --timeout 900) | tee build/ctest.log
passed=$(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' build/ctest.log)

scripts/fuzz.sh "${CKPT_FUZZ_SECONDS:-30}"

# One closing line for the whole run: every ctest entry plus the three fuzzers.
echo "all: $((passed + 3)) passed, 0 failed"
