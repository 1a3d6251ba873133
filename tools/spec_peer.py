#!/usr/bin/env python3
"""spec_peer.py: an independent client of the gossip wire protocol, written from
Protocol/SPEC.md alone (not from the Swift sources or the other Python tools).

    python3 tools/spec_peer.py --bin .build/debug            # codec + a real node
    python3 tools/spec_peer.py --vectors-only                 # codec only

What it does:
  a. a frame codec (header, flags, chunking, zlib + byte shuffle, CRC-32) and the message
     bodies of SPEC 5-8, checked against every golden vector in Protocol/vectors/
     (decode, re-encode with the vector's parameters, compare bytes);
  b. starts `gossipd bootstrap` and `gossipd peer --dataset digits --rounds 1` itself on
     ports the OS picks (`--listen 127.0.0.1:0`, the daemon prints `listening HOST:PORT`,
     README), waits until the peer's training rounds are done (it then only averages, so
     its model changes only by exchanges: deterministic), then: Status, GetModel, Reserve +
     GossipExchange in F32 (the reply must be the average of SPEC 5.3's rule, bit for bit,
     and GetModel afterwards must equal it), then the same with a BF16 and an I8 request
     (SPEC 6.5: both sides compute the same average of the two dequantized contributions);
  c. hostile frames and bodies, each checked for the status and the connection behaviour
     SPEC documents, and for the node staying up with its model unchanged; then the node as
     the caller (TriggerGossip on its control socket to a responder run here: an honest reply
     is installed verbatim, a reply with a weight over the cap, an outlier model or a NaN is
     refused), a push-sum peer (pushes merged bit for bit, mass cap, SPEC 5.5) and a node with
     a network key refusing a plaintext client (SPEC 13.8);
  d. prints `spec_peer: OK` and exits 0, or `spec_peer: MISMATCH (SPEC x): ...` and exits 1.

Dependencies: Python 3, numpy, the standard library.
"""

import argparse
import json
import math
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# ---------------------------------------------------------------- constants (SPEC 2-4, 8, 11)
VERSION = 2
HEADER = 24
F_COMPRESSED, F_SHUFFLED, F_RESPONSE, F_ERROR, F_END, F_CHECKSUMMED = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
T_REGISTER, T_GETMODEL, T_EXCHANGE, T_STATUS, T_PING, T_STOP, T_TRIGGER = 1, 2, 3, 4, 5, 6, 7
T_PUSHSUM, T_RESERVE, T_VOTES, T_WAIT, T_PROBE, T_PROBEREQ, T_ANNOUNCE = 8, 9, 10, 11, 12, 13, 14
T_PULL, T_PUSH, T_CONNECTION = 15, 16, 0xFFFF
OK, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED = 0, 3, 5, 7, 8
FAILED_PRECONDITION, ABORTED, UNIMPLEMENTED, UNAVAILABLE, DATA_LOSS = 9, 10, 12, 14, 15
MODEL_REJECTED = 17
MAX_FRAME = 16 * 1024 * 1024
DT_F32, DT_F16, DT_BF16, DT_I8 = 1, 2, 3, 4
CAP = 4.0


class Mismatch(Exception):
    """The first place where this client and SPEC (or the node) disagree."""

    def __init__(self, section, what):
        super().__init__(f"(SPEC {section}): {what}")
        self.section = section


class WireError(Exception):
    """A malformed input found by this decoder: the status SPEC gives it."""

    def __init__(self, code, what):
        super().__init__(f"status {code}: {what}")
        self.code = code


def check(cond, section, what):
    if not cond:
        raise Mismatch(section, what)


# ---------------------------------------------------------------- byte shuffle, CRC (SPEC 7)
def shuffle(raw):
    n = len(raw) // 4
    a = np.frombuffer(raw[: 4 * n], dtype=np.uint8).reshape(n, 4)
    return a.T.tobytes() + bytes(raw[4 * n:])


def unshuffle(data):
    n = len(data) // 4
    a = np.frombuffer(data[: 4 * n], dtype=np.uint8).reshape(4, n)
    return a.T.tobytes() + bytes(data[4 * n:])


def inflate_exact(comp, raw_len):
    """Inflate one zlib stream to exactly raw_len bytes (SPEC 7 statuses)."""
    d = zlib.decompressobj(15)
    try:
        out = d.decompress(comp, raw_len)
    except zlib.error as e:
        raise WireError(DATA_LOSS, f"corrupt zlib stream: {e}")
    if d.unconsumed_tail and len(out) >= raw_len:
        # more input remains though the declared size is reached: a bomb or trailing data
        try:
            more = d.decompress(d.unconsumed_tail, 1)
        except zlib.error as e:
            raise WireError(DATA_LOSS, f"corrupt zlib stream: {e}")
        if more:
            raise WireError(RESOURCE_EXHAUSTED, "zlib stream inflates past chunk_raw_length")
    if not d.eof:
        if len(out) < raw_len:
            raise WireError(INVALID_ARGUMENT, "truncated zlib stream")
        raise WireError(RESOURCE_EXHAUSTED, "zlib stream inflates past chunk_raw_length")
    if d.unused_data:
        raise WireError(INVALID_ARGUMENT, "trailing bytes after the zlib stream")
    if len(out) != raw_len:
        raise WireError(INVALID_ARGUMENT, f"zlib stream inflates to {len(out)}, not {raw_len}")
    return out


# ---------------------------------------------------------------- frames (SPEC 2, 3, 9)
def encode_message(mtype, rid, payload, response=False, error=False, level=None,
                   shuffled=False, checksum=True, chunk_bytes=4 * 1024 * 1024, version=VERSION):
    """Encode one message as its frames; `level` None = uncompressed."""
    payload = bytes(payload)
    total = len(payload)
    chunks = [payload[i:i + chunk_bytes] for i in range(0, total, chunk_bytes)] or [b""]
    out = bytearray()
    for k, raw in enumerate(chunks):
        flags = (F_RESPONSE if response else 0) | (F_ERROR if error else 0)
        if k == len(chunks) - 1:
            flags |= F_END
        body = raw
        if level is not None:
            flags |= F_COMPRESSED
            if shuffled:
                flags |= F_SHUFFLED
                body = shuffle(raw)
            body = zlib.compress(body, level)
        crc = 0
        if checksum:
            flags |= F_CHECKSUMMED
            crc = zlib.crc32(body)
        out += struct.pack("<IBBHIIII", HEADER + len(body), version, flags, mtype, rid,
                           len(raw), total, crc)
        out += body
    return bytes(out)


def parse_header(h):
    length, ver, flags, mtype, rid, chunk, total, crc = struct.unpack("<IBBHIIII", h)
    return dict(length=length, version=ver, flags=flags, type=mtype, id=rid, chunk=chunk,
                total=total, crc=crc)


def check_header(hd, max_frame=MAX_FRAME):
    """The header checks of SPEC 2 that need no payload; raise WireError."""
    if hd["length"] < HEADER:
        raise WireError(INVALID_ARGUMENT, "frame_length < 24")
    if hd["length"] > max_frame:
        raise WireError(RESOURCE_EXHAUSTED, "frame_length > maxFrameBytes")
    if hd["version"] != VERSION:
        raise WireError(UNIMPLEMENTED, f"protocol version {hd['version']} is not supported")
    f = hd["flags"]
    if f & 0xC0:
        raise WireError(INVALID_ARGUMENT, "reserved flag bit")
    if (f & F_SHUFFLED and not f & F_COMPRESSED) or (f & F_ERROR and not f & F_RESPONSE):
        raise WireError(INVALID_ARGUMENT, "SHUFFLED without COMPRESSED or ERROR without RESPONSE")
    if hd["type"] == 0:
        raise WireError(INVALID_ARGUMENT, "message_type 0")
    if hd["type"] == T_CONNECTION and not f & F_ERROR:
        raise WireError(INVALID_ARGUMENT, "type 0xFFFF without ERROR")
    if hd["chunk"] > hd["total"]:
        raise WireError(INVALID_ARGUMENT, "chunk_raw_length > message_raw_length")
    plen = hd["length"] - HEADER
    if f & F_COMPRESSED:
        if plen == 0:
            raise WireError(INVALID_ARGUMENT, "compressed frame with empty payload")
        if plen > hd["chunk"] + hd["chunk"] // 8 + 64:
            raise WireError(RESOURCE_EXHAUSTED, "compressed payload too large")
    elif hd["chunk"] != plen:
        raise WireError(INVALID_ARGUMENT, "chunk_raw_length != payload size")
    if hd["crc"] != 0 and not f & F_CHECKSUMMED:
        raise WireError(INVALID_ARGUMENT, "checksum without CHECKSUMMED")


def frame_payload(hd, body):
    if hd["flags"] & F_CHECKSUMMED and zlib.crc32(body) != hd["crc"]:
        raise WireError(DATA_LOSS, "checksum mismatch")
    if hd["flags"] & F_COMPRESSED:
        raw = inflate_exact(body, hd["chunk"])
        if hd["flags"] & F_SHUFFLED:
            raw = unshuffle(raw)
        return raw
    return body


