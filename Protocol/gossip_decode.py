# Minimal reader of gossip wire traffic (Protocol/SPEC.md, version 2): frames, checksums, zlib,
# un-shuffle, chunk reassembly, the peer lists (endpoint + 32-byte identity) of Register
# and GossipExchange replies, and the models (ModelState, §6.1) of GetModel replies,
# GossipExchange and PushSum messages in every dtype: F32, and the lossy F16, BF16 and
# block-scaled I8 of §6.5, dequantized to float32 (with --models: each tensor's dtype, shape,
# min and max). Usage: python3 gossip_decode.py [--models] FILE(.bin|.hex)
import struct, sys, zlib

VERSION = 2

def frames(buf):
    """Yield (header dict, raw payload) for each frame in buf."""
    off = 0
    while off + 24 <= len(buf):
        length, ver, flags, mtype, rid, chunk, total, crc = struct.unpack_from("<IBBHIIII", buf, off)
        assert ver == VERSION, "protocol version %d is not supported; this reader speaks version %d" % (ver, VERSION)
        payload = buf[off + 24: off + length]
        if flags & 0x20:
            assert zlib.crc32(payload) == crc, "checksum mismatch"
        if flags & 0x01:
            payload = zlib.decompress(payload)
            if flags & 0x02:  # un-shuffle 4-byte elements
                n = len(payload) // 4
                body = bytearray(payload)
                for i in range(n):
                    for k in range(4):
                        body[4 * i + k] = payload[k * n + i]
                payload = bytes(body)
        yield dict(off=off, version=ver, flags=flags, type=mtype, request_id=rid,
                   chunk=chunk, total=total, end=bool(flags & 0x10)), payload
        off += length

def messages(buf):
    """Reassemble chunked messages: yield (first header, whole payload)."""
    parts, first = [], None
    for h, p in frames(buf):
        first = first or h
        parts.append(p)
        if h["end"]:
            yield first, b"".join(parts)
            parts, first = [], None

def peerlist(p, off):
    """Read a peerlist at off (SPEC §5): u32 count, then per entry str endpoint, u8[32]
    identity (all zero = not known, None). Returns ([(endpoint, identity hex or None)], end)."""
    (count,) = struct.unpack_from("<I", p, off)
    off += 4
    assert count <= (len(p) - off) // 34, "%d peer entries cannot fit in %d bytes" % (count, len(p) - off)
    peers = []
    for _ in range(count):
        (n,) = struct.unpack_from("<H", p, off)
        endpoint = p[off + 2: off + 2 + n].decode("utf-8")
        identity = p[off + 2 + n: off + 2 + n + 32]
        assert len(identity) == 32, "peer identity runs past the payload"
        peers.append((endpoint, identity.hex() if any(identity) else None))
        off += 2 + n + 32
    return peers, off

def peers_of(h, p):
    """The peer list of a Register reply (type 1) or GossipExchange reply (type 3), else None."""
    if h["flags"] & 0x0C != 0x04:
        return None
    if h["type"] == 1:
        return peerlist(p, 0)[0]
    if h["type"] == 3:
        return peerlist(p, 8)[0]   # after f64 weight
    return None

DTYPES = {1: "F32", 2: "F16", 3: "BF16", 4: "I8"}
I8_BLOCK = 256

