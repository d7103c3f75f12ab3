#!/usr/bin/env bash
# Installs every Debian package ckpt needs on a fresh Debian 12 machine.
# Idempotent: safe to run again. Needs root (or sudo).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  clang libclang-rt-14-dev              # libFuzzer + ASan/UBSan for the fuzz targets
  libtorch-dev                          # LibTorch 1.13 (find_package(Torch))
  libgloo-dev                           # c10d ProcessGroupGloo's headers: distributed checkpoints (ckpt_dist)
  python3-torch python3-numpy           # the real Python torch: interop tests, the Python package
  python3-dev pybind11-dev              # the Python package (ckpt._ckpt)
  zlib1g-dev libisal-dev                # CRC-32: ISA-L (pclmul) + zlib crc32_combine, inflate
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev
  libcurl4-openssl-dev                  # object storage (s3://): HTTP + AWS SigV4
  dataset-fashion-mnist                 # the demo's training data
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node + npm run s3rver, the pessimistic S3 server of the tests (scripts/install-s3rver.sh).
# Only when the commands are missing: a node from elsewhere (nodesource's bundles npm) would
# conflict with Debian's npm package.
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
