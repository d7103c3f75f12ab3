#!/usr/bin/env bash
# The main job: Fashion-MNIST training in C++ that checkpoints, crashes, resumes exactly — and
# hands its checkpoint to Python's torch.load.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target train_fashion_mnist ckpt

epochs=${EPOCHS:-3}
run=runs/demo reference=runs/demo-uninterrupted
rm -rf "$run" "$reference"

echo "== 1. train, and crash hard in epoch 2 (no checkpoint at that moment; the last one is at step 1400)"
set +e
build/train_fashion_mnist --run "$run" --epochs "$epochs" --crash-at-step 1537
status=$?
set -e
[ "$status" -eq 3 ] || { echo "expected the simulated crash (exit 3), got $status"; exit 1; }

echo
echo "== 2. run the same command again: it resumes from $run/last.pt"
build/train_fashion_mnist --run "$run" --epochs "$epochs"

echo
echo "== 3. the same training without interruption, for comparison"
build/train_fashion_mnist --run "$reference" --epochs "$epochs"
if cmp -s "$run/last.pt" "$reference/last.pt"; then
  echo "the interrupted-and-resumed run ended bit-for-bit where the uninterrupted run ended"
else
  echo "MISMATCH: the resumed run differs from the uninterrupted one"; exit 1
fi

echo
echo "== 4. the checkpoints, through the ckpt tool"
build/ckpt verify "$run/last.pt"
build/ckpt inspect --depth 1 "$run/last.pt"

echo
echo "== 5. Python's torch.load reads them; the best model scores the same in PyTorch"
/usr/bin/python3 - "$run" <<'PY'
import gzip, sys, numpy as np, torch, torch.nn as nn
run = sys.argv[1]
ck = torch.load(f"{run}/last.pt")
print(f"last.pt: epoch {ck['epoch']}, step {ck['step']}, metrics {ck['metrics']}")
print(f"         optimizer {type(ck['optimizer_state']).__name__} with {len(ck['optimizer_state']['state'])} parameter states, "
      f"lr {ck['optimizer_state']['param_groups'][0]['lr']:.3g}, scheduler step {ck['scheduler_state']['last_epoch']}")
best = torch.load(f"{run}/best.pt")
model = nn.Sequential(nn.Linear(784, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.2),
                      nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
model.load_state_dict(best["model_state"])
model.eval()
d = "/usr/share/datasets/fashion-mnist"
x = np.frombuffer(gzip.open(f"{d}/t10k-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 784)
y = np.frombuffer(gzip.open(f"{d}/t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8)
x = (torch.tensor(x, dtype=torch.float32) / 255 - 0.2860) / 0.3530
with torch.no_grad():
    acc = (model(x).argmax(1) == torch.tensor(y, dtype=torch.long)).float().mean().item()
print(f"best.pt (epoch {best['epoch'] + 1}): test accuracy in PyTorch {acc:.4f}, recorded by C++ {best['test_acc']:.4f}")
PY
