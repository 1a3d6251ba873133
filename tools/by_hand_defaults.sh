#!/usr/bin/env bash
# The README's by-hand network on one host, with the defaults (issue 10, item 6): a bootstrap
# without --arch (it suggests the dataset's architecture) and N peers given only their shard
# and --rounds (every training option from the dataset's defaults, flat out), all encrypted
# with a fresh network key on 127.0.0.1. Prints each peer's held-out accuracy after its last
# round and the mean, as `key: value` lines; compare with `gossipd demo` (same build).
#   tools/by_hand_defaults.sh [BIN_DIR (default .build/release)] [PEERS (4)] [ROUNDS (60)] [DATASET (digits)]
set -euo pipefail
BIN=${1:-.build/release}; N=${2:-4}; ROUNDS=${3:-60}; DATASET=${4:-digits}
CTL=${CTL:-$BIN/gossipctl}   # gossipctl may come from another build
DIR=$(mktemp -d /tmp/gossip-byhand.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
wait_file() { for _ in $(seq 1 3000); do [ -s "$1" ] && return 0; sleep 0.02; done; echo "no $1" >&2; exit 1; }
"$CTL" keygen network --out "$DIR/net.key" >/dev/null
"$BIN/gossipd" bootstrap --listen 127.0.0.1:0 --dataset "$DATASET" --network-key "$DIR/net.key" \
    --ready-file "$DIR/boot.ready" >"$DIR/boot.log" 2>&1 & PIDS+=($!)
wait_file "$DIR/boot.ready"
grep -o 'architecture [0-9,]*' "$DIR/boot.log" | head -1 | sed 's/architecture /architecture: /'
START=$(date +%s.%N)
for i in $(seq 0 $((N - 1))); do
  "$BIN/gossipd" peer --listen 127.0.0.1:0 --bootstrap "$(cat "$DIR/boot.ready")" --dataset "$DATASET" \
      --shard "$i/$N" --rounds "$ROUNDS" --network-key "$DIR/net.key" \
      --ready-file "$DIR/p$i.ready" >"$DIR/p$i.log" 2>&1 & PIDS+=($!)
done
for i in $(seq 0 $((N - 1))); do wait_file "$DIR/p$i.ready"; done
status() { "$CTL" --endpoint "$(cat "$DIR/p$1.ready")" --network-key "$DIR/net.key" -o json status; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
for i in $(seq 0 $((N - 1))); do
  until [ "$(status "$i" | field round)" -ge "$ROUNDS" ]; do sleep 0.2; done
done
END=$(date +%s.%N)
SUM=0
for i in $(seq 0 $((N - 1))); do
  A=$(status "$i" | field accuracy); echo "peer${i}_accuracy: $A"; SUM=$(python3 -c "print($SUM + $A)")
done
python3 -c "print('mean_accuracy: %.4f' % ($SUM / $N)); print('wall_s: %.1f' % ($END - $START))"
grep -h 'training settings' "$DIR/p0.log" | sed 's/.*info gossipd.peer: /settings: /; s/ \[GossipNode\].*//'
