#!/usr/bin/env bash
# Runs every test: installs what is missing, builds, runs ctest (unit, LibTorch bridge, run
# manager with its fault and power-cut walks, hostile files, interop with the real Python torch,
# kill -9, object storage on moto and s3rver, consumers of the installed package), then the
# torch-free unit tests again under ASan+UBSan and the threaded ones under TSan, then every fuzzer
# (ASan+UBSan) for a bounded time after replaying its regression inputs.
#   scripts/test.sh                          # everything
#   CKPT_FUZZ_SECONDS=60 scripts/test.sh     # longer fuzzing (default 20 s per target)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/install-s3rver.sh   # build/s3rver: the pessimistic S3 server of interop.S3rver*

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build
(cd build && ctest --output-on-failure -j2 --timeout 900) | tee build/ctest.log
passed=$(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' build/ctest.log)

scripts/sanitize.sh | tee build/sanitize.log
sanitized=$(sed -n 's/.*\[  PASSED  \] \([0-9]*\) tests\?\..*/\1/p' build/sanitize.log | awk '{s += $1} END {print s + 0}')

scripts/fuzz.sh "${CKPT_FUZZ_SECONDS:-20}" | tee build/fuzz.log
fuzzers=$(grep -c '^fuzz_[a-z]*: .* no crash$' build/fuzz.log)

# One closing line for the whole run: every ctest entry, every sanitized unit test, every fuzzer.
echo "ctest: $passed passed; under sanitizers: $sanitized passed; fuzzers: $fuzzers clean"
echo "all: $((passed + sanitized + fuzzers)) passed, 0 failed"
