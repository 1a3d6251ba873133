#!/usr/bin/env python3
"""An external trainer for gossip in numpy: the MLP of SPEC §6.4 on the bundled digits.

It joins a network through an external peer (`gossipd peer --trainer external`) and loops:

    pull  (ModelPull: the node writes its current model to a file; its version)
    train --local-steps SGD steps on this trainer's shard
    push  (ModelPush: the node reads the trained file, with the pull's version and the samples)

It speaks the two requests on the node's control socket itself (about 40 lines below, SPEC §2
and §5.12); `--gossipctl PATH` does the same through `gossipctl pull` / `gossipctl push`.

The node adds (trained - pulled) to its current model, so the averaging it did with other
peers meanwhile is kept (SPEC §5.12). Tensors: for architecture n0,...,nk, `layers.{i}.weight`
float32 [n(i+1), n(i)] and `layers.{i}.bias` float32 [n(i+1)]; ReLU after every layer but the
last, softmax cross-entropy on the logits. Inputs: digits' 64 pixels divided by 16; rows
0..1499 train, 1500..1796 held out (as the Swift peers).

With `--rounds 0` it trains at a constant rate until the network ends: when the node's
training has ended (the network converged, SPEC §5.9), a push is refused OUT_OF_RANGE (11);
the trainer pulls the final model once more and stops ("ended": true in its JSON line). A node
that its driver stops (UNAVAILABLE "stopping", or gone) stops it too ("node_stopped": true).

Needs python3 and numpy only (the `safetensors` package is used when installed). Prints one
JSON line at the end: {"rounds":R,"held_out_accuracy":A,...}.
"""
import argparse
import gzip
import json
import math
import os
import struct
import socket
import subprocess
import sys
import time
import zlib

