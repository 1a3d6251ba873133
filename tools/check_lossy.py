#!/usr/bin/env python3
# Checks the lossy golden vectors (Protocol/vectors/gossip_exchange_request_{bf16,fp16,int8}.hex)
# against an independent transcription of SPEC §6.1 in numpy: the weights of
# gossip_exchange_request.hex, encoded as BF16 (round to nearest even on the bits), F16
# (numpy's float16 cast, IEEE round to nearest even) and block-scaled I8 (scale = maxabs/127
# in float32, q = rint(x / scale) clamped to +-127), must be the vectors' data bytes exactly;
# and the tables must say the same schema hash as the F32 vector (SPEC §6.3: the hash names F32).
# Usage: python3 tools/check_lossy.py   (exit 0 when every check holds)
import os, struct, sys
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "Protocol"))
import gossip_decode as gd

VECTORS = os.path.join(HERE, "..", "Protocol", "vectors")

def payload(name):
    text = open(os.path.join(VECTORS, name + ".hex")).read()
    data = bytes.fromhex("".join(l for l in text.splitlines() if not l.startswith("#")))
    (h, p), = list(gd.messages(data))
    return h, p

def sections(p):
    """(schema_hash, [(dtype, elems, data bytes)]) of a GossipExchange request payload."""
    (n,) = struct.unpack_from("<H", p, 0)
    off = 2 + n + 8
    (n,) = struct.unpack_from("<H", p, off)
    off += 2 + n + 24
    schema, count = struct.unpack_from("<QI", p, off)
    off += 12
    entries = []
    for _ in range(count):
        (n,) = struct.unpack_from("<H", p, off)
        off += 2 + n
        dtype, rank = struct.unpack_from("<BB", p, off)
        off += 2
        dims = struct.unpack_from("<%dQ" % rank, p, off)
        off += 8 * rank
        (nbytes,) = struct.unpack_from("<Q", p, off)
        off += 8
        entries.append((dtype, int(np.prod(dims)), nbytes))
    data_offset, _ = struct.unpack_from("<QQ", p, off)
    out, at = [], data_offset
    for dtype, elems, nbytes in entries:
        out.append((dtype, elems, p[at: at + nbytes]))
        at += nbytes
    return schema, out

def bf16(x):
    u = x.view(np.uint32).astype(np.uint64)
    nan = np.isnan(x)
    r = np.where(nan, (u | 0x400000) >> 16, (u + 0x7fff + ((u >> 16) & 1)) >> 16)
    return r.astype(np.uint16).tobytes()

def f16(x):
    with np.errstate(over="ignore"):
        return x.astype(np.float16).tobytes()

def i8(x):
    out = b""
    for s in range(0, len(x), 256):
        blk = x[s: s + 256]
        scale = np.float32(np.float32(np.max(np.abs(blk))) / np.float32(127))
        if scale == 0:
            q = np.zeros(len(blk), np.int8)
        else:
            q = np.clip(np.rint((blk / scale).astype(np.float32)), -127, 127).astype(np.int8)
        out += struct.pack("<f", scale) + q.tobytes()
    return out

def main():
    ok = True
    _, p = payload("gossip_exchange_request")
    schema, tensors = sections(p)
    weights = [np.frombuffer(d, np.float32) for _, _, d in tensors]
    for name, code, enc in (("bf16", 3, bf16), ("fp16", 2, f16), ("int8", 4, i8)):
        _, q = payload("gossip_exchange_request_" + name)
        s2, t2 = sections(q)
        for w, (dtype, elems, data) in zip(weights, t2):
            good = dtype == code and data == enc(w) and s2 == schema
            ok &= good
            print("%-5s dtype=%d values=%d bytes=%d %s" % (name, dtype, elems, len(data), "ok" if good else "MISMATCH"))
    # Edge cases of the conversions.
    edge = np.array([1 + 2**-11, 1 + 3 * 2**-11, 65504, 65519.99, 65520, 2**-24, 2**-25, 1.5 * 2**-24], np.float32)
    want_f16 = [0x3c00, 0x3c02, 0x7bff, 0x7bff, 0x7c00, 0x0001, 0x0000, 0x0002]
    got = list(np.frombuffer(f16(edge), np.uint16))
    ok &= got == want_f16
    print("f16 edge cases", "ok" if got == want_f16 else "MISMATCH %s" % [hex(v) for v in got])
    edge_b = np.array([0x3f808000, 0x3f818000, 0x7f7fffff, 0x7f800001], np.uint32).view(np.float32)
    got_b = [int(v) for v in np.frombuffer(bf16(edge_b), np.uint16)]
    ok &= got_b == [0x3f80, 0x3f82, 0x7f80, 0x7fc0]
    print("bf16 edge cases", "ok" if got_b == [0x3f80, 0x3f82, 0x7f80, 0x7fc0] else "MISMATCH %s" % [hex(v) for v in got_b])
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
