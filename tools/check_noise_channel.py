#!/usr/bin/env python3
"""Independent cross-check of the gossip encrypted channel (Protocol/SPEC.md section 13).

Implements the handshake (Noise_XXpsk3_25519_AESGCM_SHA256 with prologue "gossip/2" and the
network key as PSK), the TCP framing and the record layer from the SPEC text alone, with the
`cryptography` package, and verifies Protocol/vectors/noise_handshake.txt byte for byte: the
public keys, all three handshake messages (each side writes its own and reads the other's),
the handshake hash, the Split keys, the key-log line, and the first record, whose plaintext
must be exactly Protocol/vectors/ping_request.hex.

Usage: tools/check_noise_channel.py [VECTOR_FILE]; exit 0 when everything matches, 1 on a
mismatch, 2 when the `cryptography` package is missing.
"""
import hashlib
import hmac
import os
import sys

try:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives import serialization
except ImportError:
    print("check_noise_channel: the Python 'cryptography' package is missing (pip install cryptography)", file=sys.stderr)
    sys.exit(2)

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "Protocol", "vectors")

PROTOCOL = b"Noise_XXpsk3_25519_AESGCM_SHA256"
PROLOGUE = b"gossip/2"
MAX_NONCE = 2**64 - 1


def raw_public(priv):
    return priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def dh(priv, pub_bytes):
    out = priv.exchange(X25519PublicKey.from_public_bytes(pub_bytes))
    if out == bytes(32):
        raise ValueError("low-order public key")
    return out


def hkdf(ck, ikm, n):
    temp = hmac.new(ck, ikm, hashlib.sha256).digest()
    outs, prev = [], b""
    for i in range(1, n + 1):
        prev = hmac.new(temp, prev + bytes([i]), hashlib.sha256).digest()
        outs.append(prev)
    return outs


def nonce(n):
    return bytes(4) + n.to_bytes(8, "big")


class CipherState:
    def __init__(self, k=None):
        self.k, self.n = k, 0

    def encrypt(self, ad, p):
        if self.k is None:
            return p
        assert self.n < MAX_NONCE
        c = AESGCM(self.k).encrypt(nonce(self.n), p, ad)
        self.n += 1
        return c

    def decrypt(self, ad, c):
        if self.k is None:
            return c
        assert self.n < MAX_NONCE
        p = AESGCM(self.k).decrypt(nonce(self.n), c, ad)  # raises InvalidTag
        self.n += 1
        return p

    def rekey(self):
        self.k = AESGCM(self.k).encrypt(nonce(MAX_NONCE), bytes(32), b"")[:32]


class Symmetric:
    def __init__(self):
        self.h = PROTOCOL if len(PROTOCOL) == 32 else hashlib.sha256(PROTOCOL).digest()
        assert len(self.h) == 32
        self.ck = self.h
        self.cs = CipherState()

    def mix_hash(self, data):
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm):
        self.ck, k = hkdf(self.ck, ikm, 2)
        self.cs = CipherState(k)

    def mix_key_and_hash(self, ikm):
        self.ck, th, k = hkdf(self.ck, ikm, 3)
        self.mix_hash(th)
        self.cs = CipherState(k)

    def encrypt_and_hash(self, p):
        c = self.cs.encrypt(self.h, p)
        self.mix_hash(c)
        return c

    def decrypt_and_hash(self, c):
        p = self.cs.decrypt(self.h, c)
        self.mix_hash(c)
        return p

    def split(self):
        k1, k2 = hkdf(self.ck, b"", 2)
        return CipherState(k1), CipherState(k2)


class Side:
    """One side of XXpsk3: -> e / <- e, ee, s, es / -> s, se, psk (every e also MixKey(e))."""

    def __init__(self, initiator, s, e, psk):
        self.initiator, self.s, self.e, self.psk = initiator, s, e, psk
        self.re = self.rs = None
        self.sym = Symmetric()
        self.sym.mix_hash(PROLOGUE)

    def _e_out(self):
        pub = raw_public(self.e)
        self.sym.mix_hash(pub)
        self.sym.mix_key(pub)
        return pub

    def _e_in(self, pub):
        self.re = pub
        self.sym.mix_hash(pub)
        self.sym.mix_key(pub)

    def write(self, index):
        out = b""
        if index == 0:
            out += self._e_out()
        elif index == 1:
            out += self._e_out()
            self.sym.mix_key(dh(self.e, self.re))                      # ee
            out += self.sym.encrypt_and_hash(raw_public(self.s))       # s
            self.sym.mix_key(dh(self.s, self.re))                      # es (responder: s, re)
        else:
            out += self.sym.encrypt_and_hash(raw_public(self.s))       # s
            self.sym.mix_key(dh(self.s, self.re))                      # se (initiator: s, re)
            self.sym.mix_key_and_hash(self.psk)                        # psk
        out += self.sym.encrypt_and_hash(b"")                          # empty payload
        return out

    def read(self, index, m):
        at = 0
        if index == 0:
            self._e_in(m[:32]); at = 32
        elif index == 1:
            self._e_in(m[:32]); at = 32
            self.sym.mix_key(dh(self.e, self.re))                      # ee
            self.rs = self.sym.decrypt_and_hash(m[at:at + 48]); at += 48
            self.sym.mix_key(dh(self.e, self.rs))                      # es (initiator: e, rs)
        else:
            self.rs = self.sym.decrypt_and_hash(m[at:at + 48]); at += 48
            self.sym.mix_key(dh(self.e, self.rs))                      # se (responder: e, rs)
            self.sym.mix_key_and_hash(self.psk)                        # psk
        payload = self.sym.decrypt_and_hash(m[at:])
        assert payload == b"", "handshake payloads are empty"