# One BLAS thread per trainer: the matrices are small, and several trainers (and nodes) share
# the machine's cores; a thread pool per process made each step 20x slower on a loaded machine.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402  (after the thread settings)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def read_safetensors(path):
    """{name: float32 array} and the metadata of a safetensors file (numpy only)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {info['dtype']}, not F32")
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(info["shape"]).copy()
    return out, meta


def write_safetensors(path, tensors, meta=None):
    """Writes float32 tensors as safetensors (what `safetensors.numpy.save_file` writes)."""
    header, offset = {}, 0
    for name, a in tensors.items():
        n = a.size * 4
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + n]}
        offset += n
    if meta:
        header["__metadata__"] = {k: str(v) for k, v in meta.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
    os.replace(tmp, path)


def load_digits(path):
    with gzip.open(path, "rt") as f:
        arr = np.array([[float(v) for v in ln.split(",")] for ln in f if ln.strip()], dtype=np.float32)
    x, y = arr[:, :64] / 16.0, arr[:, 64].astype(np.int64)
    return (x[:1500], y[:1500]), (x[1500:], y[1500:])


def layers_of(tensors):
    k = 0
    while f"layers.{k}.weight" in tensors:
        k += 1
    if k == 0 or len(tensors) != 2 * k:
        raise SystemExit(f"the network's model is not the MLP of SPEC §6.4: tensors {sorted(tensors)}")
    return [tensors[f"layers.{i}.weight"] for i in range(k)], [tensors[f"layers.{i}.bias"] for i in range(k)]


def forward(Ws, bs, x):
    hs = [x]
    for i, (W, b) in enumerate(zip(Ws, bs)):
        z = hs[-1] @ W.T + b
        if i < len(Ws) - 1:
            z = np.maximum(z, 0)
        hs.append(z)
    return hs


def accuracy(Ws, bs, x, y):
    return float((forward(Ws, bs, x)[-1].argmax(axis=1) == y).mean())


class ControlSocket:
    """ModelPull / ModelPush on the node's control socket, spoken directly (SPEC §2, §5.12):
    no process per call. The node reads and writes the files itself (same machine)."""

    PULL, PUSH = 15, 16

    def __init__(self, path, timeout):
        self.path, self.timeout, self.rid = path, timeout, 0

    def _recv(self, s, n):
        b = b""
        while len(b) < n:
            part = s.recv(n - len(b))
            if not part:
                raise ConnectionError("the node closed the connection")
            b += part
        return b

    def call(self, mtype, payload):
        """Sends one request (flags END, no checksum); returns (status, reply payload)."""
        self.rid += 1
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.path)
            s.sendall(struct.pack("<IBBHIIII", 24 + len(payload), 2, 0x10, mtype, self.rid,
                                  len(payload), len(payload), 0) + payload)
            body, flags = b"", 0
            while not flags & 0x10:   # END
                (flen, _v, flags, _t, _rid, _craw, _mraw, _crc) = struct.unpack("<IBBHIIII", self._recv(s, 24))
                chunk = self._recv(s, flen - 24)
                if flags & 0x02:
                    raise ConnectionError("byte-shuffled reply: not expected from a control reply")
                body += zlib.decompress(chunk) if flags & 0x01 else chunk
        if flags & 0x08:   # error reply: u32 code, text
            (code, n) = struct.unpack("<II", body[:8])
            return code, body[8:8 + n].decode("utf-8", "replace")
        return 0, body

    @staticmethod
    def text(s):
        b = s.encode()
        return struct.pack("<I", len(b)) + b

    def pull(self, path):
        code, r = self.call(self.PULL, self.text(path))
        if code:
            return code, r
        version, form = struct.unpack("<QB", r[:9])
        return 0, {"version": version, "form": form}

    def push(self, path, version, samples, steps):
        code, r = self.call(self.PUSH, struct.pack("<QQQ", version, samples, steps) + self.text(path))
        if code:
            return code, r
        version, change = struct.unpack("<Qd", r[:16])
        return 0, {"version": version, "relative_l2_change": change}


class Gossipctl:
    """The same two operations through the gossipctl CLI (a process per call)."""

    def __init__(self, exe, socket_path, timeout):
        self.base = [exe, "--socket", socket_path, "--timeout", str(timeout), "-o", "json"]

    def run(self, *args):
        r = subprocess.run(self.base + list(args), capture_output=True, text=True)
        if r.returncode != 0:
            text = r.stderr.strip() or r.stdout.strip()
            try:   # -o json: {"error": {"status_code": N, ...}}: the node's status, as the socket gives it
                return json.loads(text)["error"]["status_code"], text
            except (ValueError, KeyError, TypeError):
                return r.returncode, text
        return 0, json.loads(r.stdout)

    def pull(self, path):
        return self.run("pull", "--out", path)

    def push(self, path, version, samples, steps):
        return self.run("push", "--in", path, "--version", str(version), "--samples", str(samples), "--steps", str(steps))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", required=True, help="the external peer's control socket (its --control-socket)")
    ap.add_argument("--gossipctl", default=None,
                    help="pull and push through this gossipctl executable (a process per call) instead of speaking to the socket directly")
    ap.add_argument("--shard", default="0/1", help="this trainer's shard of the 1500 training rows, I/N")
    ap.add_argument("--rounds", type=int, default=60,
                    help="pull -> train -> push cycles; 0: at a constant rate until the network ends (SPEC §5.12)")
    ap.add_argument("--local-steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.2, help="peak learning rate (cosine decay to 0 over the rounds)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--input-noise", type=float, default=0.4, help="std of Gaussian noise added to inputs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work-dir", default=None, help="where the pulled/trained files go (default: next to the socket)")
    ap.add_argument("--digits", default=os.path.join(ROOT, "Sources/GossipML/Resources/digits.csv.gz"))
    ap.add_argument("--timeout", type=float, default=30, help="seconds to wait for the node to have a model")
    a = ap.parse_args()

    i, n = (int(v) for v in a.shard.split("/"))
    (xtr, ytr), (xte, yte) = load_digits(a.digits)
    rng = np.random.default_rng(a.seed * 7919 + i)
    perm = np.random.default_rng(12345).permutation(len(ytr))
    mine = perm[i::n]
    x, y = xtr[mine], ytr[mine]
    work = a.work_dir or os.path.dirname(os.path.abspath(a.socket))
    pulled = os.path.join(work, f"pulled-{os.getpid()}.safetensors")
    trained = os.path.join(work, f"trained-{os.getpid()}.safetensors")
    ctl = Gossipctl(a.gossipctl, a.socket, 20) if a.gossipctl else ControlSocket(a.socket, 20)

    OUT_OF_RANGE = 11   # a push after the network's training ended (SPEC §5.12)
    total = a.rounds * a.local_steps
    until_end = a.rounds == 0
    ended = stopped = False
    step, cursor = 0, len(y)
    order = np.arange(len(y))
    vW = vb = None
    started, pushes, refused = time.time(), 0, 0
    deadline = time.time() + a.timeout
    r = 0
    def ask(what, call, *args):
        """(code, out) of a pull or push; None when the node stopped (gone, or UNAVAILABLE
        "stopping"), which ends a --rounds 0 trainer (with --rounds, a gone node is an error)."""
        try:
            code, out = call(*args)
        except OSError as e:
            if not until_end:
                raise SystemExit(f"{what} failed: the node is unreachable: {e}")
            return None
        return None if until_end and code == 14 and "stopping" in str(out) else (code, out)

    while until_end or r < a.rounds:
        answer = ask("pull", ctl.pull, pulled)
        if answer is None:
            stopped = True
            break
        code, out = answer
        if code != 0:
            # UNAVAILABLE (14, gossipctl: exit 70/69): the node is still onboarding.
            if time.time() < deadline and (code in (14, 69) or "UNAVAILABLE" in str(out)):
                time.sleep(0.1)   # the node is still onboarding
                continue
            raise SystemExit(f"pull failed ({code}): {out}")
        version = out["version"]
        tensors, _ = read_safetensors(pulled)
        Ws, bs = layers_of(tensors)
        if vW is None:
            vW, vb = [np.zeros_like(W) for W in Ws], [np.zeros_like(b) for b in bs]
        for _ in range(a.local_steps):
            if cursor + a.batch > len(y):
                rng.shuffle(order)
                cursor = 0
            idx = order[cursor:cursor + a.batch]
            cursor += a.batch
            xb = x[idx] + rng.normal(0, a.input_noise, (len(idx), x.shape[1])).astype(np.float32)
            yb = y[idx]
            lr = a.lr * 0.5 if until_end else a.lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
            hs = forward(Ws, bs, xb)
            z = hs[-1] - hs[-1].max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            d = p
            d[np.arange(len(yb)), yb] -= 1
            d /= len(yb)
            for li in range(len(Ws) - 1, -1, -1):
                gW = d.T @ hs[li] + a.weight_decay * Ws[li]
                gb = d.sum(axis=0) + a.weight_decay * bs[li]
                if li > 0:
                    d = (d @ Ws[li]) * (hs[li] > 0)
                vW[li] = a.momentum * vW[li] + gW
                vb[li] = a.momentum * vb[li] + gb
                Ws[li] = (Ws[li] - lr * vW[li]).astype(np.float32)
                bs[li] = (bs[li] - lr * vb[li]).astype(np.float32)
            step += 1
        out_tensors = {}
        for li in range(len(Ws)):
            out_tensors[f"layers.{li}.weight"] = Ws[li]
            out_tensors[f"layers.{li}.bias"] = bs[li]
        write_safetensors(trained, out_tensors)
        answer = ask("push", ctl.push, trained, version, a.local_steps * a.batch, a.local_steps)
        if answer is None:
            stopped = True
            break
        code, out = answer
        if code == OUT_OF_RANGE:
            ended = True   # the network converged: this round's training is not wanted any more
            print(f"training has ended: {out}", file=sys.stderr)
            break
        if code != 0:
            # An unknown (too old) version: the node moved on; pull again and redo the round.
            refused += 1
            print(f"push refused ({code}): {out}", file=sys.stderr)
            if (refused > a.rounds) if a.rounds else (refused > 100 and refused > pushes):
                raise SystemExit("too many refused pushes")
            continue
        pushes += 1
        r += 1
    try:
        code, out = ctl.pull(pulled)
    except OSError as e:   # the node has exited (after writing its final model, or stopped)
        code, out = -1, str(e)
    if code != 0:
        if not (ended or stopped):
            raise SystemExit(f"final pull failed ({code}): {out}")
        # The node may have written its final model and exited already: keep the last pull.
        print(f"the final pull failed ({code}): {out}; reporting the last pulled model", file=sys.stderr)
    if not os.path.exists(pulled):
        raise SystemExit("the node stopped before this trainer pulled a model")
    Ws, bs = layers_of(read_safetensors(pulled)[0])
    for f in (pulled, trained):
        try:
            os.remove(f)
        except OSError:
            pass
    print(json.dumps({"rounds": r, "pushes": pushes, "refused": refused, "steps": step, "ended": ended, "node_stopped": stopped,
                      "held_out_accuracy": accuracy(Ws, bs, xte, yte), "seconds": round(time.time() - started, 2)}))


if __name__ == "__main__":
    main()
