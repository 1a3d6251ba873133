#!/bin/bash
# others_rate_while_frozen: 4 peers (64,64,10 on digits, insecure, local), one SIGSTOPped for 10 s;
# prints the other three peers' rounds per second before and while it is frozen, and their ratio.
# Usage: tools/frozen_peer.sh [sync|push-sum]   (GOSSIP_BIN: directory of gossipd/gossipctl)
MODE=${1:-push-sum}
B=${GOSSIP_BIN:-$(cd "$(dirname "$0")/.." && pwd)/.build/debug}; D=$(mktemp -d); cd $D; trap "kill \$(cat $D/pids) 2>/dev/null; rm -rf $D" EXIT
$B/gossipd bootstrap --listen 127.0.0.1:0 --arch 64,64,10 --insecure --ready-file boot.ready > boot.log 2>&1 & echo $! > pids
for i in 1 2 3 4 5; do test -s boot.ready && break; sleep 1; done; BOOT=$(cat boot.ready)
for i in 0 1 2 3; do $B/gossipd peer --listen 127.0.0.1:0 --insecure --bootstrap $BOOT --dataset digits --shard $i/4 --averaging $MODE --lr 0.05 --batch 32 --ready-file p$i.ready --log-level info > p$i.log 2>&1 & echo $! >> pids; done
for i in 0 1 2 3; do while ! test -s p$i.ready; do sleep 0.2; done; done
sleep 3
r() { for i in 1 2 3; do $B/gossipctl status --endpoint $(cat p$i.ready) -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['round'])"; done | paste -sd+ | bc; }
a=$(r); sleep 10; b=$(r)
kill -STOP $(sed -n 2p pids)
c=$(r); sleep 10; d=$(r)
kill -CONT $(sed -n 2p pids)
normal=$(echo "($b-$a)/10" | bc -l); frozen=$(echo "($d-$c)/10" | bc -l)
echo "mode=$MODE others_rounds_per_s normal=$normal frozen=$frozen others_rate_while_frozen=$(echo "$frozen/$normal" | bc -l)"

