#!/usr/bin/env bash
# The main job: ckpt-train trains a CNN on Fashion-MNIST through ckpt's run manager, is
# interrupted, continues exactly where it stopped, and hands its best model to Python; then the
# same on 2 data-parallel ranks under torchrun, one rank killed, finished by one process.
# Run it again and the training resumes (or, once finished, says there is nothing to do).
#   scripts/demo.sh                 # about 6 minutes on 2 cores, most of it training
#   EPOCHS=6 scripts/demo.sh        # train further
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target ckpt-train ckpt

run=runs/fashion-mnist
epochs=${EPOCHS:-4}
train=(build/ckpt-train --run-dir "$run" --epochs "$epochs")

latest_step() { # the latest committed checkpoint's step, or -1
  [ -f "$run/index.json" ] || { echo -1; return; }
  build/ckpt ls "$run" --json | /usr/bin/python3 -c \
    'import json,sys; print(max([c["step"] for c in json.load(sys.stdin) if c["latest"]], default=-1))'
}

start=$(latest_step)
if [ "$start" -lt 1000 ]; then
  echo "== 1. train (${train[*]}); Ctrl-C arrives in epoch 2"
  "${train[@]}" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null && [ "$(latest_step)" -lt 1000 ]; do sleep 1; done
  kill -INT "$pid" 2>/dev/null || true   # ckpt-train saves at the next step and exits 0
  wait "$pid"
else
  echo "== 1. $run already holds a run past step 1000 (step $start): no interruption this time"
fi

echo
echo "== 2. the same command again: it continues where it stopped"
"${train[@]}"

echo
echo "== 3. exact resume, shown on a quick run: one killed with SIGKILL mid-epoch and restarted,"
echo "      one uninterrupted; their final checkpoints must be the same bytes"
quick=(--epochs 1 --train-samples 6000 --save-every-steps 20)
rm -rf runs/exact-killed runs/exact-straight
build/ckpt-train "${quick[@]}" --run-dir runs/exact-straight >/dev/null
build/ckpt-train "${quick[@]}" --run-dir runs/exact-killed >/dev/null &
pid=$!
sleep 4
kill -KILL "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
echo "killed with SIGKILL; restarting:"
build/ckpt-train "${quick[@]}" --run-dir runs/exact-killed | grep -E "resumed|done"
a=runs/exact-straight/$(cat runs/exact-straight/latest) b=runs/exact-killed/$(cat runs/exact-killed/latest)
if cmp -s "$a" "$b"; then
  echo "bit-identical: $a == $b"
else
  echo "MISMATCH: $a != $b"; exit 1
fi

echo
echo "== 4. the run directory, through the ckpt tool"
build/ckpt ls "$run"
build/ckpt verify -q "$run" && echo "every checkpoint in $run verifies"
build/ckpt plot "$run" -o "$run/curves.svg"

echo
echo "== 5. Python loads best_model.pt into its own model"
/usr/bin/python3 - "$run" <<'PY'
import gzip, json, sys
import numpy as np, torch

sys.path.insert(0, "tools/ckpt-train")
from fashion_cnn import Net  # ckpt-train's CNN, as in doc/train.md

run = sys.argv[1]
model = Net()
model.load_state_dict(torch.load(f"{run}/best_model.pt"), strict=True)
model.eval()
d = "/usr/share/datasets/fashion-mnist"
x = torch.tensor(np.frombuffer(gzip.open(f"{d}/t10k-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 1, 28, 28),
                 dtype=torch.float32) / 255
y = torch.tensor(np.frombuffer(gzip.open(f"{d}/t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8), dtype=torch.long)
with torch.no_grad():
    acc = (model(x).argmax(1) == y).float().mean().item()
index = json.load(open(f"{run}/index.json"))
best = next(c for c in index["checkpoints"] if c["file"] == index["best"])
print(f"best_model.pt (epoch {best['epoch'] + 1}, step {best['step']}, val_loss {best['metrics']['val_loss']:.4f}): "
      f"test accuracy in PyTorch {100 * acc:.2f}%")
PY

echo
echo "== 6. several ranks: 2 data-parallel ranks under torchrun, one SIGKILLed and the group restarted,"
echo "      against an uninterrupted 2-rank run; then the same run directory finished by one process"
# Debian's torchrun on Python 3.11 needs --redirects 2 --tee 2; each run binds a free port.
port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
small=(--train-samples 4000 --val-samples 1000 --save-every-steps 20 --threads 1)
torchrun() { # torchrun N RUN_DIR [ckpt-train flags]
  local n=$1 dir=$2; shift 2
  /usr/bin/python3 -m torch.distributed.run --nnodes 1 --nproc_per_node "$n" --master_addr 127.0.0.1 \
    --master_port "$(port)" --redirects 2 --tee 2 --max_restarts 3 --monitor_interval 1 --no_python \
    build/ckpt-train --run-dir "$dir" "${small[@]}" "$@"
}
if [ -x build/ckpt-train ] && /usr/bin/python3 -c 'import torch.distributed' 2>/dev/null; then
  rm -rf runs/dist-straight runs/dist-killed
  torchrun 2 runs/dist-straight --epochs 2 | grep -E "^(data parallel|done)"
  echo "-- rank 1 SIGKILLs itself at step 50; torchrun restarts the group, which resumes:"
  CKPT_TRAIN_KILL_AT=50:1 torchrun 2 runs/dist-killed --epochs 2 2>&1 | grep -E "^(data parallel|resumed|done)"
  if build/ckpt diff runs/dist-straight@latest runs/dist-killed@latest >/dev/null &&
     cmp -s runs/dist-straight/best_model.pt runs/dist-killed/best_model.pt; then
    echo "bit-identical: the final checkpoints and best_model.pt of the killed and the uninterrupted 2-rank runs"
  else
    echo "MISMATCH between runs/dist-straight and runs/dist-killed"; exit 1
  fi
  echo "-- one process trains a third epoch of the 2-rank run directory:"
  build/ckpt-train --run-dir runs/dist-killed "${small[@]}" --epochs 3 | grep -E "^(resumed|notice|done)"
  build/ckpt ls runs/dist-killed
  build/ckpt verify -q runs/dist-killed && echo "every checkpoint in runs/dist-killed verifies"
  /usr/bin/python3 - <<'PY'
import sys, torch
sys.path.insert(0, "tools/ckpt-train")
from fashion_cnn import Net
model = Net()
model.load_state_dict(torch.load("runs/dist-killed/best_model.pt"), strict=True)
print("Python loads runs/dist-killed/best_model.pt (consolidated from the ranks' files) into its own model")
PY
fi

echo
echo "curves: $run/curves.svg; run 'scripts/demo.sh' again and the training resumes instead of starting over"