class Assembler:
    """Reassembles messages from frames (SPEC 9); one message in progress at a time."""

    def __init__(self):
        self.cur = None

    def feed(self, hd, body):
        raw = frame_payload(hd, body)
        if self.cur is None:
            self.cur = dict(type=hd["type"], id=hd["id"], flags=hd["flags"], total=hd["total"],
                            buf=bytearray(), frames=[])
        c = self.cur
        if (hd["type"], hd["id"], hd["total"]) != (c["type"], c["id"], c["total"]) or \
                (hd["flags"] & (F_RESPONSE | F_ERROR)) != (c["flags"] & (F_RESPONSE | F_ERROR)):
            raise WireError(INVALID_ARGUMENT, "frame of another message before END_STREAM")
        c["buf"] += raw
        c["frames"].append(hd)
        if len(c["buf"]) > c["total"]:
            raise WireError(INVALID_ARGUMENT, "chunk overruns message_raw_length")
        if hd["flags"] & F_END:
            if len(c["buf"]) != c["total"]:
                raise WireError(INVALID_ARGUMENT, "END_STREAM short of message_raw_length")
            self.cur = None
            return dict(type=c["type"], id=c["id"], flags=c["flags"] | hd["flags"],
                        payload=bytes(c["buf"]), frames=c["frames"])
        return None


def decode_stream(data):
    """All messages in a byte string (a vector file's frames)."""
    out, off, asm = [], 0, Assembler()
    while off < len(data):
        check(len(data) - off >= HEADER, "2", "stream ends inside a header")
        hd = parse_header(data[off:off + HEADER])
        check_header(hd)
        body = data[off + HEADER: off + hd["length"]]
        check(len(body) == hd["length"] - HEADER, "2", "stream ends inside a frame")
        m = asm.feed(hd, body)
        if m:
            out.append(m)
        off += hd["length"]
    check(asm.cur is None, "9", "stream ends inside a chunked message")
    return out


# ---------------------------------------------------------------- body fields (SPEC 5)
class R:
    """Reads the fields of SPEC 5 from a payload; raises WireError for malformed input."""

    def __init__(self, buf, off=0, max_name=256, max_text=65536, max_peers=1024):
        self.b, self.o = buf, off
        self.max_name, self.max_text, self.max_peers = max_name, max_text, max_peers

    def need(self, n, what):
        if self.o + n > len(self.b):
            raise WireError(INVALID_ARGUMENT, f"{what} runs past the payload at {self.o}")

    def _u(self, fmt, n, what):
        self.need(n, what)
        v = struct.unpack_from(fmt, self.b, self.o)[0]
        self.o += n
        return v

    def u8(self, w="u8"): return self._u("<B", 1, w)
    def u16(self, w="u16"): return self._u("<H", 2, w)
    def u32(self, w="u32"): return self._u("<I", 4, w)
    def u64(self, w="u64"): return self._u("<Q", 8, w)
    def f64(self, w="f64"): return self._u("<d", 8, w)

    def raw(self, n, w="bytes"):
        self.need(n, w)
        v = self.b[self.o:self.o + n]
        self.o += n
        return bytes(v)

    def _utf8(self, n, limit, w):
        if n > limit:
            raise WireError(RESOURCE_EXHAUSTED, f"{w} is {n} bytes")
        try:
            return self.raw(n, w).decode("utf-8")
        except UnicodeDecodeError:
            raise WireError(INVALID_ARGUMENT, f"{w} is not UTF-8")

    def str(self, w="str"):
        return self._utf8(self.u16(w), self.max_name, w)

    def text(self, w="text"):
        return self._utf8(self.u32(w), self.max_text, w)

    def weight(self, w="weight"):
        v = self.f64(w)
        if not math.isfinite(v) or v < 0:
            raise WireError(INVALID_ARGUMENT, f"{w} {v} not finite and >= 0")
        return v

    def peerlist(self):
        n = self.u32("peer count")
        if n > self.max_peers:
            raise WireError(RESOURCE_EXHAUSTED, "peer count")
        if n * 34 > len(self.b) - self.o:
            raise WireError(INVALID_ARGUMENT, "peer count cannot fit")
        return [(self.str("endpoint"), self.raw(32, "identity")) for _ in range(n)]

    def end(self):
        if self.o != len(self.b):
            raise WireError(INVALID_ARGUMENT, f"{len(self.b) - self.o} trailing bytes")


class W:
    def __init__(self):
        self.b = bytearray()

    def u8(self, v): self.b += struct.pack("<B", v); return self
    def u16(self, v): self.b += struct.pack("<H", v); return self
    def u32(self, v): self.b += struct.pack("<I", v); return self
    def u64(self, v): self.b += struct.pack("<Q", v); return self
    def f64(self, v): self.b += struct.pack("<d", v); return self
    def raw(self, v): self.b += v; return self

    def str(self, s):
        e = s.encode() if isinstance(s, str) else s
        return self.u16(len(e)).raw(e)

    def text(self, s):
        e = s.encode()
        return self.u32(len(e)).raw(e)

    def peerlist(self, peers):
        self.u32(len(peers))
        for ep, ident in peers:
            self.str(ep).raw(ident)
        return self


# ---------------------------------------------------------------- tensors (SPEC 6)
DTYPE_NAMES = {DT_F32: "F32", DT_F16: "F16", DT_BF16: "BF16", DT_I8: "I8"}


def byte_count(dtype, n):
    if dtype == DT_F32:
        return 4 * n
    if dtype in (DT_F16, DT_BF16):
        return 2 * n
    if dtype == DT_I8:
        return n + 4 * ((n + 255) // 256)
    raise WireError(INVALID_ARGUMENT, f"unknown dtype {dtype}")


def schema_hash(table):
    """FNV-1a 64 over `name:F32:dims\\n` per tensor (SPEC 6.3)."""
    h = 0xcbf29ce484222325
    for name, dims in table:
        for b in f"{name}:F32:{','.join(str(d) for d in dims)}\n".encode():
            h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def arch_table(arch):
    """The tensor table an architecture names (SPEC 6.4)."""
    n = [int(x) for x in arch.split(",")]
    t = []
    for i in range(len(n) - 1):
        t.append((f"layers.{i}.weight", [n[i + 1], n[i]]))
        t.append((f"layers.{i}.bias", [n[i + 1]]))
    return t


def f32_to_bf16(x):
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    quiet = ((u | 0x00400000) >> 16) & 0xFFFF
    isnan = np.isnan(np.asarray(x, dtype=np.float32))
    return np.where(isnan, quiet, rounded).astype(np.uint16)


def bf16_to_f32(h):
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def i8_encode(x):
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    out = bytearray()
    for s in range(0, len(x), 256):
        blk = x[s:s + 256]
        scale = np.float32(np.float32(np.max(np.abs(blk))) / np.float32(127))
        if scale == 0:
            q = np.zeros(len(blk), dtype=np.int8)
        else:
            q = np.clip(np.rint((blk / scale).astype(np.float32)), -127, 127).astype(np.int8)
        out += struct.pack("<f", float(scale)) + q.tobytes()
    return bytes(out)


def i8_decode(data, n):
    out = np.empty(n, dtype=np.float32)
    off = 0
    for s in range(0, n, 256):
        m = min(256, n - s)
        scale = np.frombuffer(data[off:off + 4], dtype="<f4")[0]
        if np.signbit(scale) or not np.isfinite(scale):
            raise WireError(INVALID_ARGUMENT, f"I8 block scale {scale}")
        q = np.frombuffer(data[off + 4:off + 4 + m], dtype=np.int8).astype(np.float32)
        out[s:s + m] = (q * scale).astype(np.float32)
        off += 4 + m
    return out


def encode_tensor(x, dtype):
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    if dtype == DT_F32:
        return x.astype("<f4").tobytes()
    if dtype == DT_BF16:
        return f32_to_bf16(x).astype("<u2").tobytes()
    if dtype == DT_F16:
        return x.astype("<f2").tobytes()
    if dtype == DT_I8:
        return i8_encode(x)
    raise ValueError(dtype)


def decode_tensor(data, dtype, n):
    if dtype == DT_F32:
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    if dtype == DT_BF16:
        return bf16_to_f32(np.frombuffer(data, dtype="<u2"))
    if dtype == DT_F16:
        return np.frombuffer(data, dtype="<f2").astype(np.float32)
    if dtype == DT_I8:
        return i8_decode(data, n)
    raise ValueError(dtype)


def decode_model_state(r, accept=(DT_F32,), expect_hash=None, max_tensors=4096, max_dims=8):
    """A ModelState section from r's offset to the end of the payload (SPEC 6.1, 6.2)."""
    ms = dict(arch=r.str("architecture"), round=r.u64(), step=r.u64(), samples=r.u64())
    ms["hash"] = r.u64("schema_hash")
    if expect_hash is not None and ms["hash"] != expect_hash:
        raise WireError(FAILED_PRECONDITION, "schema hash")
    count = r.u32("tensor_count")
    if count > max_tensors:
        raise WireError(RESOURCE_EXHAUSTED, "tensor_count")
    if count > (len(r.b) - r.o) // 12:
        raise WireError(INVALID_ARGUMENT, "tensor_count cannot fit")
    tensors, names, total = [], set(), 0
    for _ in range(count):
        name = r.str("tensor name")
        dtype = r.u8("dtype")
        if dtype not in DTYPE_NAMES:
            raise WireError(INVALID_ARGUMENT, f"dtype {dtype}")
        if dtype not in accept:
            raise WireError(UNIMPLEMENTED, f"dtype {DTYPE_NAMES[dtype]}")
        rank = r.u8("rank")
        if rank > max_dims:
            raise WireError(RESOURCE_EXHAUSTED, "rank")
        dims = [r.u64("dim") for _ in range(rank)]
        n = 1
        for d in dims:
            n *= d
        bc = r.u64("byte_count")
        if bc != byte_count(dtype, n):
            raise WireError(INVALID_ARGUMENT, f"byte_count of {name}")
        if name in names:
            raise WireError(INVALID_ARGUMENT, f"duplicate {name}")
        names.add(name)
        total += bc
        tensors.append(dict(name=name, dtype=dtype, dims=dims, n=n, bc=bc))
    if schema_hash([(t["name"], t["dims"]) for t in tensors]) != ms["hash"]:
        raise WireError(INVALID_ARGUMENT, "table hash != schema_hash")
    data_offset = r.u64("data_offset")
    data_length = r.u64("data_length")
    if data_offset != (r.o + 63) // 64 * 64 or data_length != total:
        raise WireError(INVALID_ARGUMENT, "data_offset/data_length")
    pad = r.raw(data_offset - r.o, "padding")
    if any(pad):
        raise WireError(INVALID_ARGUMENT, "padding not zero")
    for t in tensors:
        t["data"] = r.raw(t["bc"], "tensor data")
    r.end()
    ms["tensors"] = tensors
    return ms


def encode_model_state(w, ms):
    """Append a ModelState section to w (offsets from w's start = the payload's start)."""
    w.str(ms["arch"]).u64(ms["round"]).u64(ms["step"]).u64(ms["samples"]).u64(ms["hash"])
    w.u32(len(ms["tensors"]))
    for t in ms["tensors"]:
        w.str(t["name"]).u8(t["dtype"]).u8(len(t["dims"]))
        for d in t["dims"]:
            w.u64(d)
        w.u64(len(t["data"]))
    end = len(w.b) + 16
    data_offset = (end + 63) // 64 * 64
    w.u64(data_offset).u64(sum(len(t["data"]) for t in ms["tensors"]))
    w.raw(b"\0" * (data_offset - end))
    for t in ms["tensors"]:
        w.raw(t["data"])
    return w


def model_state_from(arch, values, dtype=DT_F32, counters=(0, 0, 0)):
    """values: list of float32 arrays in table order."""
    table = arch_table(arch)
    tensors = []
    for (name, dims), v in zip(table, values):
        n = int(np.prod(dims))
        tensors.append(dict(name=name, dtype=dtype, dims=dims, n=n, data=encode_tensor(v, dtype)))
    return dict(arch=arch, round=counters[0], step=counters[1], samples=counters[2],
                hash=schema_hash(table), tensors=tensors)


def model_values(ms):
    return [decode_tensor(t["data"], t["dtype"], t["n"]) for t in ms["tensors"]]


def flat(values):
    return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in values])


