#!/usr/bin/env python3
"""Independently check a gossip safetensors export with numpy.

Parses the safetensors header by hand (8-byte LE length, JSON, raw little-endian F32 data);
if the `safetensors` package is importable, loads the file with it too and checks both give
identical arrays. Then runs the MLP forward pass (ReLU hidden layers, argmax of logits) on
the held-out split of the dataset named in `__metadata__` using the documented preprocessing
x' = (x * input_scale - input_mean) / input_std, and prints `accuracy: X`.

usage: check_safetensors.py FILE [--data-dir DIR] [--digits CSV_GZ] [--expect ACC] [--tol 0.005]
  --data-dir   folder of MNIST/Fashion-MNIST IDX files (for dataset mnist / fashion-mnist)
  --digits     digits.csv.gz (default: the bundled Sources/GossipML/Resources/digits.csv.gz)
  --expect     fail (exit 1) unless |accuracy - expect| <= tol
"""
import argparse
import gzip
import json
import os
import struct
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise SystemExit(f"{path}: too small for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > 100_000_000 or 8 + n > len(raw):
        raise SystemExit(f"{path}: bad header length {n}")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = raw[8 + n:]
    tensors = {}
    end = 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        b, e = info["data_offsets"]
        if info["dtype"] != "F32":
            raise SystemExit(f"{name}: dtype {info['dtype']} is not F32")
        if b != end:
            raise SystemExit(f"{name}: offsets leave a gap or overlap")
        shape = tuple(info["shape"])
        if (e - b) != 4 * int(np.prod(shape, dtype=np.int64)):
            raise SystemExit(f"{name}: byte count does not match shape")
        tensors[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(shape)
        end = e
    if end != len(data):
        raise SystemExit("data section length does not match the offsets")
    return tensors, meta


def idx(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        b = f.read()
    ndim = b[3]
    dims = struct.unpack(">" + "I" * ndim, b[4:4 + 4 * ndim])
    return np.frombuffer(b, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(d, base):
    for cand in (base + ".gz", base):
        p = os.path.join(d, cand)
        if os.path.exists(p):
            return p
    raise SystemExit(f"missing {base}[.gz] in {d}")


def vec(s):
    return np.array([float(v) for v in s.split(",")], dtype=np.float64)


def test_split(meta, args):
    ds = meta.get("dataset", "")
    if ds in ("mnist", "fashion-mnist"):
        if not args.data_dir:
            raise SystemExit(f"dataset {ds}: pass --data-dir with the t10k IDX files")
        x = idx(find(args.data_dir, "t10k-images-idx3-ubyte")).reshape(-1, 784).astype(np.float64)
        y = idx(find(args.data_dir, "t10k-labels-idx1-ubyte")).astype(np.int64)
        return x, y
    if ds == "digits" or ds.startswith("csv:"):
        path = args.digits if ds == "digits" else ds[4:]
        op = gzip.open if path.endswith(".gz") else open
        with op(path, "rt") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        rows = [ln.split(",") for ln in lines]

        def numeric(r):
            try:
                [float(v) for v in r]
                return True
            except ValueError:
                return False
        if len(rows) > 1 and (not numeric(rows[0]) or len(rows[0]) != len(rows[1])):
            rows = rows[1:]
        arr = np.array(rows, dtype=np.float64)
        lc = int(meta.get("label_column", arr.shape[1] - 1))
        y = arr[:, lc].astype(np.int64)
        x = np.delete(arr, lc, axis=1)
        test = meta.get("split", "").split("test=")[-1]
        lo, hi = (int(v) for v in test.split("..<"))
        return x[lo:hi], y[lo:hi]
    raise SystemExit(f"unknown dataset '{ds}' in metadata")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--data-dir")
    ap.add_argument("--digits", default=os.path.join(ROOT, "Sources/GossipML/Resources/digits.csv.gz"))
    ap.add_argument("--expect", type=float)
    ap.add_argument("--tol", type=float, default=0.005)
    args = ap.parse_args()

    tensors, meta = read_safetensors(args.file)
    try:
        from safetensors.numpy import load_file
    except ImportError:
        print("safetensors package: not installed (numpy-only check)")
    else:
        ref = load_file(args.file)
        if set(ref) != set(tensors) or any(not np.array_equal(ref[k], tensors[k]) for k in ref):
            raise SystemExit("MISMATCH: safetensors package and hand parser disagree")
        print(f"safetensors package: identical arrays ({len(ref)} tensors)")

    sizes = [int(s) for s in meta["arch"].split(",")]
    layers = len(sizes) - 1
    x, y = test_split(meta, args)
    scale = float(meta.get("input_scale", "1"))
    h = (x * scale - vec(meta.get("input_mean", "0"))) / vec(meta.get("input_std", "1"))
    h = h.astype(np.float32)
    for i in range(layers):
        w = tensors[f"layers.{i}.weight"]
        b = tensors[f"layers.{i}.bias"]
        if w.shape != (sizes[i + 1], sizes[i]):
            raise SystemExit(f"layers.{i}.weight has shape {w.shape}, arch says {(sizes[i + 1], sizes[i])}")
        h = h @ w.T + b
        if i < layers - 1:
            h = np.maximum(h, 0)
    acc = float((h.argmax(axis=1) == y).mean())
    print(f"dataset: {meta.get('dataset')} rows: {len(y)} arch: {meta['arch']}")
    print(f"accuracy: {acc:.6f}")
    if args.expect is not None:
        diff = abs(acc - args.expect)
        print(f"expected: {args.expect:.6f} difference: {diff:.6f} tolerance: {args.tol}")
        if diff > args.tol:
            print("FAIL: accuracy differs from the Swift-reported value", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
