#!/usr/bin/env bash
# Builds the libFuzzer targets under ASan + UBSan and runs each for a bounded time on a seed
# corpus made from real PyTorch files. Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-${CKPT_FUZZ_SECONDS:-30}}
build=build-fuzz
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCKPT_BUILD_FUZZERS=ON -DCKPT_BUILD_TORCH=OFF -DCKPT_BUILD_TESTS=OFF -DCKPT_BUILD_BENCH=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all -fno-omit-frame-pointer" >/dev/null
cmake --build "$build" --target fuzz_pickle fuzz_zip fuzz_archive

# Seeds: the shared PyTorch files, and their data.pkl records for the pickle fuzzer.
corpus="$build/corpus"
rm -rf "$corpus" && mkdir -p "$corpus/archive" "$corpus/pickle"
testdata=${CKPT_TESTDATA:-tests/data/pytorch}
find "$testdata" -name '*.pt' -size -64k -exec cp {} "$corpus/archive/" \; 2>/dev/null || true
/usr/bin/python3 - "$corpus" <<'PY'
import os, sys, zipfile
corpus = sys.argv[1]
for name in os.listdir(f"{corpus}/archive"):
    try:
        with zipfile.ZipFile(f"{corpus}/archive/{name}") as z:
            for n in z.namelist():
                if n.endswith("data.pkl"):
                    open(f"{corpus}/pickle/{name}.pkl", "wb").write(z.read(n))
    except zipfile.BadZipFile:
        open(f"{corpus}/pickle/{name}", "wb").write(open(f"{corpus}/archive/{name}", "rb").read())
PY

export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for t in pickle zip archive; do
  seeds="$corpus/archive"; [ "$t" = pickle ] && seeds="$corpus/pickle"
  mkdir -p "$corpus/$t-work"
  echo "== fuzz_$t for ${seconds}s"
  if ! "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 "$corpus/$t-work" "$seeds" 2>"$build/fuzz_$t.log"; then
    echo "fuzz_$t FAILED:"; tail -50 "$build/fuzz_$t.log"; status=1
  else
    grep -E "stat::number_of_executed_units|Done" "$build/fuzz_$t.log" | tail -2
  fi
done
exit $status
