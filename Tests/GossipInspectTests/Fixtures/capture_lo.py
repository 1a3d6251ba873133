#!/usr/bin/env python3
"""Captures TCP traffic on Linux loopback into a classic pcap file (link type EN10MB), as
`tcpdump -i lo -w OUT 'tcp portrange LO-HI'` would, for machines without tcpdump. Needs
root (or CAP_NET_RAW): it reads an AF_PACKET socket bound to `lo`.

    python3 capture_lo.py OUT.pcap LO HI &      # ports LO..HI, either side of a connection
    ... run the traffic ...
    kill -INT %1                                # writes what it saw and exits

Each packet crosses `lo` twice (sent, then received); like libpcap it keeps the received
copy only (packet type PACKET_OUTGOING is skipped). Timestamps are taken when the packet is
read (microseconds). Stdlib only.
"""
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def main():
    out, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind(("lo", 0))
    s.settimeout(0.2)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    packets = []
    print("capture_lo: listening on lo, tcp ports %d-%d" % (lo, hi), file=sys.stderr, flush=True)
    while not stop:
        try:
            frame, addr = s.recvfrom(262144)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        if addr[2] == PACKET_OUTGOING or len(frame) < 14 + 20 + 20:
            continue
        if struct.unpack_from("!H", frame, 12)[0] != 0x0800:      # IPv4 only
            continue
        ihl = (frame[14] & 0x0F) * 4
        if frame[14 + 9] != 6:                                    # TCP
            continue
        sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
        if not (lo <= sport <= hi or lo <= dport <= hi):
            continue
        packets.append((time.time(), frame))
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for ts, frame in packets:
            sec = int(ts)
            f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)))
            f.write(frame)
    print("capture_lo: wrote %d packets to %s" % (len(packets), out), file=sys.stderr)


if __name__ == "__main__":
    main()
