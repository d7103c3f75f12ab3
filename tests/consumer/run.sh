#!/usr/bin/env bash
# Builds and runs a consumer project: run.sh find_package|add_subdirectory SOURCE_DIR BUILD_DIR
set -euo pipefail
mode=$1 src=$2 build=$3
work=$build/consumer-$mode
mkdir -p "$work"
if [ "$mode" = find_package ]; then
  rm -rf "$work/prefix"
  cmake --install "$build" --prefix "$work/prefix" --component devel >/dev/null
  cmake -S "$src/tests/consumer/find_package" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
else
  cmake -S "$src/tests/consumer/add_subdirectory" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCKPT_SOURCE_DIR="$src" >/dev/null
fi
cmake --build "$work/build"
rm -rf "$work/run"
"$work/build/consumer" "$work/run"
"$work/build/consumer" "$work/run"   # again: resumes from the first run's checkpoint
if [ -x "$work/build/consumer_dist" ]; then  # one rank, its store on a free port
  port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  export RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port
  rm -rf "$work/run-dist"
  timeout 120 "$work/build/consumer_dist" "$work/run-dist"
  timeout 120 "$work/build/consumer_dist" "$work/run-dist"
fi
