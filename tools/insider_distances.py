#!/usr/bin/env python3
"""Honest exchange distances from peer logs, replayed against the outlier bound (SPEC §5.3).

Run a network with debug logs, e.g. `gossipd demo --log-level debug` (it prints its log
directory), then: `python3 tools/insider_distances.py DIR [DIR ...]`. It reads every
DIR/peer*.log ("exchanged distance_before=" = a reply installed, "averaged distance=" = a
request installed), prints the largest distances, the ratio of each distance to the median of
the previous W accepted ones, and how many honest exchanges the bound would have refused for a
few parameter sets (W, N, K, FLOOR, WARMUP), the first being the reference values.
"""
import glob, re, statistics, sys

def sequences(dirs):
    out = {}
    for d in dirs:
        for f in sorted(glob.glob(d + "/peer*.log")):
            req, rep = [], []
            for line in open(f, errors="replace"):
                m = re.search(r"distance_before=([0-9.e+-]+) .*exchanged", line)
                if m: rep.append(float(m.group(1)))
                m = re.search(r" distance=([0-9.e+-]+) .*averaged", line)
                if m: req.append(float(m.group(1)))
            out[f] = (req, rep)
    return out

def replay(seq, W, N, K, FLOOR, WARMUP):
    hist, refused, worst = [], 0, 0.0
    for d in seq:
        bound = WARMUP if len(hist) < N else max(FLOOR, K * statistics.median(hist))
        worst = max(worst, d / bound)
        if d <= bound: hist = (hist + [d])[-W:]
        else: refused += 1
    return refused, worst

def main(dirs):
    seqs = sequences(dirs)
    req = [d for r, _ in seqs.values() for d in r]
    rep = [d for _, p in seqs.values() for d in p]
    if not req or not rep:
        sys.exit("no distances found: run the peers with --log-level debug")
    print(f"requests: {len(req)} distances, max {max(req):.4f}; replies: {len(rep)}, max {max(rep):.4f}")
    for W in (8, 16, 32):
        ratios = sorted(seq[i] / statistics.median(seq[max(0, i - W):i])
                        for r, p in seqs.values() for seq in (r, p) for i in range(4, len(seq)))
        print(f"W {W}: distance / median(previous W) p50 {ratios[len(ratios) // 2]:.2f} "
              f"p99 {ratios[int(len(ratios) * .99)]:.2f} max {ratios[-1]:.2f}")
    for params in [(16, 4, 4, 0.05, 0.75), (16, 4, 3, 0.05, 0.75), (16, 4, 2.5, 0.02, 0.5), (8, 4, 3, 0.02, 0.5)]:
        refused, worst = 0, 0.0
        for r, p in seqs.values():
            for seq in (r, p):
                a, w = replay(seq, *params)
                refused += a
                worst = max(worst, w)
        print(f"W,N,K,FLOOR,WARMUP = {params}: honest refused {refused}, largest distance/bound {worst:.3f}")

if __name__ == "__main__":
    if len(sys.argv) < 2: sys.exit(__doc__)
    main(sys.argv[1:])
