#!/usr/bin/env python3
"""numpy reference for gossip-bench train: same MLP (ReLU, softmax CE, SGD+momentum+wd), float32.

Prints `numpy_samples_per_s: N`. Run with OPENBLAS_NUM_THREADS=1 for a single-thread figure.
"""
import argparse
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="784,256,128,10")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    sizes = [int(s) for s in a.arch.split(",")]
    rng = np.random.default_rng(0)
    rows = 4096
    X = rng.random((rows, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], rows)
    Ws = [((rng.random((o, i), dtype=np.float32) * 2 - 1) * np.float32(np.sqrt(6 / i))) for i, o in zip(sizes, sizes[1:])]
    bs = [np.zeros(o, np.float32) for o in sizes[1:]]
    vW = [np.zeros_like(w) for w in Ws]
    vb = [np.zeros_like(b) for b in bs]
    lr, mu, wd = np.float32(0.01), np.float32(0.9), np.float32(1e-4)
    B = a.batch

    def step(k):
        xb = X[k:k + B]
        yb = y[k:k + B]
        hs = [xb]
        for li, (W, b) in enumerate(zip(Ws, bs)):
            z = hs[-1] @ W.T + b
            if li < len(Ws) - 1:
                np.maximum(z, 0, out=z)
            hs.append(z)
        z = hs[-1]
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        p = e / e.sum(axis=1, keepdims=True)
        d = p
        d[np.arange(B), yb] -= 1
        d /= B
        for li in range(len(Ws) - 1, -1, -1):
            gW = d.T @ hs[li]
            gb = d.sum(axis=0)
            if li > 0:
                dprev = d @ Ws[li]
                dprev *= hs[li] > 0
            gW += wd * Ws[li]
            gb += wd * bs[li]
            vW[li] *= mu; vW[li] += gW; Ws[li] -= lr * vW[li]
            vb[li] *= mu; vb[li] += gb; bs[li] -= lr * vb[li]
            if li > 0:
                d = dprev

    k = 0
    for _ in range(20):
        step(k); k = (k + B) % (rows - B)
    steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < a.seconds:
        for _ in range(20):
            step(k); k = (k + B) % (rows - B)
        steps += 20
    dt = time.perf_counter() - t0
    print(f"numpy_samples_per_s: {steps * B / dt:.0f}")


if __name__ == "__main__":
    main()
