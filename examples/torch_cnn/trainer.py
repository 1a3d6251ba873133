#!/usr/bin/env python3
"""An external trainer: trains the CNN of cnn.py on one shard of Fashion-MNIST for a gossip peer.

The peer (`gossipd peer --trainer external --control-socket SOCK`) holds the model and averages
it with the network; this process does the training, through two gossipctl operations in a loop:

    gossipctl pull --socket SOCK --out pulled.safetensors --output json    -> {"version": V, ...}
    load it (safetensors.torch.load_file), train --steps SGD steps on the shard,
    save it (safetensors.torch.save_file) and
    gossipctl push --socket SOCK --in pushed.safetensors --samples N --version V --output json

The node applies the change (pushed - pulled) to its current model, so averaging that happened
while this process trained is kept (Protocol/SPEC.md §5.12). Adam's moments stay in this
process between rounds. One line per round on stdout; exit 0 after --rounds, 1 when a
gossipctl call fails (its message is printed), 64 for bad arguments. A push the node
refuses with exit 70 (e.g. its version is no longer kept) is retried from a new pull.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cnn  # noqa: E402


class CallFailed(Exception):
    def __init__(self, message, code=None, status=None):
        super().__init__(message)
        self.code = code
        self.status = status


def gossipctl(args, ctl, sock, timeout):
    """Runs `gossipctl ARGS --socket SOCK --output json` and returns its JSON object.

    Raises CallFailed with gossipctl's exit code (69 unreachable or no model yet, 70 refused).
    """
    cmd = [ctl] + args + ["--socket", sock, "--output", "json", "--timeout", str(timeout)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        try:  # -o json: {"error": {"message": ..., "status": "UNAVAILABLE", ...}} on stdout
            status = json.loads(p.stdout.strip().splitlines()[-1])["error"].get("status")
        except (ValueError, IndexError, KeyError, TypeError, AttributeError):
            status = None
        raise CallFailed(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip() or p.stdout.strip()}", p.returncode, status)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise CallFailed(f"{' '.join(cmd)} printed no JSON object: {p.stdout!r}")


def load_into(model, path):
    """Loads a pulled safetensors file into MODEL, refusing a file whose names/shapes differ."""
    tensors = load_file(path)
    own = model.state_dict()
    if set(tensors) != set(own) or any(tensors[k].shape != own[k].shape for k in own):
        theirs = {k: list(v.shape) for k, v in tensors.items()}
        mine = {k: list(v.shape) for k, v in own.items()}
        raise CallFailed(f"the node's model {theirs} is not this CNN {mine}: start the bootstrap with "
                         "--model made by init_model.py")
    model.load_state_dict(tensors)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--socket", required=True, help="the peer's control socket")
    ap.add_argument("--gossipctl", default="gossipctl", help="path of the gossipctl binary")
    ap.add_argument("--data", required=True, help="directory with Fashion-MNIST's four idx .gz files")
    ap.add_argument("--shard", default="0/1", help="I/N: train on rows I, I+N, I+2N, ... (default 0/1)")
    ap.add_argument("--rounds", type=int, default=80, help="pull/train/push rounds")
    ap.add_argument("--steps", type=int, default=25, help="SGD steps per round")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    ap.add_argument("--cosine", action=argparse.BooleanOptionalAction, default=True,
                    help="cosine decay of the learning rate to 0 over the rounds (default on)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the batch order")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (several trainers share the cores)")
    ap.add_argument("--workdir", default=".", help="where the pulled/pushed files go")
    ap.add_argument("--timeout", type=float, default=60, help="seconds gossipctl waits for the node")
    ap.add_argument("--wait-model", type=float, default=60, help="seconds to retry the first pull while the peer onboards")
    ap.add_argument("--eval", action="store_true", help="print test accuracy after each round (slower)")
    a = ap.parse_args()
    try:
        index, count = (int(v) for v in a.shard.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        ap.exit(64, f"trainer.py: --shard '{a.shard}' must be I/N with 0 <= I < N, e.g. 1/4\n")
    if a.rounds < 1 or a.steps < 1 or a.batch < 1 or a.threads < 1:
        ap.exit(64, "trainer.py: --rounds, --steps, --batch and --threads must be positive\n")
    torch.set_num_threads(a.threads)
    os.makedirs(a.workdir, exist_ok=True)
    pulled, pushed = os.path.join(a.workdir, "pulled.safetensors"), os.path.join(a.workdir, "pushed.safetensors")

    x, y = cnn.shard(*cnn.load(a.data, "train"), index, count)
    test = cnn.load(a.data, "t10k") if a.eval else None
    model = cnn.CNN()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    gen = torch.Generator().manual_seed(a.seed * 1000 + index)
    order, pos = torch.randperm(len(x), generator=gen), 0
    tag = f"trainer {index}/{count}"
    done_steps, total_steps = 0, a.rounds * a.steps
    started, rounds, refused, onboarding_until = time.time(), 0, 0, time.time() + a.wait_model
    try:
        while rounds < a.rounds:
            t0 = time.time()
            try:
                got = gossipctl(["pull", "--out", pulled], a.gossipctl, a.socket, a.timeout)
            except CallFailed as e:
                # 69: no node on the socket yet; 70 UNAVAILABLE: the peer is still onboarding.
                starting = e.code == 69 or (e.code == 70 and e.status == "UNAVAILABLE")
                if starting and time.time() < onboarding_until:
                    time.sleep(0.2)
                    continue
                raise
            version = got["version"]
            load_into(model, pulled)
            total = 0.0
            for _ in range(a.steps):
                if a.cosine:  # decays to 0 over --rounds x --steps (redone rounds continue the schedule)
                    for g in opt.param_groups:
                        g["lr"] = a.lr * 0.5 * (1 + math.cos(math.pi * min(done_steps, total_steps) / total_steps))
                done_steps += 1
                if pos + a.batch > len(x):
                    order, pos = torch.randperm(len(x), generator=gen), 0
                idx = order[pos:pos + a.batch]
                pos += a.batch
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
            save_file(cnn.state(model), pushed)
            try:
                done = gossipctl(["push", "--in", pushed, "--samples", str(a.steps * a.batch), "--version", str(version),
                                  "--steps", str(a.steps)], a.gossipctl, a.socket, a.timeout)
            except CallFailed as e:
                # 70: the node refused, e.g. the pull's version is no longer kept (the model moved
                # on more than its kept versions while we trained): pull again and redo the round.
                if e.code != 70 or refused >= a.rounds:
                    raise
                refused += 1
                print(f"{tag}: push refused, pulling again: {e}", file=sys.stderr, flush=True)
                continue
            rounds += 1
            acc = f" test_accuracy {cnn.accuracy(model, *test):.4f}" if test else ""
            print(f"{tag} round {rounds} pulled_version {version} pushed_version {done.get('version', '-')} "
                  f"loss {total / a.steps:.4f}{acc} seconds {time.time() - t0:.2f}", flush=True)
    except CallFailed as e:
        print(f"{tag}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyError as e:
        print(f"{tag}: gossipctl's JSON has no {e} field; is it a gossipctl with pull/push?", file=sys.stderr, flush=True)
        sys.exit(1)
    print(json.dumps({"trainer": tag, "rounds": rounds, "refused": refused, "steps": rounds * a.steps,
                      "seconds": round(time.time() - started, 2)}), flush=True)

if __name__ == "__main__":
    main()
