#!/usr/bin/env python3
"""Test accuracy of a CNN model file (e.g. `gossipctl pull --out F` or `gossipctl model --out F`).

    python3 evaluate.py --model F.safetensors [--data DIR]   -> {"test_accuracy": 0.91, "tensors": 8}

Exit 0 with one JSON line; 1 when the file is not this CNN (names/shapes differ) or unreadable.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cnn  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=os.environ.get("FASHION_MNIST", "/work/shared/data/fashion-mnist"))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = cnn.CNN()
    try:
        tensors = load_file(a.model)
        model.load_state_dict(tensors)
    except Exception as e:  # safetensors and torch raise several types; all mean "not this CNN"
        sys.exit(f"evaluate.py: {a.model} is not this CNN's model: {e}")
    x, y = cnn.load(a.data, "t10k")
    print(json.dumps({"test_accuracy": cnn.accuracy(model, x, y), "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