def dtype_bytes(dtype, n):
    """byte_count of n values (SPEC §6.1)."""
    return {1: 4 * n, 2: 2 * n, 3: 2 * n, 4: n + 4 * -(-n // I8_BLOCK)}[dtype]

def dequantize(dtype, data, n):
    """The n float32 values of one tensor's data (SPEC §6.1, §6.5), as Python floats."""
    if dtype == 1:
        return list(struct.unpack_from("<%df" % n, data))
    if dtype == 2:
        return list(struct.unpack_from("<%de" % n, data))
    if dtype == 3:
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in struct.unpack_from("<%dH" % n, data)]
    out, off = [], 0
    while len(out) < n:
        k = min(I8_BLOCK, n - len(out))
        (scale,) = struct.unpack_from("<f", data, off)
        assert not (struct.unpack_from("<I", data, off)[0] >> 31) and scale == scale and scale != float("inf"), \
            "I8 block scale %r is negative, NaN or infinite (SPEC §6.1)" % scale
        q = struct.unpack_from("<%db" % k, data, off + 4)
        out += [struct.unpack("<f", struct.pack("<f", v * scale))[0] for v in q]
        off += 4 + k
    return out

def model_at(p, off):
    """Read a ModelState section at off (SPEC §6.1). Returns (architecture, [(name, dtype, dims, values)])."""
    (n,) = struct.unpack_from("<H", p, off)
    arch = p[off + 2: off + 2 + n].decode("utf-8")
    off += 2 + n + 24
    schema_hash, count = struct.unpack_from("<QI", p, off)
    off += 12
    entries = []
    for _ in range(count):
        (n,) = struct.unpack_from("<H", p, off)
        name = p[off + 2: off + 2 + n].decode("utf-8")
        off += 2 + n
        dtype, rank = struct.unpack_from("<BB", p, off)
        off += 2
        dims = list(struct.unpack_from("<%dQ" % rank, p, off))
        off += 8 * rank
        (nbytes,) = struct.unpack_from("<Q", p, off)
        off += 8
        elems = 1
        for d in dims:
            elems *= d
        assert dtype in DTYPES, "unknown dtype %d" % dtype
        assert nbytes == dtype_bytes(dtype, elems), "tensor %s: byte count %d does not follow from %s %s" % (name, nbytes, DTYPES[dtype], dims)
        entries.append((name, dtype, dims, elems, nbytes))
    data_offset, data_length = struct.unpack_from("<QQ", p, off)
    at, tensors = data_offset, []
    for name, dtype, dims, elems, nbytes in entries:
        tensors.append((name, DTYPES[dtype], dims, dequantize(dtype, p[at: at + nbytes], elems)))
        at += nbytes
    return arch, tensors

def model_of(h, p):
    """The model of a GetModel reply, GossipExchange request or reply, or PushSum request; else None."""
    kind = h["flags"] & 0x0C
    if kind == 0x08 or (h["type"] == 2 and kind != 0x04):
        return None
    if h["type"] in (3, 8) and kind == 0:
        (n,) = struct.unpack_from("<H", p, 0)
        return model_at(p, 2 + n + 8)          # after str sender, f64 weight (mass)
    if h["type"] == 3 and kind == 0x04:
        return model_at(p, peerlist(p, 8)[1])  # after f64 weight, peerlist
    if h["type"] == 2:
        return model_at(p, 0)
    return None

if __name__ == "__main__":
    show_models = "--models" in sys.argv[1:]
    path = [a for a in sys.argv[1:] if a != "--models"][0]
    data = open(path, "rb").read()
    if path.endswith(".hex"):
        data = bytes.fromhex("".join(l for l in data.decode().splitlines() if not l.startswith("#")))
    for h, p in messages(data):
        kind = "error" if h["flags"] & 8 else ("reply" if h["flags"] & 4 else "request")
        line = f'type={h["type"]} {kind} id={h["request_id"]} bytes={len(p)}'
        peers = peers_of(h, p)
        if peers is not None:
            line += " peers=" + ",".join(f'{e} id={i or "unknown"}' for e, i in peers)
        model = model_of(h, p) if show_models else None
        if model is not None:
            arch, tensors = model
            line += " model=" + arch
            for name, dtype, dims, values in tensors:
                finite = [v for v in values if v == v and abs(v) != float("inf")]
                line += " %s:%s%s" % (name, dtype, dims)
                if finite:
                    line += "[min=%.6g max=%.6g]" % (min(finite), max(finite))
        print(line)
