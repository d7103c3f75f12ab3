#!/usr/bin/env bash
# The unit tests under sanitizers, built with clang:
#   build-asan: AddressSanitizer + UndefinedBehaviorSanitizer (leaks, overflows, UB): the
#               torch-free tests (util, io, format, the run manager) and the LibTorch bridge's
#               (modules, optimizers, schedulers, the sampler, TorchScript archives) — ckpt's code
#               instrumented, the system LibTorch not;
#   build-tsan: ThreadSanitizer, the torch-free tests (async saves, parallel reads and writes,
#               background commits, the lock and the walks are the threaded ones; the S3 client's
#               parallel parts, ranged GETs and streamed PUT against a scripted server).
# Any report fails the test: -fno-sanitize-recover=all, halt_on_error.
# Usage: scripts/sanitize.sh [asan|tsan]...   (both by default)
set -euo pipefail
cd "$(dirname "$0")/.."
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(asan tsan)

configure() {  # build dir, sanitizer flags, with torch (ON/OFF), test binaries...
  local dir=$1 flags=$2 torch=$3
  shift 3
  CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCKPT_BUILD_TORCH="$torch" -DCKPT_BUILD_TOOLS=OFF -DCKPT_BUILD_BENCH=OFF -DCKPT_BUILD_PYTHON=OFF \
    -DCKPT_INSTALL=OFF -DCKPT_BUILD_TESTS=ON \
    -DCMAKE_CXX_FLAGS="$flags -fno-sanitize-recover=all -fno-omit-frame-pointer" \
    -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
  cmake --build "$dir" --target "$@"
}

# The tests that measure resident memory compare against a plain allocator; under a sanitizer's
# allocator (quarantine, shadow memory) the figure means something else.
memory_tests='*ResidentMemory*'
status=0
for kind in "${kinds[@]}"; do
  case "$kind" in
    asan)
      tests=(ckpt_format_tests ckpt_manager_tests ckpt_s3_tests ckpt_torch_tests)
      configure build-asan "-fsanitize=address,undefined" ON "${tests[@]}"
      export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1
      export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
      filter="-$memory_tests"
      ;;
    tsan)
      tests=(ckpt_format_tests ckpt_manager_tests ckpt_s3_tests)
      configure build-tsan "-fsanitize=thread" OFF "${tests[@]}"
      export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
      filter="-$memory_tests"
      ;;
    *) echo "usage: scripts/sanitize.sh [asan|tsan]..." >&2; exit 2 ;;
  esac
  for t in "${tests[@]}"; do
    echo "== $kind: $t"
    if ! "build-$kind/tests/$t" --gtest_filter="$filter" --gtest_brief=1 >"build-$kind/$t.log" 2>&1; then
      echo "$kind: $t FAILED:"; tail -60 "build-$kind/$t.log"; status=1
    else
      grep -a "^\[  PASSED  \]" "build-$kind/$t.log" | sed "s/^/$kind $t: /"
    fi
  done
done
exit $status
