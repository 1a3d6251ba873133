#!/bin/sh
# CI check: train digits briefly in Swift, export safetensors, re-evaluate it in numpy
# (and with the `safetensors` package when installed); accuracies must agree within 0.5%.
# Skips (exit 0) with a message when python3 or numpy is missing.
set -eu
cd "$(dirname "$0")/.."
if ! command -v python3 >/dev/null 2>&1; then
    echo "check_safetensors: SKIP: python3 not found"; exit 0
fi
if ! "${PYTHON:-python3}" -c 'import numpy' >/dev/null 2>&1; then
    echo "check_safetensors: SKIP: numpy not installed (pip install numpy)"; exit 0
fi
# Reuses the build of `swift test` (debug; GossipML is optimized there too) unless told otherwise.
SCRATCH="${SCRATCH_PATH:-.build}"
CONFIG="${CONFIG:-debug}"
PYTHON="${PYTHON:-python3}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
swift build --scratch-path "$SCRATCH" -c "$CONFIG" --product gossip-bench >/dev/null
"$SCRATCH/$CONFIG/gossip-bench" export-digits "$OUT/digits.safetensors" --epochs 20 | tee "$OUT/swift.txt"
ACC="$(sed -n 's/^swift_accuracy: //p' "$OUT/swift.txt")"
"$PYTHON" tools/check_safetensors.py "$OUT/digits.safetensors" --expect "$ACC" --tol 0.005
echo "check_safetensors: OK"
