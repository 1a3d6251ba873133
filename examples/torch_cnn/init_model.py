#!/usr/bin/env python3
"""Writes the CNN's initial weights (fixed seed) as float32 safetensors for `gossipd bootstrap --model`.

    python3 init_model.py --out init.safetensors [--seed 0]

The file's __metadata__ has no 'arch' (that key names an MLP's layer sizes), so the bootstrap
serves it as an external model whose schema is its tensor table (SPEC §6.4): only
`gossipd peer --trainer external` peers join it, and every push must carry the same names and
shapes (cnn.py lists them).
"""
import argparse
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cnn  # noqa: E402


def write(path, seed):
    """Saves CNN() initialised with torch.manual_seed(SEED) to PATH; returns its parameter count."""
    torch.manual_seed(seed)
    tensors = cnn.state(cnn.CNN())
    save_file(tensors, path, metadata={"format": "torch-state-dict", "model": cnn.ARCH, "seed": str(seed)})
    return sum(t.numel() for t in tensors.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    n = write(a.out, a.seed)
    print(f"wrote {a.out}: {cnn.ARCH}, {n} float32 parameters, seed {a.seed}")


if __name__ == "__main__":
    main()