# ---------------------------------------------------------------- message bodies
ALL_DTYPES = (DT_F32, DT_F16, DT_BF16, DT_I8)


def decode_body(mtype, flags, payload):
    """Decode a message body by type and kind; returns a dict (or raises WireError)."""
    r = R(payload)
    resp = bool(flags & F_RESPONSE)
    if flags & F_ERROR:
        d = dict(code=r.u32("code"), text=r.text("message"))
    elif mtype == T_REGISTER and not resp:
        d = dict(endpoint=r.str("endpoint"), hash=r.u64())
    elif mtype == T_REGISTER:
        d = dict(peers=r.peerlist(), arch=r.str("architecture"), hash=r.u64())
    elif mtype == T_GETMODEL and not resp:
        d = dict(hash=r.u64())
    elif mtype == T_GETMODEL:
        return dict(model=decode_model_state(r))
    elif mtype == T_EXCHANGE and not resp:
        d = dict(sender=r.str("sender"), weight=r.weight())
        d["model"] = decode_model_state(r, ALL_DTYPES)
        return d
    elif mtype == T_EXCHANGE:
        d = dict(weight=r.weight(), peers=r.peerlist())
        d["model"] = decode_model_state(r, ALL_DTYPES)
        return d
    elif mtype == T_PUSHSUM and not resp:
        d = dict(sender=r.str("sender"), mass=r.weight("mass"))
        d["model"] = decode_model_state(r, ALL_DTYPES)
        return d
    elif mtype in (T_STATUS, T_STOP, T_PUSHSUM, T_RESERVE) and (resp or mtype != T_RESERVE):
        if mtype == T_STATUS and resp:
            d = dict(json=json.loads(r.text("json")))
        else:
            d = {}
    elif mtype == T_RESERVE:
        d = dict(sender=r.str("sender"), hash=r.u64(), lease_ms=r.u32())
    elif mtype == T_PING:
        d = dict(data=r.raw(len(payload)))
    elif mtype == T_TRIGGER and not resp:
        d = dict(peer=r.str("peer"))
    elif mtype in (T_TRIGGER,) or (mtype == T_WAIT and resp):
        d = dict(json=json.loads(r.text("json")))
    elif mtype == T_WAIT:
        d = dict(timeout_ms=r.u32())
    elif mtype == T_VOTES:
        d = dict(sender=r.str("sender"), flags=r.u8())
        if d["flags"] & 0xFE:
            raise WireError(INVALID_ARGUMENT, "votes flags")
        n = r.u32("count")
        if n * 2 > len(payload) - r.o:
            raise WireError(INVALID_ARGUMENT, "count cannot fit")
        d["voters"] = [r.str("voter") for _ in range(n)]
    elif mtype in (T_PROBE, T_PROBEREQ):
        d = dict(sender=r.str("sender"), incarnation=r.u32(), target=r.str("target"))
        n = r.u8("count")
        d["updates"] = [(r.u8(), r.u32(), r.str("member")) for _ in range(n)]
    elif mtype == T_PULL and not resp:
        d = dict(path=r.text("path"))
    elif mtype == T_PULL:
        d = dict(version=r.u64(), form=r.u8())
        if d["form"] == 0:
            d["model"] = decode_model_state(r)
            return d
        if d["form"] != 1:
            raise WireError(INVALID_ARGUMENT, "form")
        d["byte_count"] = r.u64()
    elif mtype == T_PUSH and not resp:
        d = dict(base=r.u64(), samples=r.u64(), steps=r.u64(), path=r.text("path"))
        if d["path"] == "":
            d["model"] = decode_model_state(r)
            return d
    elif mtype == T_PUSH:
        d = dict(version=r.u64(), change=r.f64())
    else:
        raise WireError(UNIMPLEMENTED, f"type {mtype}")
    r.end()
    return d


def encode_body(mtype, flags, d):
    w = W()
    resp = bool(flags & F_RESPONSE)
    if flags & F_ERROR:
        w.u32(d["code"]).text(d["text"])
    elif mtype == T_REGISTER and not resp:
        w.str(d["endpoint"]).u64(d["hash"])
    elif mtype == T_REGISTER:
        w.peerlist(d["peers"]).str(d["arch"]).u64(d["hash"])
    elif mtype == T_GETMODEL and not resp:
        w.u64(d["hash"])
    elif mtype == T_GETMODEL:
        encode_model_state(w, d["model"])
    elif mtype == T_EXCHANGE and not resp:
        encode_model_state(w.str(d["sender"]).f64(d["weight"]), d["model"])
    elif mtype == T_EXCHANGE:
        encode_model_state(w.f64(d["weight"]).peerlist(d["peers"]), d["model"])
    elif mtype == T_PUSHSUM and not resp:
        encode_model_state(w.str(d["sender"]).f64(d["mass"]), d["model"])
    elif "json" in d:
        w.text(json.dumps(d["json"], separators=(",", ":"), ensure_ascii=False))
    elif mtype == T_RESERVE and not resp:
        w.str(d["sender"]).u64(d["hash"]).u32(d["lease_ms"])
    elif mtype == T_PING:
        w.raw(d["data"])
    elif mtype == T_TRIGGER:
        w.str(d["peer"])
    elif mtype == T_WAIT:
        w.u32(d["timeout_ms"])
    elif mtype == T_VOTES:
        w.str(d["sender"]).u8(d["flags"]).u32(len(d["voters"]))
        for v in d["voters"]:
            w.str(v)
    elif mtype in (T_PROBE, T_PROBEREQ):
        w.str(d["sender"]).u32(d["incarnation"]).str(d["target"]).u8(len(d["updates"]))
        for st, inc, m in d["updates"]:
            w.u8(st).u32(inc).str(m)
    elif mtype == T_PULL and not resp:
        w.text(d["path"])
    elif mtype == T_PULL:
        w.u64(d["version"]).u8(d["form"])
        if d["form"] == 0:
            encode_model_state(w, d["model"])
        else:
            w.u64(d["byte_count"])
    elif mtype == T_PUSH and not resp:
        w.u64(d["base"]).u64(d["samples"]).u64(d["steps"]).text(d["path"])
        if "model" in d:
            encode_model_state(w, d["model"])
    elif mtype == T_PUSH:
        w.u64(d["version"]).f64(d["change"])
    return bytes(w.b)


# ---------------------------------------------------------------- (a) golden vectors
def read_vector(path):
    meta, hexes = {}, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("#"):
                for k, v in re.findall(r"(\w+)=(\S+)", line):
                    meta[k] = v
                continue
            hexes += line.split()
    return meta, bytes(int(h, 16) for h in hexes)