def framed(m):
    assert len(m) <= 65535
    return len(m).to_bytes(2, "big") + m


def hex_file(path):
    text = open(path, encoding="utf-8").read()
    digits = "".join(c for line in text.splitlines() if not line.startswith("#") for c in line if c in "0123456789abcdefABCDEF")
    return bytes.fromhex(digits)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(VECTORS, "noise_handshake.txt")
    fields = {}
    for line in open(path, encoding="utf-8"):
        if line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip()] = value.strip()
    b = lambda k: bytes.fromhex(fields[k])
    failures = []

    def check(name, got, want):
        if got != want:
            failures.append(f"{name}: got {got.hex() if isinstance(got, bytes) else got}, vector has {want.hex() if isinstance(want, bytes) else want}")

    check("protocol", fields["protocol"].encode(), PROTOCOL)
    check("prologue", b("prologue"), PROLOGUE)
    psk = b("network_key")
    key = lambda k: X25519PrivateKey.from_private_bytes(b(k))
    i_s, i_e, r_s, r_e = key("initiator_static_private"), key("initiator_ephemeral_private"), key("responder_static_private"), key("responder_ephemeral_private")
    for name, priv in [("initiator_static_public", i_s), ("initiator_ephemeral_public", i_e),
                       ("responder_static_public", r_s), ("responder_ephemeral_public", r_e)]:
        check(name, raw_public(priv), b(name))

    ini = Side(True, i_s, i_e, psk)
    res = Side(False, r_s, r_e, psk)
    m1 = framed(ini.write(0)); check("message1", m1, b("message1"))
    check("message1 length prefix", int.from_bytes(b("message1")[:2], "big"), 48)
    res.read(0, m1[2:])   # (equal to the vector's when the check above passed)
    m2 = framed(res.write(1)); check("message2", m2, b("message2"))
    check("message2 length prefix", int.from_bytes(b("message2")[:2], "big"), 96)
    ini.read(1, m2[2:])
    check("responder static learnt by the initiator", ini.rs, b("responder_static_public"))
    m3 = framed(ini.write(2)); check("message3", m3, b("message3"))
    check("message3 length prefix", int.from_bytes(b("message3")[:2], "big"), 64)
    res.read(2, m3[2:])
    check("initiator static learnt by the responder", res.rs, b("initiator_static_public"))
    check("handshake_hash (initiator)", ini.sym.h, b("handshake_hash"))
    check("handshake_hash (responder)", res.sym.h, b("handshake_hash"))

    i_send, i_recv = ini.sym.split()   # initiator sends with c1, receives with c2
    r_recv, r_send = res.sym.split()   # responder the opposite
    check("k_i2r", i_send.k, b("k_i2r")); check("k_i2r (responder)", r_recv.k, b("k_i2r"))
    check("k_r2i", i_recv.k, b("k_r2i")); check("k_r2i (responder)", r_send.k, b("k_r2i"))
    line = f"GOSSIP_NOISE_AESGCM {raw_public(i_e).hex()} {i_send.k.hex()} {i_recv.k.hex()}"
    check("keylog_line", line.encode(), fields["keylog_line"].encode())

    ping = hex_file(os.path.join(VECTORS, "ping_request.hex"))
    check("record1_plaintext is ping_request.hex", b("record1_plaintext"), ping)
    record = framed(i_send.encrypt(b"", ping))
    check("record1", record, b("record1"))
    body = b("record1")[2:]
    check("record1 length prefix", int.from_bytes(b("record1")[:2], "big"), len(body))
    try:
        check("record1 opened by the responder", r_recv.decrypt(b"", body), ping)
    except Exception as e:  # InvalidTag: the vector's record does not authenticate
        failures.append(f"record1 does not open with k_i2r at nonce 0: {e!r}")

    if failures:
        for f in failures:
            print("MISMATCH " + f, file=sys.stderr)
        return 1
    print(f"check_noise_channel: {os.path.relpath(path)} verified byte for byte (handshake, Split keys, key log line, first record)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # a handshake message of the vector that does not authenticate
        print(f"MISMATCH the vector does not follow SPEC section 13: {e!r}", file=sys.stderr)
        sys.exit(1)
