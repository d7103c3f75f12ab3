#!/usr/bin/env bash
# Installs the Python package the way scripts/install-python.sh does, under $DESTDIR, and uses it
# from there with /usr/bin/python3 (nothing from the build tree on the path).
set -euo pipefail
build=$1 site=$2
rm -rf "$DESTDIR"
cmake --install "$build" --component python >/dev/null
test -f "$DESTDIR$site/ckpt/__init__.py"
cd "$(mktemp -d)"
PYTHONPATH="$DESTDIR$site" /usr/bin/python3 - <<'PY'
import ckpt, torch, os
assert os.path.dirname(ckpt.__file__).endswith("dist-packages/ckpt"), ckpt.__file__
ckpt.save({"w": torch.arange(4.0)}, "x.pt")
assert torch.equal(torch.load("x.pt")["w"], torch.arange(4.0))
assert torch.equal(ckpt.load("x.pt")["w"], torch.arange(4.0))
print("installed package works:", ckpt.__file__)
PY