def check_vectors(vdir, log):
    names = sorted(n for n in os.listdir(vdir) if n.endswith(".hex"))
    check(names, "5", f"no vectors in {vdir}")
    exact_zlib = zlib.ZLIB_VERSION == "1.2.13"
    for name in names:
        meta, data = read_vector(os.path.join(vdir, name))
        try:
            msgs = decode_stream(data)
        except WireError as e:
            raise Mismatch("2/7", f"{name}: golden vector refused by this decoder: {e}")
        check(len(msgs) == 1, "9", f"{name}: {len(msgs)} messages, expected 1")
        m = msgs[0]
        try:
            body = decode_body(m["type"], m["flags"], m["payload"])
        except WireError as e:
            raise Mismatch("5/6", f"{name}: body refused by this decoder: {e}")
        payload = encode_body(m["type"], m["flags"], body)
        if "json" in body:   # JSON texts: re-encode the text as it was (key order, numbers)
            payload = m["payload"]
        check(payload == m["payload"], "5/6", f"{name}: body re-encodes differently")
        comp = meta.get("compression", "none")
        level = None if comp == "none" else int(comp.split("-")[1].split("+")[0])
        hd0 = m["frames"][0]
        frames = encode_message(m["type"], m["id"], payload,
                                response=bool(m["flags"] & F_RESPONSE),
                                error=bool(m["flags"] & F_ERROR), level=level,
                                shuffled="shuffle" in comp,
                                checksum=bool(hd0["flags"] & F_CHECKSUMMED),
                                chunk_bytes=int(meta.get("chunk_bytes", 4 * 1024 * 1024)))
        if level is None or exact_zlib:
            check(frames == data, "2/7", f"{name}: re-encoded frames differ from the vector")
        else:
            check(decode_stream(frames)[0]["payload"] == m["payload"], "7", f"{name}: re-encode")
        if m["type"] in (T_GETMODEL, T_EXCHANGE, T_PUSHSUM) and "model" in body:
            ms = body["model"]
            check(ms["hash"] == schema_hash(arch_table(ms["arch"])), "6.4",
                  f"{name}: table is not the architecture's")
    # the lossy vectors are the F32 weights of gossip_exchange_request.hex encoded (SPEC 6.1)
    _, ref = read_vector(os.path.join(vdir, "gossip_exchange_request.hex"))
    ref_ms = decode_body(T_EXCHANGE, 0, decode_stream(ref)[0]["payload"])["model"]
    for name, dt in (("gossip_exchange_request_bf16.hex", DT_BF16),
                     ("gossip_exchange_request_fp16.hex", DT_F16),
                     ("gossip_exchange_request_int8.hex", DT_I8)):
        p = os.path.join(vdir, name)
        if not os.path.exists(p):
            continue
        ms = decode_body(T_EXCHANGE, 0, decode_stream(read_vector(p)[1])[0]["payload"])["model"]
        for t, rt in zip(ms["tensors"], ref_ms["tensors"]):
            mine = encode_tensor(decode_tensor(rt["data"], DT_F32, rt["n"]), dt)
            check(mine == t["data"], "6.1", f"{name}: {t['name']} encodes differently here")
    # the averaging example of SPEC 5.3
    own = np.array([0x3dcccccd, 0xbfa00000, 0x40533333, 0x3f333333, 0x3a83126f, 0xc039999a,
                    0x40b00000, 0x3eaa7efa], dtype=np.uint32).view(np.float32)
    req = np.array([0x3e4ccccd, 0x40200000, 0xbecccccd, 0x3f666666, 0x3be56042, 0x3fd9999a,
                    0xc0b00000, 0x3de353f8], dtype=np.uint32).view(np.float32)
    res = np.array([0x3e2e147b, 0x3fb00000, 0x3f35c290, 0x3f570a3e, 0x3baa64c3, 0x3ea3d70a,
                    0xc00ccccc, 0x3e35dcc6], dtype=np.uint32)
    check(np.array_equal(average(own, 600.0, req, 1400.0).view(np.uint32), res), "5.3",
          "averaging_example")
    check(np.float32(3 / 16777220).view(np.uint32) == 0x343ffffd, "5.3", "cb for a=16777217")
    log(f"vectors: {len(names)} decoded, re-encoded and compared"
        f"{'' if exact_zlib else ' (compressed ones by inflated bytes: zlib ' + zlib.ZLIB_VERSION + ')'}")


def average(own, a, req, b):
    """The averaging rule of SPEC 5.3 (float64 coefficients, two float32 products, a sum)."""
    ca = np.float32(a / (a + b))
    cb = np.float32(b / (a + b))
    own = np.asarray(own, dtype=np.float32)
    req = np.asarray(req, dtype=np.float32)
    return (own * ca).astype(np.float32) + (req * cb).astype(np.float32)


