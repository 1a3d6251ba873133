#!/usr/bin/env python3
"""Runs the PyTorch example end to end: a bootstrap, N external peers, N trainers, on this machine.

    python3 examples/torch_cnn/run.py                     # 4 peers, Fashion-MNIST, the defaults
    python3 examples/torch_cnn/run.py --peers 2 --rounds 3 --steps 5 --json   # a quick check

1. init_model.py's CNN (torch.manual_seed(--seed)) is saved as init.safetensors;
2. `gossipd bootstrap --model init.safetensors` serves it (an external model: its tensor table is
   its schema, SPEC §6.4);
3. N `gossipd peer --trainer external` nodes join and fetch it (GetModel), then gossip;
4. N trainer.py processes (one per peer, shard i/N of the training set) pull, train --steps
   Adam steps, push, --rounds times;
5. when all trainers are done, every peer runs --final-gossips more exchanges (gossipctl gossip),
   then each peer's model is pulled and evaluated on the 10,000 test images.

Prints one line per peer (test accuracy, relative L2 distance to the peers' mean) and the wall
time; with --json one JSON object instead. Exit 0 when every trainer finished and every peer's
accuracy is at least --expect-accuracy (default 0: no check), 1 otherwise, 64 for bad arguments.
Every process it starts is stopped (by pid) when it ends, whatever happens.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)


def find_bin(given):
    """The directory holding gossipd and gossipctl: --bin, else .build/release, else .build/debug."""
    candidates = [given] if given else [os.path.join(ROOT, ".build", "release"), os.path.join(ROOT, ".build", "debug")]
    for d in candidates:
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("gossipd", "gossipctl")):
            return d
    sys.stderr.write(f"run.py: no gossipd and gossipctl in {' or '.join(candidates)}; build them (swift build -c release) "
                     "or pass --bin DIR\n")
    sys.exit(64)


class Procs:
    """The processes this run started; `stop()` ends each (SIGTERM, then SIGKILL) by pid."""

    def __init__(self):
        self.items = []

    def start(self, args, log, **kw):
        f = open(log, "w")
        p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        f.close()
        self.items.append(p)
        return p

    def stop(self):
        for p in self.items:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        until = time.time() + 10
        for p in self.items:
            try:
                p.wait(timeout=max(0.1, until - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_ready(path, proc, log, what, timeout):
    """Waits until PATH holds a line (the node's endpoint); fails with the log's tail otherwise."""
    until = time.time() + timeout
    while time.time() < until:
        try:
            with open(path) as f:
                s = f.read()
            if s.endswith("\n"):
                return s.strip()
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = open(log).read()[-2000:] if os.path.exists(log) else ""
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s (exit {proc.poll()}); its log ends:\n{tail}")


def ctl(bindir, sock, *args, timeout=60):
    """gossipctl ARGS --socket SOCK -o json; returns (exit code, JSON object or the error text)."""
    p = subprocess.run([os.path.join(bindir, "gossipctl"), *args, "--socket", sock, "-o", "json", "--timeout", str(timeout)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return p.returncode, (p.stderr.strip() or p.stdout.strip())
    return 0, json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=80, help="pull/train/push rounds per trainer")
    ap.add_argument("--steps", type=int, default=25, help="Adam steps per round")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    ap.add_argument("--seed", type=int, default=0, help="seed of the initial CNN and of the batch orders")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per trainer")
    ap.add_argument("--final-gossips", type=int, default=3, help="exchanges per peer after the trainers end")
    ap.add_argument("--data", default=os.environ.get("FASHION_MNIST", "/work/shared/data/fashion-mnist"),
                    help="directory with Fashion-MNIST's four idx .gz files (env FASHION_MNIST)")
    ap.add_argument("--bin", help="directory holding gossipd and gossipctl (default .build/release, else .build/debug)")
    ap.add_argument("--workdir", help="where logs, sockets and models go (default: a new temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) afterwards")
    ap.add_argument("--expect-accuracy", type=float, default=0.0, help="exit 1 unless every peer's test accuracy is at least this")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    if a.peers < 1 or a.rounds < 1 or a.steps < 1 or a.threads < 1 or a.final_gossips < 0:
        ap.exit(64, "run.py: --peers, --rounds, --steps, --threads must be positive, --final-gossips >= 0\n")
    if not all(os.path.exists(os.path.join(a.data, f"{s}-{k}-idx{n}-ubyte.gz"))
               for s in ("train", "t10k") for k, n in (("images", 3), ("labels", 1))):
        ap.exit(64, f"run.py: --data {a.data} lacks Fashion-MNIST's idx .gz files (train-images-idx3-ubyte.gz, ...)\n")
    bindir = find_bin(a.bin)
    # SIGTERM/SIGHUP end the run through `finally` (which stops every process it started).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, _f: sys.exit(128 + n))

    import torch  # after the argument checks: importing torch takes seconds
    from safetensors.torch import load_file
    import cnn
    import init_model

    torch.set_num_threads(a.threads)
    work = a.workdir or tempfile.mkdtemp(prefix="torch-cnn-")
    os.makedirs(work, exist_ok=True)
    say = (lambda m: None) if a.json else (lambda m: print(m, flush=True))
    procs = Procs()
    started = time.time()
    ok = True
    try:
        init = os.path.join(work, "init.safetensors")
        n = init_model.write(init, a.seed)
        say(f"initial CNN: {n} parameters, seed {a.seed} -> {init}")
        gossipd = os.path.join(bindir, "gossipd")
        log = os.path.join(work, "bootstrap.log")
        boot = procs.start([gossipd, "bootstrap", "--listen", "127.0.0.1:0", "--model", init, "--exit-with-parent",
                            "--ready-file", os.path.join(work, "bootstrap.ready")], log)
        boot_ep = wait_ready(os.path.join(work, "bootstrap.ready"), boot, log, "the bootstrap", 120)
        socks = []
        for i in range(a.peers):
            sock, log, ready = (os.path.join(work, f"peer{i}{x}") for x in (".sock", ".log", ".ready"))
            p = procs.start([gossipd, "peer", "--trainer", "external", "--listen", "127.0.0.1:0", "--bootstrap", boot_ep,
                             "--control-socket", sock, "--state-dir", os.path.join(work, f"peer{i}"), "--exit-with-parent",
                             "--ready-file", ready], log)
            wait_ready(ready, p, log, f"peer {i}", 120)
            socks.append(sock)
        say(f"bootstrap {boot_ep}, {a.peers} external peers ready after {time.time() - started:.1f} s")
        trainers = []
        for i, sock in enumerate(socks):
            log = os.path.join(work, f"trainer{i}.log")
            trainers.append((procs.start([sys.executable, os.path.join(HERE, "trainer.py"), "--socket", sock,
                                          "--gossipctl", os.path.join(bindir, "gossipctl"), "--data", a.data,
                                          "--shard", f"{i}/{a.peers}", "--rounds", str(a.rounds), "--steps", str(a.steps),
                                          "--batch", str(a.batch), "--lr", str(a.lr), "--seed", str(a.seed),
                                          "--threads", str(a.threads), "--workdir", os.path.join(work, f"trainer{i}")], log), log))
        summaries = []
        for i, (p, log) in enumerate(trainers):
            code = p.wait()
            lines = open(log).read().strip().splitlines()
            if code != 0:
                ok = False
                sys.stderr.write(f"run.py: trainer {i} exited {code}; its log ends:\n" + "\n".join(lines[-10:]) + "\n")
                continue
            summaries.append(json.loads(lines[-1]))
        trained_at = time.time()
        say(f"trainers done after {trained_at - started:.1f} s ({a.rounds} rounds x {a.steps} steps each)")
        for _ in range(a.final_gossips):
            for i, sock in enumerate(socks):
                code, out = ctl(bindir, sock, "gossip")
                if code != 0:
                    say(f"peer {i}: final gossip not done ({code}): {out}")
        x, y = cnn.load(a.data, "t10k")
        model = cnn.CNN()
        peers, states = [], []
        init_state = load_file(init)
        for i, sock in enumerate(socks):
            path = os.path.join(work, f"final{i}.safetensors")
            code, out = ctl(bindir, sock, "pull", "--out", path)
            if code != 0:
                raise RuntimeError(f"final pull from peer {i} failed ({code}): {out}")
            st = load_file(path)
            model.load_state_dict(st)
            states.append(st)
            moved = sum(((st[k] - init_state[k]) ** 2).sum().item() for k in st) ** 0.5
            peers.append({"peer": i, "version": out["version"], "test_accuracy": cnn.accuracy(model, x, y),
                          "moved_from_initial_l2": moved})
        mean = {k: sum(s[k] for s in states) / len(states) for k in states[0]}
        norm = sum((v ** 2).sum().item() for v in mean.values()) ** 0.5
        for p, st in zip(peers, states):
            p["relative_l2_to_mean"] = sum(((st[k] - mean[k]) ** 2).sum().item() for k in st) ** 0.5 / norm
        wall = time.time() - started
        result = {"peers": peers, "trainers": summaries, "min_test_accuracy": min(p["test_accuracy"] for p in peers),
                  "wall_seconds": round(wall, 1), "training_seconds": round(trained_at - started, 1),
                  "rounds": a.rounds, "steps": a.steps, "batch": a.batch, "workdir": work}
        for p in peers:
            say(f"peer {p['peer']}: test accuracy {p['test_accuracy'] * 100:.2f}%, {p['relative_l2_to_mean'] * 100:.3f}% "
                f"relative L2 from the peers' mean (version {p['version']})")
        say(f"wall time {wall:.1f} s (training {trained_at - started:.1f} s)")
        if a.json:
            print(json.dumps(result), flush=True)
        if result["min_test_accuracy"] < a.expect_accuracy:
            sys.stderr.write(f"run.py: a peer's test accuracy {result['min_test_accuracy']:.4f} is below "
                             f"--expect-accuracy {a.expect_accuracy}\n")
            ok = False
    except RuntimeError as e:
        sys.stderr.write(f"run.py: {e}\n")
        ok = False
    finally:
        procs.stop()
        if not a.keep and not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
        elif not ok or a.keep:
            sys.stderr.write(f"run.py: logs in {work}\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
