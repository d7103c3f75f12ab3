#!/usr/bin/env bash
# The long distributed soak: ckpt-train on 2 data-parallel ranks under torchrun, with three
# SIGKILLs per run at random steps of random ranks (torchrun restarts the group each time), RUNS
# times; each run must end bit-identical to an uninterrupted 2-rank run (final checkpoint,
# best_model.pt) and every checkpoint it lists must verify. The test command runs the same with
# fixed kills (interop.TrainDistributed); the library-level random-moment kills run there too.
#   scripts/soak-dist.sh [RUNS] [SEED]     # default 20 runs (60 kills), about 15 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
seed=${2:-$RANDOM}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target ckpt-train ckpt
work=$(mktemp -d /tmp/ckpt-soak-dist.XXXXXX)
trap 'rm -rf "$work"' EXIT
small=(--train-samples 2000 --val-samples 500 --epochs 2 --save-every-steps 10 --threads 1)
port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
torchrun() { # torchrun RUN_DIR
  timeout 600 /usr/bin/python3 -m torch.distributed.run --nnodes 1 --nproc_per_node 2 --master_addr 127.0.0.1 \
    --master_port "$(port)" --redirects 2 --tee 2 --max_restarts 3 --monitor_interval 1 --no_python \
    build/ckpt-train --run-dir "$1" "${small[@]}" >"$1.log" 2>&1
}
torchrun "$work/straight"
RANDOM=$seed
echo "== $runs runs of 3 SIGKILLs each, seed $seed"
for i in $(seq 1 "$runs"); do
  # Three kills at increasing steps (1..63 of 64), each of a random rank, one per torchrun attempt.
  a=$((1 + RANDOM % 20)) b=$((21 + RANDOM % 21)) c=$((42 + RANDOM % 22))
  kills="$a:$((RANDOM % 2)),$b:$((RANDOM % 2)),$c:$((RANDOM % 2))"
  dir="$work/run-$i"
  CKPT_TRAIN_KILL_AT=$kills torchrun "$dir" || { echo "run $i ($kills): torchrun failed"; tail -20 "$dir.log"; exit 1; }
  build/ckpt verify -q "$dir" || { echo "run $i ($kills): a checkpoint does not verify"; exit 1; }
  if build/ckpt diff "$work/straight@latest" "$dir@latest" >/dev/null &&
     cmp -s "$work/straight/best_model.pt" "$dir/best_model.pt"; then
    echo "run $i: kills $kills -> bit-identical"
  else
    echo "run $i: kills $kills -> MISMATCH"; exit 1
  fi
  rm -rf "$dir" "$dir.log"
done
echo "soak: $runs runs, $((3 * runs)) kills, all bit-identical"