# ---------------------------------------------------------------- a connection to a node
class Conn:
    def __init__(self, addr, timeout=10.0):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=timeout)
        self.s.settimeout(timeout)
        self.rid = 0
        self.buf = bytearray()
        self.asm = Assembler()

    @classmethod
    def adopt(cls, sock, timeout=10.0):
        """A Conn over an already connected socket (an accepted one, a Unix socket)."""
        c = cls.__new__(cls)
        c.s = sock
        c.s.settimeout(timeout)
        c.rid, c.buf, c.asm = 0, bytearray(), Assembler()
        return c

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def send_raw(self, data):
        self.s.sendall(data)

    def send(self, mtype, payload, **kw):
        self.rid += 1
        self.send_raw(encode_message(mtype, self.rid, payload, **kw))
        return self.rid

    def _fill(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.s.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return False
            self.buf += chunk
        return True

    def recv(self):
        """The next whole message, or None at EOF (strict: a malformed reply raises)."""
        while True:
            if not self._fill(HEADER):
                check(not self.buf, "2", "stream ended inside a frame header")
                return None
            hd = parse_header(bytes(self.buf[:HEADER]))
            try:
                check_header(hd, max_frame=1 << 31)
            except WireError as e:
                raise Mismatch("2", f"node sent a malformed frame header: {e} {hd}")
            check(self._fill(hd["length"]), "2", "stream ended inside a frame")
            body = bytes(self.buf[HEADER:hd["length"]])
            del self.buf[:hd["length"]]
            try:
                m = self.asm.feed(hd, body)
            except WireError as e:
                raise Mismatch("2/7/9", f"node sent a malformed frame: {e}")
            if m:
                return m

    def call(self, mtype, payload, **kw):
        rid = self.send(mtype, payload, **kw)
        m = self.recv()
        check(m is not None, "1", f"connection closed instead of answering type {mtype}")
        return rid, m

    def expect_eof(self, section, what, wait=5.0):
        self.s.settimeout(wait)
        try:
            m = self.recv()
        except socket.timeout:
            raise Mismatch(section, f"{what}: connection not closed within {wait} s")
        check(m is None, section, f"{what}: another message instead of closing: {m and m['type']}")


def reply_body(m):
    try:
        return decode_body(m["type"], m["flags"], m["payload"])
    except WireError as e:
        raise Mismatch("5", f"reply of type {m['type']} does not decode: {e}")


def expect_ok(m, mtype, rid, section):
    if m["flags"] & F_ERROR:
        b = reply_body(m)
        raise Mismatch(section, f"type {mtype}: error reply {b['code']}: {b['text']}")
    check(m["flags"] & F_RESPONSE, "3", "reply without RESPONSE")
    check(m["type"] == mtype and m["id"] == rid, "9",
          f"reply type/id {m['type']}/{m['id']} != request's {mtype}/{rid}")
    return reply_body(m)


def expect_error(m, mtype, rid, code, section, what):
    check(m is not None, section, f"{what}: connection closed, expected error {code}")
    check(m["flags"] & F_ERROR, section, f"{what}: not an error reply (type {m['type']})")
    b = reply_body(m)
    check(b["code"] == code, section, f"{what}: status {b['code']} ({b['text']!r}), SPEC says {code}")
    check(m["type"] == mtype and m["id"] == rid, section,
          f"{what}: error reply type/id {m['type']}/{m['id']}, expected {mtype}/{rid}")
    return b


# ---------------------------------------------------------------- (b) against a real node
def _die_with_parent():
    """Linux: the node gets SIGKILL when this script dies, however it dies."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Node:
    def __init__(self, argv, tmp, name):
        self.log = open(os.path.join(tmp, name + ".log"), "w+")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                  stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.addr = None
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
            m = re.search(r"listening (\S+:\d+)", line)
            if m:
                self.addr = m.group(1)
                break
        if self.addr is None:
            self.stop()
            self.log.seek(0)
            raise Mismatch("README", f"{name}: no `listening HOST:PORT` line; stderr:\n"
                           + self.log.read()[-2000:])
        # keep draining stdout so the node never blocks on a full pipe
        import threading
        threading.Thread(target=lambda: [None for _ in self.p.stdout], daemon=True).start()

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status(addr):
    c = Conn(addr)
    try:
        rid, m = c.call(T_STATUS, b"")
        return expect_ok(m, T_STATUS, rid, "5.4")["json"]
    finally:
        c.close()


def get_model(addr, h=0):
    c = Conn(addr)
    try:
        rid, m = c.call(T_GETMODEL, W().u64(h).b)
        return expect_ok(m, T_GETMODEL, rid, "5.2")["model"]
    finally:
        c.close()


def same_bits(x, y):
    return x.shape == y.shape and np.array_equal(x.view(np.uint32), y.view(np.uint32))


def exchange(addr, sender, weight, ms, section, reserve=True, **kw):
    """Reserve (SPEC 5.6) then GossipExchange on one connection; retries ABORTED a few times."""
    for attempt in range(40):
        c = Conn(addr)
        try:
            if reserve:
                rid, m = c.call(T_RESERVE, W().str(sender).u64(ms["hash"]).u32(5000).b)
                if m["flags"] & F_ERROR and reply_body(m)["code"] == ABORTED:
                    time.sleep(0.05)
                    continue
                b = expect_ok(m, T_RESERVE, rid, "5.6")
                check(b == {}, "5.6", "Reserve reply not empty")
            payload = encode_model_state(W().str(sender).f64(weight), ms).b
            rid, m = c.call(T_EXCHANGE, bytes(payload), **kw)
            if m["flags"] & F_ERROR and reply_body(m)["code"] == ABORTED:
                time.sleep(0.05)
                continue
            return expect_ok(m, T_EXCHANGE, rid, section)
        finally:
            c.close()
    raise Mismatch(section, "the node answered ABORTED (busy) 40 times in a row")


def run_node_checks(bindir, log):
    gossipd = os.path.join(bindir, "gossipd")
    check(os.access(gossipd, os.X_OK), "README", f"no gossipd at {gossipd}")
    tmp = tempfile.mkdtemp(prefix="spec_peer.")
    nodes = []
    try:
        # every node starts at once (they start and train while the checks run): the main
        # bootstrap and peer; a push-sum peer with a bootstrap of its own (it then lists no one,
        # so that peer has nobody to push to and its mass stands still, SPEC 5.5); a bootstrap
        # with a network key (SPEC 13)
        def start(name, argv):
            n = Node([gossipd] + argv, tmp, name)
            nodes.append(n)
            return n

        key = os.path.join(tmp, "net.key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)   # 13.12's key file format
        os.write(fd, ("gossip-network-key v1\n" + os.urandom(32).hex() + "\n").encode())
        os.close(fd)
        boot = start("bootstrap", ["bootstrap", "--listen", "127.0.0.1:0", "--dataset", "digits"])
        boot2 = start("push-sum bootstrap", ["bootstrap", "--listen", "127.0.0.1:0", "--dataset", "digits"])
        sb = start("secure bootstrap", ["bootstrap", "--listen", "127.0.0.1:0", "--dataset", "digits",
                                        "--network-key", key])
        ctl = os.path.join(tmp, "peer.sock")
        peer = start("peer", ["peer", "--listen", "127.0.0.1:0", "--bootstrap", boot.addr,
                              "--dataset", "digits", "--shard", "0/1", "--rounds", "1", "--control-socket", ctl])
        ps = start("push-sum peer", ["peer", "--listen", "127.0.0.1:0", "--bootstrap", boot2.addr,
                                     "--dataset", "digits", "--shard", "0/1", "--rounds", "1",
                                     "--averaging", "push-sum", "--control-socket", os.path.join(tmp, "ps.sock")])
        log(f"bootstrap {boot.addr}, peer {peer.addr}")
        node_session(boot, peer, ctl, log)
        push_sum_session(ps, log)
        # SPEC 13.8: a plaintext client of a node with a network key gets one plaintext
        # connection-level UNAUTHENTICATED with the quoted text, then the close
        c = Conn(sb.addr)
        try:
            c.send_raw(encode_message(T_STATUS, 1, b""))
            m = c.recv()
            check(m is not None and m["flags"] & F_ERROR and m["type"] == T_CONNECTION and m["id"] == 0,
                  "13.8", f"plaintext Status to a secure node: {m and (m['type'], m['id'], m['flags'])}")
            bd = reply_body(m)
            want = ("this node requires an encrypted channel (Noise_XXpsk3_25519_AESGCM_SHA256, SPEC §13): "
                    "start the client with --network-key FILE")
            check(bd["code"] == 16 and bd["text"] == want, "13.8", f"plaintext client answered {bd}")
            c.expect_eof("13.8", "plaintext client of a secure node")
        finally:
            c.close()
        log("secure node: a plaintext client gets UNAUTHENTICATED with the SPEC text, then the close")
        return True
    finally:
        for n in reversed(nodes):
            n.stop()
        for n in nodes:
            n.log.seek(0)
            text = n.log.read()
            if os.environ.get("SPEC_PEER_LOGS"):
                sys.stderr.write(text[-4000:])


def split_by(sizes, v):
    """Cuts the flat vector `v` into consecutive pieces of `sizes` elements (the tensor table)."""
    out, o = [], 0
    for n in sizes:
        out.append(v[o:o + n])
        o += n
    return out


def node_session(boot, peer, ctl, log):
    # ---- Status on both (SPEC 5.4)
    bs = status(boot.addr)
    check(bs.get("role") == "bootstrap", "5.4", f"bootstrap's role {bs.get('role')!r}")
    # the peer's training rounds must be done so that only exchanges move its model
    deadline = time.time() + 60
    while True:
        st = status(peer.addr)
        check(st.get("role") == "peer", "5.4", f"peer's role {st.get('role')!r}")
        if (st.get("round") or 0) >= 1:
            break
        check(time.time() < deadline, "6.4", f"peer never completed round 1: {st}")
        time.sleep(0.1)
    for key, typ in (("endpoint", str), ("phase", str), ("architecture", str), ("schema_hash", str),
                     ("step", int), ("round", int), ("shard_size", int), ("peers", list),
                     ("exchanges", dict)):
        if st.get(key) is not None:
            check(isinstance(st[key], typ), "5.4", f"status {key} is {type(st[key]).__name__}")
    arch = st["architecture"]
    table = arch_table(arch)
    h = schema_hash(table)
    check(st["schema_hash"] == f"{h:016x}", "5.4/6.3",
          f"status schema_hash {st['schema_hash']} != FNV of {arch}'s table {h:016x}")
    check(st.get("endpoint") == peer.addr, "5.4", f"status endpoint {st.get('endpoint')} != {peer.addr}")

    # ---- GetModel: stable once the rounds are done (SPEC 5.2, 6.4)
    m0 = get_model(peer.addr, h)
    check(m0["arch"] == arch and m0["hash"] == h, "5.2", "GetModel: another architecture/hash")
    check([(t["name"], t["dims"]) for t in m0["tensors"]] == table, "6.4", "GetModel: table")
    time.sleep(0.5)
    m1 = get_model(peer.addr, 0)
    y = flat(model_values(m1))
    check(same_bits(flat(model_values(m0)), y), "6.4/README",
          f"the model still changes after --rounds 1 (step {m0['step']} -> {m1['step']})")
    check(m1["round"] == st["round"], "5.2", f"GetModel round {m1['round']} != status {st['round']}")
    log(f"peer: arch {arch}, {y.size} weights, round {m1['round']} step {m1['step']}, shard_size "
        f"{st.get('shard_size')}; GetModel stable")
    # the bootstrap's model has counters 0 (SPEC 5.2)
    bm = get_model(boot.addr, h)
    check((bm["round"], bm["step"], bm["samples"]) == (0, 0, 0), "5.2", "bootstrap counters")

    sender = f"127.0.0.1:{free_port()}"   # nothing listens there: the node's own dials fail fast
    sizes = [int(np.prod(d)) for _, d in table]
    rng = np.random.default_rng(7)

    def split(v):
        return split_by(sizes, v)

    def perturbed(v):
        return (v * (1 + 0.02 * rng.standard_normal(v.size)).astype(np.float32)).astype(np.float32)

    # ---- F32 exchange (SPEC 5.3): the reply is the average, bit for bit, and so is GetModel
    x = perturbed(y)
    b = 1000.0
    req = model_state_from(arch, split(x), DT_F32, counters=(5, 50, 6400))
    rep = exchange(peer.addr, sender, b, req, "5.3", level=1, shuffled=True,
                   chunk_bytes=64 * 1024)
    a1 = rep["weight"]
    check(math.isfinite(a1) and 0 < a1 <= CAP * b, "5.3", f"reply weight {a1} outside (0, CAP*b]")
    if st.get("shard_size"):
        check(a1 == min(float(st["shard_size"]), CAP * b), "5.3",
              f"reply weight {a1} != min(shard rows {st['shard_size']}, CAP*b)")
    peers = [p for p, _ in rep["peers"]]
    check(peers and peers[0] == peer.addr, "5.3/5.1", f"reply peers {peers}: own endpoint not first")
    check(sender not in peers, "5.3", "reply peers list the caller")
    check(all(i == bytes(32) for _, i in rep["peers"]), "5.1", "identities on a plaintext network not zero")
    rm = rep["model"]
    check(all(t["dtype"] == DT_F32 for t in rm["tensors"]), "5.3", "F32 request, non-F32 reply")
    check((rm["round"], rm["step"]) == (m1["round"], m1["step"]), "5.3",
          "reply counters are not the responder's own")
    b1 = min(b, CAP * a1)
    avg = average(y, a1, x, b1)
    got = flat(model_values(rm))
    check(same_bits(got, avg), "5.3", f"F32 reply model != averaging rule "
          f"({int(np.sum(got.view(np.uint32) != avg.view(np.uint32)))} of {avg.size} differ)")
    after = flat(model_values(get_model(peer.addr, h)))
    check(same_bits(after, avg), "5.3", "GetModel after the F32 exchange != the average")
    log(f"F32 exchange: a'={a1} b'={b1}, reply = GetModel = average, bit for bit")

    # ---- BF16 exchange (SPEC 6.5)
    y2 = after
    x2 = perturbed(y2)
    qx = model_state_from(arch, split(x2), DT_BF16)
    rep = exchange(peer.addr, sender, b, qx, "6.5", checksum=False)   # SPEC 7: receivers accept both
    a2 = rep["weight"]
    check(0 < a2 <= CAP * b, "5.3", f"reply weight {a2}")
    rm = rep["model"]
    check(all(t["dtype"] == DT_BF16 for t in rm["tensors"]), "6.5",
          f"BF16 request, reply dtypes {[t['dtype'] for t in rm['tensors']]}")
    s_x = flat(model_values(qx))
    s_y = flat(model_values(rm))
    # e_y is 0 after an F32 exchange (c - D(Q(c)) with Q exact), so the reply is Q(y2) exactly
    check(np.array_equal(f32_to_bf16(y2), f32_to_bf16(s_y)) and
          np.array_equal(encode_tensor(y2, DT_BF16), b"".join(t["data"] for t in rm["tensors"])),
          "6.5", "BF16 reply model is not Q(y) of the responder's weights (residual 0 after F32)")
    b2 = min(b, CAP * a2)
    avg2 = average(s_x, b2, s_y, a2)
    after2 = flat(model_values(get_model(peer.addr, h)))
    check(same_bits(after2, avg2), "6.5", "GetModel after the BF16 exchange != "
          f"average(D(Q(c_x)), D(Q(c_y))) ({int(np.sum(after2.view(np.uint32) != avg2.view(np.uint32)))} differ)")
    e_y = (y2 - s_y).astype(np.float32)      # the responder's residual now (error feedback)
    log("BF16 exchange: both sides hold the same average, bit for bit")

    # ---- I8 exchange (SPEC 6.5)
    y3 = after2
    x3 = perturbed(y3)
    qx = model_state_from(arch, split(x3), DT_I8)
    rep = exchange(peer.addr, sender, 300.0, qx, "6.5", chunk_bytes=4096)   # 13 uncompressed frames   # 4 x 300 < 1500: the weight cap applies
    a3 = rep["weight"]
    check(a3 == min(a1, CAP * 300.0), "5.3", f"capped reply weight {a3} != min(own {a1}, CAP x 300)")
    rm = rep["model"]
    check(all(t["dtype"] == DT_I8 for t in rm["tensors"]), "6.5", "I8 request, non-I8 reply")
    s_x = flat(model_values(qx))
    s_y = flat(model_values(rm))
    b3 = min(300.0, CAP * a3)
    avg3 = average(s_x, b3, s_y, a3)
    after3 = flat(model_values(get_model(peer.addr, h)))
    check(same_bits(after3, avg3), "6.5", "GetModel after the I8 exchange != "
          f"average(D(Q(c_x)), D(Q(c_y))) ({int(np.sum(after3.view(np.uint32) != avg3.view(np.uint32)))} differ)")
    c_y = (y3 + e_y).astype(np.float32)
    mine = b"".join(encode_tensor(v, DT_I8) for v in split(c_y))
    check(mine == b"".join(t["data"] for t in rm["tensors"]), "6.5",
          "I8 reply is not Q(y + e) with e the residual of the BF16 exchange (error feedback)")
    log(f"I8 exchange (weight capped: a'={a3}): both sides hold the same average, bit for bit; "
        "reply = Q(y + e_bf16)")

    # ---- one dtype per tensor, all four in one request (SPEC 6.5: "per tensor")
    y4 = after3
    x4 = perturbed(y4)
    dts = [(DT_F32, DT_F16, DT_BF16, DT_I8)[i % 4] for i in range(len(table))]
    qx = model_state_from(arch, split(x4))
    for t, dt, v in zip(qx["tensors"], dts, split(x4)):
        t["dtype"], t["data"] = dt, encode_tensor(v, dt)
    rep = exchange(peer.addr, sender, b, qx, "6.5")
    rm = rep["model"]
    check([t["dtype"] for t in rm["tensors"]] == dts, "6.5",
          f"mixed request {dts}, reply dtypes {[t['dtype'] for t in rm['tensors']]}")
    a4 = rep["weight"]
    avg4 = average(flat(model_values(qx)), min(b, CAP * a4), flat(model_values(rm)), a4)
    after4 = flat(model_values(get_model(peer.addr, h)))
    check(same_bits(after4, avg4), "6.5", "GetModel after the mixed-dtype exchange != the average")
    log(f"mixed exchange ({'/'.join(DTYPE_NAMES[d] for d in dts[:4])} per tensor): same average, bit for bit")

    # ---- Register with the bootstrap (SPEC 5.1): it lists the peer, never the registrant
    c = Conn(boot.addr)
    try:
        rid, m = c.call(T_REGISTER, W().str(sender).u64(h).b)
        reg = expect_ok(m, T_REGISTER, rid, "5.1")
    finally:
        c.close()
    eps = [e for e, _ in reg["peers"]]
    check(peer.addr in eps and sender not in eps and boot.addr not in eps, "5.1",
          f"bootstrap's Register reply lists {eps}")
    check(all(i == bytes(32) for _, i in reg["peers"]), "5", "identities on a plaintext network not zero")
    check(reg["arch"] == arch and reg["hash"] == h, "5.1", "Register reply architecture/hash")

    # ---- a reply sent to a server is skipped; request id 0 is answered; pipelined requests
    c = Conn(peer.addr)
    try:
        c.send_raw(encode_message(T_PING, 9, b"a reply", response=True)
                   + encode_message(T_PING, 0, b"zero") + encode_message(T_STATUS, 1, b""))
        got = {}
        for _ in range(2):
            m = c.recv()
            check(m is not None and not m["flags"] & F_ERROR, "1/9", "pipelined requests not answered")
            got[m["id"]] = m
        check(set(got) == {0, 1} and got[0]["payload"] == b"zero", "1/9",
              f"a reply to the server must be skipped and id 0 answered: got ids {sorted(got)}")
    finally:
        c.close()

    # ---- a request written one byte at a time
    c = Conn(peer.addr)
    try:
        raw = encode_message(T_PING, 7, b"dribbled")
        for i in range(len(raw)):
            c.send_raw(raw[i:i + 1])
        rid, m = 7, c.recv()
        check(m is not None and expect_ok(m, T_PING, rid, "5.4")["data"] == b"dribbled", "1", "dribbled Ping")
    finally:
        c.close()

    # ---- SPEC 1: a client that half-closes (shutdown(SHUT_WR)) right after its requests still
    #      gets every reply, then the end of the stream; 20 tries, since losing them was a race
    #      (the reply computed off the connection's queue, the close on reading the EOF)
    for t in range(20):
        c = Conn(peer.addr)
        try:
            n = 1 + t % 4
            sent = {}
            data = b""
            for i in range(n):
                rid = 8 + i
                if i == n - 1 and t % 2:
                    data += encode_message(T_STATUS, rid, b"")
                    sent[rid] = (T_STATUS, None)
                else:
                    body = f"half {t}.{i}".encode()
                    data += encode_message(T_PING, rid, body)
                    sent[rid] = (T_PING, body)
            c.send_raw(data)
            c.s.shutdown(socket.SHUT_WR)
            got = {}
            while True:
                m = c.recv()
                if m is None:
                    break
                check(m["id"] in sent and m["id"] not in got, "1/9", f"half-close try {t}: unexpected reply id {m['id']}")
                mtype, body = sent[m["id"]]
                out = expect_ok(m, mtype, m["id"], "5.4")
                if body is not None:
                    check(out["data"] == body, "5.4", f"half-close try {t}: ping echo")
                got[m["id"]] = m
            check(len(got) == n, "1", f"half-close try {t}: {len(got)} of {n} requests answered before the "
                  f"server closed (SPEC 1: requests sent before a half-close are all answered)")
        finally:
            c.close()
    log("half-close: 20 tries of 1-4 pipelined requests then shutdown(SHUT_WR): every reply, then EOF")

    # ---- (c) hostile inputs
    base = after4
    hostile(peer, boot, arch, table, h, base, sender, ctl, log)
    return True


def hostile(peer, boot, arch, table, h, base, sender, ctl, log):
    addr = peer.addr
    sizes = [int(np.prod(d)) for _, d in table]

    def split(v):
        return split_by(sizes, v)

    def unchanged(what):
        check(peer.alive(), "1", f"{what}: the node died")
        got = flat(model_values(get_model(addr, h)))
        check(same_bits(got, base), "5.3", f"{what}: the node's model changed")

    def conn_error(raw, code, section, what, text=None):
        c = Conn(addr)
        try:
            c.send_raw(raw)
            m = c.recv()
            check(m is not None, section, f"{what}: closed without the connection-level error reply")
            check(m["flags"] & F_ERROR, section, f"{what}: not an error reply")
            check(m["type"] == T_CONNECTION and m["id"] == 0, "8.1",
                  f"{what}: error reply type/id {m['type']:#x}/{m['id']}, SPEC says 0xFFFF/0")
            bd = reply_body(m)
            check(bd["code"] == code, section, f"{what}: status {bd['code']} ({bd['text']!r}), SPEC says {code}")
            if text is not None:
                check(bd["text"] == text, section, f"{what}: text {bd['text']!r}, SPEC says {text!r}")
            c.expect_eof("8.1", what)
        finally:
            c.close()
        unchanged(what)
        return bd

    def body_error(mtype, payload, code, section, what, **kw):
        c = Conn(addr)
        try:
            rid, m = c.call(mtype, payload, **kw)
            expect_error(m, mtype, rid, code, section, what)
            rid, m = c.call(T_PING, b"still open")   # the connection stays open
            check(expect_ok(m, T_PING, rid, "5.4")["data"] == b"still open", "5.4", "ping echo")
        finally:
            c.close()
        unchanged(what)

    status_req = encode_message(T_STATUS, 1, b"")
    ping = lambda payload, **kw: encode_message(T_PING, 3, payload, **kw)

    # header errors (SPEC 2): connection-level reply, then close
    bad = bytearray(status_req); bad[4] = 3
    conn_error(bytes(bad), UNIMPLEMENTED, "10", "version 3",
               text="protocol version 3 is not supported; this node speaks version 2")
    bad = bytearray(status_req); bad[4] = 1
    conn_error(bytes(bad), UNIMPLEMENTED, "10", "version 1",
               text="protocol version 1 is not supported; this node speaks version 2")
    bad = bytearray(status_req); struct.pack_into("<I", bad, 0, MAX_FRAME + 1)
    conn_error(bytes(bad), RESOURCE_EXHAUSTED, "2", "frame_length > maxFrameBytes")
    bad = bytearray(status_req); struct.pack_into("<I", bad, 0, 23)
    conn_error(bytes(bad), INVALID_ARGUMENT, "2", "frame_length < 24")
    bad = bytearray(ping(b"12345678")); struct.pack_into("<I", bad, 12, 7)   # lying chunk length
    conn_error(bytes(bad), INVALID_ARGUMENT, "2", "uncompressed chunk_raw_length != payload size")
    bad = bytearray(ping(b"12345678")); struct.pack_into("<I", bad, 12, 9)
    struct.pack_into("<I", bad, 16, 9)
    conn_error(bytes(bad), INVALID_ARGUMENT, "2", "chunk_raw_length 9 over an 8-byte payload")
    bad = bytearray(ping(b"12345678")); bad[5] |= 0x40
    conn_error(bytes(bad), INVALID_ARGUMENT, "2", "reserved flag 0x40")
    bad = bytearray(ping(b"12345678")); struct.pack_into("<H", bad, 6, 0)
    conn_error(bytes(bad), INVALID_ARGUMENT, "2", "message_type 0")
    conn_error(encode_message(T_CONNECTION, 4, b""), INVALID_ARGUMENT, "8.1", "a request of type 0xFFFF")
    bad = bytearray(ping(b"12345678")); bad[20] ^= 0xFF
    conn_error(bytes(bad), DATA_LOSS, "2/7", "bad CRC-32")
    bad = bytearray(ping(b"12345678", checksum=False)); struct.pack_into("<I", bad, 20, 1)
    conn_error(bytes(bad), INVALID_ARGUMENT, "2", "checksum without CHECKSUMMED")
    comp = zlib.compress(b"ping" * 64, 6)
    for what, body, code in (("truncated zlib stream (deflate data)", comp[:len(comp) // 2], INVALID_ARGUMENT),
                             ("truncated zlib stream (Adler-32)", comp[:-2], INVALID_ARGUMENT),
                             ("corrupt zlib (Adler-32 wrong)", comp[:-1] + bytes([comp[-1] ^ 1]), DATA_LOSS),
                             ("zlib trailing bytes", comp + b"\0", INVALID_ARGUMENT)):
        fr = struct.pack("<IBBHIIII", HEADER + len(body), 2, F_COMPRESSED | F_END | F_CHECKSUMMED,
                         T_PING, 5, 256, 256, zlib.crc32(body)) + body
        conn_error(fr, code, "7", what)
    bomb = zlib.compress(b"\0" * 4096, 9)
    fr = struct.pack("<IBBHIIII", HEADER + len(bomb), 2, F_COMPRESSED | F_END | F_CHECKSUMMED,
                     T_PING, 5, 64, 64, zlib.crc32(bomb)) + bomb
    conn_error(fr, RESOURCE_EXHAUSTED, "7", "zlib bomb (inflates past chunk_raw_length)")
    short = zlib.compress(b"ping" * 10, 6)
    fr = struct.pack("<IBBHIIII", HEADER + len(short), 2, F_COMPRESSED | F_END | F_CHECKSUMMED,
                     T_PING, 5, 64, 64, zlib.crc32(short)) + short
    conn_error(fr, INVALID_ARGUMENT, "7", "zlib stream ends short of chunk_raw_length")
    big = struct.pack("<IBBHIIII", HEADER + 8, 2, F_END | F_CHECKSUMMED, T_STATUS, 5, 8,
                      600 * 1024, zlib.crc32(b"abcdefgh")) + b"abcdefgh"
    conn_error(big, RESOURCE_EXHAUSTED, "2/11", "message_raw_length past maxControlMessageBytes")
    conn_error(struct.pack("<IBBHIIII", HEADER, 2, F_COMPRESSED | F_END, T_PING, 5, 0, 0, 0),
               INVALID_ARGUMENT, "2", "compressed frame with an empty payload")
    # chunking violation: a frame of another message before END_STREAM (SPEC 9)
    first = encode_message(T_PING, 6, b"x" * 16, chunk_bytes=8)
    n1 = struct.unpack_from("<I", first, 0)[0]
    conn_error(first[:n1] + status_req, INVALID_ARGUMENT, "9", "frame of another message before END_STREAM")
    log("hostile headers: every one answered as SPEC 2/7/8.1/9/10 say, connection closed")

    # body errors (SPEC 4, 5): an error reply to the request, connection stays open
    body_error(99, b"whatever", UNIMPLEMENTED, "4", "unknown type 99")
    body_error(T_STATUS, b"x", INVALID_ARGUMENT, "5.4", "Status with a payload byte")
    body_error(T_GETMODEL, W().u64(0x0123456789ABCDEF).b, FAILED_PRECONDITION, "5.2", "GetModel, wrong schema")
    body_error(T_GETMODEL, W().u64(h).u8(0).b, INVALID_ARGUMENT, "5", "GetModel, a trailing byte")
    body_error(T_STOP, b"", PERMISSION_DENIED, "13.12", "Stop over TCP from a non-admin")
    body_error(T_TRIGGER, W().str("").b, PERMISSION_DENIED, "13.12", "TriggerGossip over TCP from a non-admin")
    body_error(T_REGISTER, W().str("x" * 300).u64(0).b, RESOURCE_EXHAUSTED, "5", "Register, 300-byte endpoint")
    body_error(T_REGISTER, W().str("no port here").u64(0).b, INVALID_ARGUMENT, "5.1", "Register, endpoint not HOST:PORT")

    def exch(weight, values, dtype=DT_F32, hsh=None, snd=sender):
        ms = model_state_from(arch, split(values), dtype)
        if hsh is not None:
            ms["hash"] = hsh
        return bytes(encode_model_state(W().str(snd).f64(weight), ms).b)

    body_error(T_EXCHANGE, exch(float("nan"), base), INVALID_ARGUMENT, "5", "GossipExchange, NaN weight")
    body_error(T_EXCHANGE, exch(-1.0, base), INVALID_ARGUMENT, "5", "GossipExchange, weight -1")
    body_error(T_EXCHANGE, exch(0.0, base), INVALID_ARGUMENT, "5.3", "GossipExchange, weight 0")
    body_error(T_EXCHANGE, exch(2e12, base), INVALID_ARGUMENT, "5.3", "GossipExchange, weight 2e12")
    nan_model = base.copy(); nan_model[3] = np.nan
    body_error(T_EXCHANGE, exch(1000.0, nan_model), INVALID_ARGUMENT, "5.3", "GossipExchange, a NaN weight value")
    inf_model = base.copy(); inf_model[-1] = np.inf
    body_error(T_EXCHANGE, exch(1000.0, inf_model), INVALID_ARGUMENT, "5.3", "GossipExchange, an infinite value")
    body_error(T_EXCHANGE, exch(1000.0, base, hsh=0x0123456789ABCDEF), FAILED_PRECONDITION, "5.3/6.2",
               "GossipExchange, wrong schema hash")
    for lie in ("3,2", "", "0" + arch):
        ms = model_state_from(arch, split(base))
        ms["arch"] = lie
        body_error(T_EXCHANGE, bytes(encode_model_state(W().str(sender).f64(1000.0), ms).b),
                   FAILED_PRECONDITION, "6.4", f"GossipExchange, architecture field {lie!r} with this table")
    body_error(T_EXCHANGE, exch(1000.0, base, DT_BF16)[:-1], INVALID_ARGUMENT, "6.2",
               "GossipExchange, data one byte short")
    body_error(T_EXCHANGE, exch(1000.0, base * 50), MODEL_REJECTED, "5.3", "GossipExchange, weights x50 (outlier)")
    # an I8 block with a negative scale (SPEC 6.1)
    p = bytearray(exch(1000.0, base, DT_I8))
    r = R(p); r.str(); r.f64(); ms_off = r.o
    msd = decode_model_state(R(bytes(p), ms_off), ALL_DTYPES)
    data_start = len(p) - sum(t["bc"] for t in msd["tensors"])
    struct.pack_into("<f", p, data_start, -1.0)
    body_error(T_EXCHANGE, bytes(p), INVALID_ARGUMENT, "6.1", "GossipExchange, I8 scale -1")
    log("hostile bodies: every one answered as SPEC 4/5/6 say, connection kept, model unchanged")

    # 66 WaitConverged on one connection (SPEC 5.8, 11): a peer whose --rounds are done never
    # finishes, so 64 are held and answered DEADLINE_EXCEEDED (4) when timeout_ms passes; the
    # 65th and 66th are over the 64 requests in flight per connection: RESOURCE_EXHAUSTED at once
    c = Conn(addr)
    try:
        c.send_raw(b"".join(encode_message(T_WAIT, i, W().u32(1000).b) for i in range(1, 67)))
        codes = {}
        for _ in range(66):
            m = c.recv()
            check(m is not None and m["flags"] & F_ERROR and m["type"] == T_WAIT, "5.8",
                  f"WaitConverged: {m and (m['type'], m['flags'])}")
            codes.setdefault(reply_body(m)["code"], set()).add(m["id"])
        check(codes == {RESOURCE_EXHAUSTED: {65, 66}, 4: set(range(1, 65))}, "5.8/11",
              f"66 WaitConverged on one connection: {{code: ids}} = {codes}")
    finally:
        c.close()
    unchanged("66 WaitConverged")

    # The node as the caller (SPEC 5.3, 5.4): TriggerGossip on its control socket makes it
    # exchange with a responder run here; an honest reply is installed verbatim, a lying one
    # (weight over the cap, an outlier model, a NaN) is refused and nothing changes.
    def responder(z, w, lie_weight=None, reply_values=None):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(4)
        ls.settimeout(20)
        ep = f"127.0.0.1:{ls.getsockname()[1]}"
        out = {}

        def serve():
            try:
                while "avg" not in out:
                    s, _ = ls.accept()
                    c = Conn.adopt(s)
                    try:
                        while True:
                            m = c.recv()
                            if m is None:
                                break
                            if m["type"] == T_RESERVE:
                                c.send_raw(encode_message(T_RESERVE, m["id"], b"", response=True))
                            elif m["type"] == T_EXCHANGE:
                                req = decode_body(T_EXCHANGE, m["flags"], m["payload"])
                                xin, bw = flat(model_values(req["model"])), req["weight"]
                                a1, b1 = min(w, CAP * bw), min(bw, CAP * w)
                                out.update(before=xin, avg=average(z, a1, xin, b1), sender=req["sender"])
                                vals = out["avg"] if reply_values is None else reply_values
                                body = encode_model_state(W().f64(lie_weight or a1).peerlist([(ep, bytes(32))]),
                                                          model_state_from(arch, split(vals))).b
                                c.send_raw(encode_message(T_EXCHANGE, m["id"], bytes(body), response=True))
                                break
                    finally:
                        c.close()
            except (OSError, Mismatch, WireError) as e:
                out["error"] = repr(e)
            finally:
                ls.close()

        import threading
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        return ep, out, t

    def trigger(ep):
        for _ in range(40):
            u = socket.socket(socket.AF_UNIX)
            u.settimeout(30)
            u.connect(ctl)
            c = Conn.adopt(u)
            try:
                rid, m = c.call(T_TRIGGER, W().str(ep).b)
            finally:
                c.close()
            if m["flags"] & F_ERROR and reply_body(m)["code"] == ABORTED:
                time.sleep(0.05)
                continue
            return rid, m
        raise Mismatch("5.4", "TriggerGossip answered ABORTED 40 times in a row")

    z = (base * np.float32(1.02)).astype(np.float32)
    ep, out, t = responder(z, 1000.0)
    rid, m = trigger(ep)
    t.join(10)
    tr = expect_ok(m, T_TRIGGER, rid, "5.4")["json"]
    check("avg" in out, "5.3", f"the node never sent its GossipExchange to {ep}: {out.get('error')}")
    check(out["sender"] == addr, "5.3", f"the node's request names sender {out['sender']}, not {addr}")
    check(tr.get("peer") == ep and isinstance(tr.get("relative_l2_change"), float), "5.4",
          f"TriggerGossip reply {tr}")
    after = flat(model_values(get_model(addr, h)))
    check(same_bits(after, out["avg"]), "5.3", "the node did not install the reply's model verbatim")
    before = out["before"].astype(np.float64)
    r = float(np.linalg.norm(after.astype(np.float64) - before) / np.linalg.norm(before))
    check(abs(tr["relative_l2_change"] - r) <= 1e-4 * r, "5.4",
          f"relative_l2_change {tr['relative_l2_change']}, expected {r}")
    base = after
    nan_values = base.copy()
    nan_values[0] = np.nan
    for what, kw, code in (("a reply weight over the cap", dict(lie_weight=1e9), MODEL_REJECTED),
                           ("a reply model x50 (outlier)", dict(reply_values=(base * 50).astype(np.float32)), MODEL_REJECTED),
                           ("a NaN in the reply model", dict(reply_values=nan_values), 13)):
        ep, out, t = responder(base, 1000.0, **kw)
        rid, m = trigger(ep)
        t.join(10)
        expect_error(m, T_TRIGGER, rid, code, "5.3/5.4", f"TriggerGossip to a responder sending {what}")
        unchanged(f"a refused reply ({what})")
    log("the node as caller: honest reply installed verbatim, relative_l2_change right; "
        "lying replies refused (17, 17, 13), nothing installed")

    # Stop on the control socket stops the node (SPEC 5.4, 13.9)
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(ctl)
    s.sendall(encode_message(T_STOP, 9, b""))
    data = b""
    while len(data) < HEADER:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    check(len(data) >= HEADER, "5.4", "no reply to Stop on the control socket")
    hd = parse_header(data[:HEADER])
    check(hd["type"] == T_STOP and hd["flags"] & F_RESPONSE and not hd["flags"] & F_ERROR
          and hd["length"] == HEADER, "5.4", f"Stop reply {hd}")
    try:
        peer.p.wait(30)
    except subprocess.TimeoutExpired:
        raise Mismatch("5.4", "the node did not stop after a Stop on its control socket")
    log(f"Stop on the control socket: replied, node exited {peer.p.returncode}")


def push_sum_session(ps, log):
    """SPEC 5.5: a push is merged by the averaging rule with a = own mass, b = the mass used
    (capped at CAP x max(w, rows)), and w grows by it; bit for bit, read back with GetModel."""
    addr = ps.addr
    deadline = time.time() + 60
    while True:
        st = status(addr)
        if (st.get("round") or 0) >= 1 and st.get("push_sum") and st["push_sum"].get("in_flight") == 0:
            check(not st.get("peers") and st["push_sum"].get("sent") == 0, "5.5",
                  f"the push-sum peer has members or pushed: {st.get('peers')} {st['push_sum']}")
            break
        check(time.time() < deadline, "5.5", f"push-sum peer never finished round 1 / its pushes: {st}")
        time.sleep(0.1)
    arch = st["architecture"]
    h = schema_hash(arch_table(arch))
    rows = float(st["shard_size"])
    # an unparseable sender is not added to the members, so the peer has nobody to push to and
    # its mass stands still (SPEC 5.5: only parseable endpoints join; 5.3 for the same rule)
    sender = "spec-peer"
    y = flat(model_values(get_model(addr, h)))
    w = float(status(addr)["push_sum"]["mass"])
    check(same_bits(flat(model_values(get_model(addr, h))), y), "5.5", "the push-sum peer's model still changes")
    rng = np.random.default_rng(11)
    for m in (500.0, 1e7):   # the second is over the mass cap
        x = (y * (1 + 0.02 * rng.standard_normal(y.size))).astype(np.float32)
        ms = model_state_from(arch, [x[o:o + n] for o, n in _offsets(arch)])
        c = Conn(addr)
        try:
            rid, r = c.call(T_PUSHSUM, bytes(encode_model_state(W().str(sender).f64(m), ms).b))
            check(expect_ok(r, T_PUSHSUM, rid, "5.5") == {} and r["payload"] == b"", "5.5", "PushSum reply not empty")
        finally:
            c.close()
        used = min(m, CAP * max(w, rows))
        expect = average(y, w, x, used)
        got = flat(model_values(get_model(addr, h)))
        check(same_bits(got, expect), "5.5", f"push of mass {m}: model != average(z, w={w}, z_in, {used})")
        w += used
        st = status(addr)
        check(float(st["push_sum"]["mass"]) == w, "5.5", f"mass {st['push_sum']['mass']} != {w} after a push")
        y = got
    check(sender not in (st.get("peers") or []), "5.5", "an unparseable sender joined the members")
    for what, mass, code in (("mass NaN", float("nan"), INVALID_ARGUMENT), ("mass 0", 0.0, INVALID_ARGUMENT)):
        c = Conn(addr)
        try:
            payload = bytes(encode_model_state(W().str(sender).f64(mass), model_state_from(
                arch, [y[o:o + n] for o, n in _offsets(arch)])).b)
            rid, r = c.call(T_PUSHSUM, payload)
            expect_error(r, T_PUSHSUM, rid, code, "5.5", f"PushSum, {what}")
        finally:
            c.close()
    c = Conn(addr)
    try:
        payload = bytes(encode_model_state(W().str("127.0.0.1:9").f64(10.0), model_state_from(
            arch, [y[o:o + n] for o, n in _offsets(arch)])).b)
        rid, r = c.call(T_EXCHANGE, payload)
        expect_error(r, T_EXCHANGE, rid, UNAVAILABLE, "5.5", "GossipExchange to a push-sum peer")
    finally:
        c.close()
    check(same_bits(flat(model_values(get_model(addr, h))), y), "5.5", "a refused push changed the model")
    log(f"push-sum peer {addr}: two pushes merged bit for bit (mass cap applied: mass {w:g}), "
        "NaN/0 mass and GossipExchange refused")


def _offsets(arch):
    out, o = [], 0
    for _, dims in arch_table(arch):
        n = int(np.prod(dims))
        out.append((o, n))
        o += n
    return out


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", help="directory holding gossipd (e.g. .build/debug)")
    ap.add_argument("--vectors", default=os.path.join(ROOT, "Protocol", "vectors"))
    ap.add_argument("--vectors-only", action="store_true")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    try:
        check_vectors(args.vectors, log)
        if not args.vectors_only:
            if not args.bin:
                ap.error("--bin DIR is required unless --vectors-only")
            run_node_checks(args.bin, log)
    except Mismatch as e:
        print(f"spec_peer: MISMATCH {e}", flush=True)
        return 1
    print("spec_peer: OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
