# Minimal reader of gossip wire traffic (Protocol/SPEC.md, version 2): frames, checksums, zlib,
# un-shuffle, chunk reassembly, and the peer lists (endpoint + 32-byte identity) of Register
# and GossipExchange replies. Usage: python3 gossip_decode.py FILE(.bin|.hex)
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

if __name__ == "__main__":
    data = open(sys.argv[1], "rb").read()
    if sys.argv[1].endswith(".hex"):
        data = bytes.fromhex("".join(l for l in data.decode().splitlines() if not l.startswith("#")))
    for h, p in messages(data):
        kind = "error" if h["flags"] & 8 else ("reply" if h["flags"] & 4 else "request")
        line = f'type={h["type"]} {kind} id={h["request_id"]} bytes={len(p)}'
        peers = peers_of(h, p)
        if peers is not None:
            line += " peers=" + ",".join(f'{e} id={i or "unknown"}' for e, i in peers)
        print(line)
