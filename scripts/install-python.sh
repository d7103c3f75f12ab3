#!/usr/bin/env bash
# Installs the Python package `ckpt` for Debian's /usr/bin/python3 (into
# /usr/local/lib/python3.*/dist-packages), from Debian packages only.
#   scripts/install-python.sh && /usr/bin/python3 -c "import ckpt"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build build --target _ckpt
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
"${sudo_cmd[@]}" cmake --install build --component python
/usr/bin/python3 -c 'import ckpt; print("ckpt installed:", ckpt.__file__)'
