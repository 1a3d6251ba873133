#!/usr/bin/env python3
"""Check with numpy that the averaging rule of Protocol/SPEC.md §5.3 is reproduced bit for bit.

Reads the `averaging_example` block of the spec (the same block that
Tests/GossipMLTests/AveragingRuleTests.swift checks against the Swift kernel), computes
    ca = float32(a / (a + b)), cb = float32(b / (a + b))      (float64, one rounding each)
    out = own * ca + req * cb                                 (float32 arrays: unfused)
and compares the float32 bit patterns with the spec's. Also checks the spec's two remarks: a
fused multiply-add differs on row 4, and rounding a = 16777217 to float32 first changes cb.
Prints `check_averaging: OK` and exits 0, or names the first mismatch and exits 1.
usage: check_averaging.py [SPEC.md]
"""
import os
import sys
from fractions import Fraction

import numpy as np


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    spec = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "Protocol", "SPEC.md")
    lines = open(spec, encoding="utf-8").read().split("\n")
    start = next((i for i, l in enumerate(lines) if l.startswith("averaging_example ")), None)
    if start is None:
        sys.exit("check_averaging: FAIL: no averaging_example block in " + spec)
    fields = dict(f.split("=") for f in lines[start].split()[1:])
    a, b = float(fields["a"]), float(fields["b"])
    rows = []
    for l in lines[start + 2:]:
        parts = l.split()
        if len(parts) != 3:
            break
        rows.append([int(p, 16) for p in parts])
    if len(rows) < 4:
        sys.exit("check_averaging: FAIL: the example has %d rows" % len(rows))
    bits = np.array(rows, dtype=np.uint32)
    own, req, want = (bits[:, i].view(np.float32) for i in range(3))
    ca, cb = np.float32(a / (a + b)), np.float32(b / (a + b))
    out = own * ca + req * cb
    got = out.view(np.uint32)
    for i in range(len(rows)):
        if got[i] != bits[i, 2]:
            sys.exit("check_averaging: FAIL: row %d: numpy gives %08x, SPEC says %08x" % (i + 1, got[i], bits[i, 2]))

    # Row 4 with one fused multiply-add, rounded exactly (Fraction), must differ.
    def f32_nearest(v):
        x = np.float32(float(v))
        cands = [np.nextafter(x, np.float32(-np.inf)), x, np.nextafter(x, np.float32(np.inf))]
        return min(cands, key=lambda c: (abs(Fraction(float(c)) - v), int(c.view(np.uint32)) & 1))
    fused = f32_nearest(Fraction(float(own[3])) * Fraction(float(ca)) + Fraction(float(req[3] * cb)))
    if fused.view(np.uint32) == got[3]:
        sys.exit("check_averaging: FAIL: row 4 does not tell fused from unfused")
    cb_exact = np.float32(3.0 / (16777217.0 + 3.0)).view(np.uint32)
    cb_rounded = np.float32(3.0 / (float(np.float32(16777217.0)) + 3.0)).view(np.uint32)
    if (cb_exact, cb_rounded) != (0x343FFFFD, 0x343FFFFE):
        sys.exit("check_averaging: FAIL: cb for a=16777217, b=3 is %08x (rounded first: %08x)" % (cb_exact, cb_rounded))
    print("check_averaging: OK (%d rows, a=%g b=%g, numpy %s)" % (len(rows), a, b, np.__version__))


if __name__ == "__main__":
    main()
