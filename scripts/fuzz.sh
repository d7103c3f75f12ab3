#!/usr/bin/env bash
# Builds the libFuzzer targets under ASan + UBSan and runs each for a bounded time:
#   fuzz_pickle, fuzz_zip, fuzz_archive   the parsers, seeded from real PyTorch files (and, for
#                                         fuzz_archive, safetensors and TorchScript files);
#   fuzz_state                            mutated state dicts into every LibTorch loader, from
#                                         states LibTorch built and from those of the torch 1.13
#                                         and 2.x files in tests/data/torch2x.
# First each target replays its regression inputs (fuzz/regressions/TARGET/: every crash ever
# found, kept in the repository), then it fuzzes. Appends one line per target to
# $CKPT_FUZZ_STATS when set (target, seconds, executions), for RELIABILITY.md.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-${CKPT_FUZZ_SECONDS:-30}}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pickle zip archive dist state)
build=build-fuzz
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCKPT_BUILD_FUZZERS=ON -DCKPT_BUILD_TORCH=ON -DCKPT_BUILD_TESTS=OFF -DCKPT_BUILD_BENCH=OFF \
  -DCKPT_BUILD_TOOLS=OFF -DCKPT_BUILD_PYTHON=OFF -DCKPT_INSTALL=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all -fno-omit-frame-pointer" >/dev/null
cmake --build "$build" --target "${targets[@]/#/fuzz_}"

# Seeds: the PyTorch files, and their data.pkl records for the pickle fuzzer.
corpus="$build/corpus"
rm -rf "$corpus" && mkdir -p "$corpus/archive" "$corpus/pickle" "$corpus/state"
testdata=${CKPT_TESTDATA:-tests/data/pytorch}
find "$testdata" -name '*.pt' -size -64k -exec cp {} "$corpus/archive/" \; 2>/dev/null || true
# torch 2.x optimizer and scheduler layouts (2.2 ... 2.14, and the refused ones under bad/),
# renamed by their path so that none overwrites another.
torch2x=${CKPT_TESTDATA_TORCH2X:-tests/data/torch2x}
find "$torch2x" -name '*.pt' -size -64k 2>/dev/null | while read -r f; do
  cp "$f" "$corpus/archive/torch2x-$(echo "${f#"$torch2x"/}" | tr / -)"
done
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
# safetensors seeds for the archive fuzzer (load() picks the format by content).
import json, struct
def st(tensors, meta=None):
    header, off, blob = {}, 0, b""
    if meta:
        header["__metadata__"] = meta
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blob += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + blob
open(f"{corpus}/archive/seed.safetensors", "wb").write(
    st({"w": ("F32", [2, 2], bytes(16)), "b": ("I64", [2], bytes(16)), "m": ("BOOL", [3], b"\1\0\1")},
       {"format": "pt"}))
open(f"{corpus}/archive/empty.safetensors", "wb").write(st({}))
# fuzz_state: random seeds; the fuzzer reads its choices (target, source, mutations) from them.
# Its sources include the torch2x files' state dicts, which it reads itself (fuzz/fuzz_state.cc).
for t in range(32):
    open(f"{corpus}/state/seed-{t:02d}", "wb").write(bytes([t]) + os.urandom(64))
PY

export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for t in "${targets[@]}"; do
  case "$t" in
    pickle) seeds="$corpus/pickle" ;;
    state) seeds="$corpus/state" ;;
    dist) seeds="fuzz/regressions/dist" ;;  # metadata.json of distributed checkpoints
    *) seeds="$corpus/archive" ;;
  esac
  bin="$build/fuzz/fuzz_$t"
  regressions="fuzz/regressions/$t"
  if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
    echo "== fuzz_$t: $(ls "$regressions" | wc -l) regression inputs"
    if ! "$bin" -runs=1 "$regressions"/* >"$build/fuzz_$t.regressions.log" 2>&1; then
      echo "fuzz_$t FAILED on a regression input:"; tail -40 "$build/fuzz_$t.regressions.log"; status=1
      continue
    fi
  fi
  mkdir -p "$corpus/$t-work"
  echo "== fuzz_$t for ${seconds}s"
  if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 -artifact_prefix="$build/crash-$t-" "$corpus/$t-work" "$seeds" 2>"$build/fuzz_$t.log"; then
    echo "fuzz_$t FAILED (the input is $build/crash-$t-*; add it to $regressions/):"; tail -50 "$build/fuzz_$t.log"
    status=1
  else
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$build/fuzz_$t.log" | tail -1)
    echo "fuzz_$t: ${execs:-?} executions in ${seconds}s, no crash"
    [ -z "${CKPT_FUZZ_STATS:-}" ] || echo "fuzz_$t $seconds ${execs:-0}" >>"$CKPT_FUZZ_STATS"
  fi
done
exit $status
