"""The PyTorch CNN of the external-trainer example: model, Fashion-MNIST loader, evaluation.

The network's model is this CNN's `state_dict()` as float32 safetensors; the tensor names and
shapes below are what the bootstrap's initial model (made by `init_model.py`) contains and what
every external peer's pull/push carries:

    conv1.weight [16, 1, 5, 5]    conv1.bias [16]
    conv2.weight [32, 16, 3, 3]   conv2.bias [32]
    fc1.weight   [128, 1568]      fc1.bias   [128]
    fc2.weight   [10, 128]        fc2.bias   [10]

(207,178 float32 parameters, about 0.83 MB.) The model has no buffers (no batch norm), so the
state dict is exactly the trainable parameters and an average of two models is a model.

Input: 28x28 images scaled to [0, 1], then (x - 0.2860) / 0.3530 (Fashion-MNIST's training
mean and standard deviation); output: logits of the 10 classes.
"""
import gzip
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN, STD = 0.2860, 0.3530
ARCH = "torch_cnn:conv16x5-pool-conv32x3-pool-fc128-fc10"


class CNN(nn.Module):
    """conv(1->16, 5x5, pad 2) relu pool2 -> conv(16->32, 3x3, pad 1) relu pool2 -> fc 1568->128 relu -> fc 128->10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def _idx(path):
    """Reads one gzip'd IDX file (the MNIST format) into a numpy array, checking its header."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes) but holds {body.size}")
    return body.reshape(dims)


def load(data_dir, split):
    """Fashion-MNIST `split` ('train' or 't10k') from DATA_DIR as normalised tensors (N,1,28,28) and labels (N,)."""
    images = _idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"))
    labels = _idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"))
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise ValueError(f"{data_dir}: {split} images {images.shape} do not match labels {labels.shape}")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    x = (x - MEAN) / STD
    return x, torch.from_numpy(labels.astype(np.int64))


def shard(x, y, index, count):
    """Rows index, index+count, ... (a 1/count slice that keeps the classes balanced)."""
    return x[index::count], y[index::count]


@torch.no_grad()
def accuracy(model, x, y, batch=2000):
    """Fraction of rows classified correctly."""
    model.eval()
    right = 0
    for i in range(0, len(x), batch):
        right += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return right / len(x)


def state(model):
    """The model's tensors as contiguous float32 CPU tensors (what safetensors writes)."""
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
