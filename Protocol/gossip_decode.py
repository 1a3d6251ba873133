# Minimal reader of gossip wire traffic (Protocol/SPEC.md): frames, checksums, zlib,
# un-shuffle, chunk reassembly. Usage: python3 gossip_decode.py FILE(.bin|.hex)
import struct, sys, zlib

def frames(buf):
    """Yield (header dict, raw payload) for each frame in buf."""
    off = 0
    while off + 24 <= len(buf):
        length, ver, flags, mtype, rid, chunk, total, crc = struct.unpack_from("<IBBHIIII", buf, off)
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

if __name__ == "__main__":
    data = open(sys.argv[1], "rb").read()
    if sys.argv[1].endswith(".hex"):
        data = bytes.fromhex("".join(l for l in data.decode().splitlines() if not l.startswith("#")))
    for h, p in messages(data):
        kind = "error" if h["flags"] & 8 else ("reply" if h["flags"] & 4 else "request")
        print(f'type={h["type"]} {kind} id={h["request_id"]} bytes={len(p)}')
