// Classic libpcap file parsing from bytes in memory (no I/O): both byte orders, micro- and
// nanosecond magics, link types Ethernet (1), Linux SLL (113), SLL2 (276), BSD loopback
// NULL (0) and LOOP (108), raw IP (101); IPv4 and IPv6; TCP segments out. Used by framedump.

/// One TCP segment found in a capture.
public struct TCPSegment: Sendable, Equatable {
    public var source: String        // "ip:port"
    public var destination: String
    public var sequence: UInt32
    public var syn: Bool
    public var fin: Bool
    public var payload: [UInt8]
    /// Index of the packet in the capture (0-based).
    public var packetIndex: Int
}

/// Errors reading a capture file.
public struct PcapError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var offset: Int
    public var description: String { "\(message) (at byte offset \(offset) of the capture)" }
}

public enum Pcap {
    /// True when `bytes` start with a classic pcap magic number (either byte order).
    public static func isPcap(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= 4 else { return false }
        let m = UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
        return [0xa1b2_c3d4, 0xd4c3_b2a1, 0xa1b2_3c4d, 0x4d3c_b2a1].contains(m)
    }

    /// Extracts every TCP segment of a classic pcap capture. Non-TCP packets are skipped;
    /// a record cut short at the end of the file ends the capture.
    /// - Throws: `PcapError` for a bad magic or an unsupported link type.
    public static func tcpSegments(_ bytes: [UInt8]) throws(PcapError) -> [TCPSegment] {
        guard bytes.count >= 24, isPcap(bytes) else {
            throw PcapError(message: "not a classic pcap file (bad magic); pcapng is not supported, convert with editcap -F pcap", offset: 0)
        }
        let swapped = bytes[0] == 0xa1 || bytes[0] == 0x4d   // magic stored big-endian
        func u32(_ at: Int) -> UInt32 {
            let le = UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
            return swapped ? le.byteSwapped : le
        }
        let linkType = u32(20) & 0x0fff_ffff
        guard [0, 1, 101, 108, 113, 276].contains(linkType) else {
            throw PcapError(message: "link type \(linkType) is not supported (use Ethernet, Linux cooked, loopback or raw IP)", offset: 20)
        }
        var out: [TCPSegment] = []
        var at = 24
        var index = 0
        while at + 16 <= bytes.count {
            let incl = Int(u32(at + 8))
            let start = at + 16
            guard incl <= bytes.count - start else { break }
            let packet = bytes[start..<(start + incl)]
            if let seg = parseLink(packet, linkType: linkType, index: index) { out.append(seg) }
            at = start + incl
            index += 1
        }
        return out
    }

    static func be16(_ b: ArraySlice<UInt8>, _ at: Int) -> Int { Int(b[b.startIndex + at]) << 8 | Int(b[b.startIndex + at + 1]) }
    static func be32(_ b: ArraySlice<UInt8>, _ at: Int) -> UInt32 {
        UInt32(b[b.startIndex + at]) << 24 | UInt32(b[b.startIndex + at + 1]) << 16 | UInt32(b[b.startIndex + at + 2]) << 8 | UInt32(b[b.startIndex + at + 3])
    }

    static func parseLink(_ p: ArraySlice<UInt8>, linkType: UInt32, index: Int) -> TCPSegment? {
        var ipStart: Int
        switch linkType {
        case 1:
            guard p.count >= 14 else { return nil }
            var type = be16(p, 12)
            ipStart = 14
            while type == 0x8100 || type == 0x88a8 {   // VLAN tags
                guard p.count >= ipStart + 4 else { return nil }
                type = be16(p, ipStart + 2)
                ipStart += 4
            }
            guard type == 0x0800 || type == 0x86dd else { return nil }
        case 113:
            guard p.count >= 16 else { return nil }
            ipStart = 16
        case 276:
            guard p.count >= 20 else { return nil }
            ipStart = 20
        case 0, 108:
            guard p.count >= 4 else { return nil }
            ipStart = 4
        default:
            ipStart = 0
        }
        return parseIP(p.dropFirst(ipStart), index: index)
    }

    static func parseIP(_ p: ArraySlice<UInt8>, index: Int) -> TCPSegment? {
        guard let first = p.first else { return nil }
        let src: String, dst: String
        let tcp: ArraySlice<UInt8>
        switch first >> 4 {
        case 4:
            guard p.count >= 20 else { return nil }
            let ihl = Int(first & 0x0f) * 4
            let total = be16(p, 2)
            guard ihl >= 20, p[p.startIndex + 9] == 6, total >= ihl, total <= p.count else { return nil }
            src = p[(p.startIndex + 12)..<(p.startIndex + 16)].map(String.init).joined(separator: ".")
            dst = p[(p.startIndex + 16)..<(p.startIndex + 20)].map(String.init).joined(separator: ".")
            tcp = p[(p.startIndex + ihl)..<(p.startIndex + total)]
        case 6:
            guard p.count >= 40, p[p.startIndex + 6] == 6 else { return nil }
            let len = be16(p, 4)
            guard 40 + len <= p.count else { return nil }
            src = ipv6(p[(p.startIndex + 8)..<(p.startIndex + 24)])
            dst = ipv6(p[(p.startIndex + 24)..<(p.startIndex + 40)])
            tcp = p[(p.startIndex + 40)..<(p.startIndex + 40 + len)]
        default:
            return nil
        }
        guard tcp.count >= 20 else { return nil }
        let off = Int(tcp[tcp.startIndex + 12] >> 4) * 4
        guard off >= 20, off <= tcp.count else { return nil }
        let flags = tcp[tcp.startIndex + 13]
        let v6 = first >> 4 == 6
        return TCPSegment(source: (v6 ? "[\(src)]" : src) + ":\(be16(tcp, 0))",
                          destination: (v6 ? "[\(dst)]" : dst) + ":\(be16(tcp, 2))",
                          sequence: be32(tcp, 4), syn: flags & 0x02 != 0, fin: flags & 0x01 != 0,
                          payload: Array(tcp.dropFirst(off)), packetIndex: index)
    }

    static func ipv6(_ b: ArraySlice<UInt8>) -> String {
        var groups: [String] = []
        var i = b.startIndex
        while i < b.endIndex { groups.append(String(Int(b[i]) << 8 | Int(b[i + 1]), radix: 16)); i += 2 }
        // Compress the longest run of zero groups.
        var best = (start: -1, len: 0), cur = (start: -1, len: 0)
        for (k, g) in groups.enumerated() {
            if g == "0" { cur = cur.start < 0 ? (k, 1) : (cur.start, cur.len + 1); if cur.len > best.len { best = cur } } else { cur = (-1, 0) }
        }
        guard best.len > 1 else { return groups.joined(separator: ":") }
        let head = groups[..<best.start].joined(separator: ":"), tail = groups[(best.start + best.len)...].joined(separator: ":")
        return head + "::" + tail
    }
}
