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
