#!/usr/bin/env bash
# The long kill -9 soak: trains through the run manager with frequent saves (sync and async
# alternating) and kills it with SIGKILL at random moments, N times in all, checking after each
# kill that every listed checkpoint verifies and at the end of each run that it is bit-identical
# to an uninterrupted one. The test command runs the same test with 30 kills.
#   scripts/soak.sh [KILLS] [SEED]        # default 300 kills
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-300}
seed=${2:-$RANDOM}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target train_driver ckpt
echo "== $kills SIGKILLs, seed $seed"
cd tests/interop
CKPT_KILLS=$kills CKPT_SEED=$seed CKPT_TRAIN=../../build/tests/train_driver CKPT_BIN=../../build/ckpt \
  /usr/bin/python3 -m unittest -v test_manager.KillNine
