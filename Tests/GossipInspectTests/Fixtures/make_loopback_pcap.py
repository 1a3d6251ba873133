#!/usr/bin/env python3
"""Sends golden vector frames over a real TCP connection on 127.0.0.1, both directions,
each direction split across several send() calls, so that `tcpdump -i lo` records genuine
loopback traffic of the protocol. Used to make loopback.pcap (see README.md here):

    tcpdump -i lo -w loopback.pcap -U 'tcp port 47001' &
    python3 make_loopback_pcap.py 47001
    kill %1

Stdlib only. The frames are the Protocol/vectors/*.hex files named below, sent unchanged.
"""
import os
import socket
import sys
import threading
import time

VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "Protocol", "vectors")

# client -> server, then server -> client (requests and their replies, one vector each).
CLIENT_TO_SERVER = ["register_request", "getmodel_request", "gossip_exchange_request_chunked", "ping_request"]
SERVER_TO_CLIENT = ["register_reply", "getmodel_reply_zlib_shuffle", "gossip_exchange_reply", "ping_reply"]
# Cut points (bytes into each direction's stream): mid-header, mid-payload, across frames.
CUTS = [5, 30, 61, 130, 200, 333, 500]


def load(name):
    with open(os.path.join(VECTORS, name + ".hex")) as f:
        return bytes.fromhex("".join(l for l in f if not l.startswith("#")).replace("\n", " "))


def pieces(data):
    cuts = [0] + [c for c in CUTS if c < len(data)] + [len(data)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:])]


def send_split(sock, data):
    for p in pieces(data):
        sock.sendall(p)
        time.sleep(0.02)   # one segment per send (TCP_NODELAY, no coalescing)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("peer closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 47001
    up = b"".join(load(n) for n in CLIENT_TO_SERVER)
    down = b"".join(load(n) for n in SERVER_TO_CLIENT)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    got = {}

    def serve():
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        got["up"] = recv_exact(conn, len(up))
        send_split(conn, down)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    # A fixed client port, so that a regenerated capture keeps the directions the test names.
    c = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.1", 55514))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    send_split(c, up)
    got["down"] = recv_exact(c, len(down))
    c.shutdown(socket.SHUT_WR)
    c.close()
    t.join()
    srv.close()
    assert got["up"] == up and got["down"] == down
    print("sent %d bytes up, %d bytes down in %d + %d send() calls" % (len(up), len(down), len(pieces(up)), len(pieces(down))))


if __name__ == "__main__":
    main()
