#!/usr/bin/env bash
# Installs s3rver 3.7.1 (npm), the pessimistic local S3 server of tests/s3/test_s3rver.py, into
# build/s3rver (or $1), from the pinned tests/s3/s3rver/package.json + package-lock.json with
# `npm ci`. Idempotent: a no-op when that folder already holds an install of the same lock file.
#   scripts/install-s3rver.sh && node build/s3rver/node_modules/s3rver/bin/s3rver.js --version
# Needs node and npm (scripts/setup.sh installs them when missing) and the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."

pinned=tests/s3/s3rver
dest=${1:-build/s3rver}

if cmp -s "$pinned/package-lock.json" "$dest/package-lock.json" &&
   [ -f "$dest/node_modules/s3rver/bin/s3rver.js" ]; then
  exit 0
fi
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "install-s3rver.sh: '$tool' is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done

# Install into a fresh folder beside the destination and move it in whole, so an interrupted
# install never looks finished (the check above compares the lock file copied last).
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d "$dest.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$pinned/package.json" "$pinned/package-lock.json" "$tmp/"
(cd "$tmp" && npm ci --no-audit --no-fund --omit=dev --loglevel=error >/dev/null)
version=$(node -p 'JSON.parse(require("fs").readFileSync(process.argv[1])).version' "$tmp/node_modules/s3rver/package.json")
[ "$version" = 3.7.1 ] || { echo "install-s3rver.sh: got s3rver $version, expected 3.7.1" >&2; exit 1; }
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "s3rver $version installed in $dest"
