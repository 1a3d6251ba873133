// TCP stream reassembly for captures: per direction, orders segments by sequence number,
// drops retransmitted bytes, and buffers out-of-order segments until the gap fills. Simple
// by design (no window or timestamp logic): enough to read our own traffic.

/// The reassembled byte stream of one direction of one TCP connection.
public struct TCPStream: Sendable, Equatable {
    public var source: String
    public var destination: String
    public var bytes: [UInt8]
    /// True when a gap never filled (bytes after it are missing).
    public var hasGap: Bool
    /// "source > destination".
    public var direction: String { "\(source) > \(destination)" }
}

public enum TCPReassembly {
    /// Reassembles `segments` (in capture order) into one stream per direction, in order of
    /// each direction's first segment.
    public static func streams(_ segments: [TCPSegment]) -> [TCPStream] {
        struct State {
            var source: String, destination: String
            var next: UInt32?          // next expected sequence number
            var bytes: [UInt8] = []
            var pending: [UInt32: [UInt8]] = [:]
        }
        var order: [String] = []
        var states: [String: State] = [:]
        for seg in segments {
            let key = seg.source + ">" + seg.destination
            var s = states[key] ?? { order.append(key); return State(source: seg.source, destination: seg.destination) }()
            var seq = seg.sequence
            if seg.syn { seq = seq &+ 1; if s.next == nil { s.next = seq } }
            if !seg.payload.isEmpty {
                if s.next == nil { s.next = seq }
                if seg.payload.count > (s.pending[seq]?.count ?? 0) { s.pending[seq] = seg.payload }
                drain(&s.next, &s.bytes, &s.pending)
            }
            states[key] = s
        }
        return order.map { key in
            let s = states[key]!
            return TCPStream(source: s.source, destination: s.destination, bytes: s.bytes, hasGap: !s.pending.isEmpty)
        }
    }

    /// Appends every pending segment that starts at or before `next`, trimming overlap.
    private static func drain(_ next: inout UInt32?, _ bytes: inout [UInt8], _ pending: inout [UInt32: [UInt8]]) {
        guard var n = next else { return }
        var progressed = true
        while progressed {
            progressed = false
            for (seq, data) in pending {
                let behind = Int(Int32(bitPattern: n &- seq))   // bytes of `data` already delivered
                if behind < 0 { continue }                       // still in the future
                pending[seq] = nil
                if behind < data.count {
                    bytes += data[behind...]
                    n = n &+ UInt32(data.count - behind)
                }
                progressed = true
                break
            }
        }
        next = n
    }
}
