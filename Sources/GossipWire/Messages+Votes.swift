// The two messages of the end of training (SPEC §5.7, §5.8): Votes, which spreads the set of
// peers that judged themselves converged ("done" votes), and WaitConverged, which a tool sends
// to block until a node has finished. Encoding and decoding only; what a node does with them
// is in GossipNode (Convergence.swift, PeerConvergence.swift).

/// Votes request and reply (type 10): the sender's endpoint, its flags and the done voters it
/// knows. Request and reply share this layout (the reply is the responder's).
public struct VotesMessage: Sendable, Equatable {
    /// Bit 0 of `flags`: the sender has finished (its final model is written).
    public static let finishedFlag: UInt8 = 0x01
    /// Bits this version defines; a message with any other bit set is malformed.
    public static let knownFlags: UInt8 = finishedFlag

    public var sender: String
    public var flags: UInt8
    /// Endpoints (HOST:PORT) that voted done, as the sender knows them. At most
    /// `limits.maxPeers`, each at most `limits.maxNameBytes`.
    public var voters: [String]

    public init(sender: String, flags: UInt8, voters: [String]) {
        self.sender = sender
        self.flags = flags
        self.voters = voters
    }

    /// True when the sender says it has finished.
    public var finished: Bool { flags & VotesMessage.finishedFlag != 0 }

    /// Encodes the payload: `str sender, u8 flags, u32 count, count × str endpoint`.
    /// - Throws: `.limitExceeded` when a name or the count is past `limits`; `.malformed` for
    ///   an undefined flag bit.
    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        try checkName(sender, "sender", limits: limits)
        guard flags & ~VotesMessage.knownFlags == 0 else {
            throw WireError(.malformed, "votes flags \(flags) set bits this version does not define (only bit 0)")
        }
        guard voters.count <= limits.maxPeers else {
            throw WireError(.limitExceeded, "\(voters.count) voters exceed the limit of \(limits.maxPeers)")
        }
        var size = ByteWriter.size(ofString: sender) + 1 + 4
        for v in voters {
            try checkName(v, "voter endpoint", limits: limits)
            size += ByteWriter.size(ofString: v)
        }
        var w = ByteWriter(capacity: size)
        w.writeString(sender)
        w.write(flags)
        w.write(UInt32(voters.count))
        for v in voters { w.writeString(v) }
        return ByteSlice(w.storage)
    }

    /// Decodes the payload. The count is bounded by `limits.maxPeers` and by the bytes left
    /// (each entry takes at least 2) before anything is reserved.
    public static func decode(_ payload: ByteSlice, limits: Limits = .default) throws(WireError) -> VotesMessage {
        try payload.read { (r) throws(WireError) in
            let sender = try r.readString("sender", maxBytes: limits.maxNameBytes)
            let at = r.position
            let flags = try r.readUInt8("flags")
            guard flags & ~VotesMessage.knownFlags == 0 else {
                throw WireError(.malformed, at: at, "votes flags \(flags) set bits this version does not define (only bit 0)")
            }
            let countAt = r.position
            let n = try r.readUInt32("voter count")
            guard UInt64(n) <= UInt64(Swift.max(0, limits.maxPeers)) else {
                throw WireError(.limitExceeded, at: countAt, "\(n) voters exceed the limit of \(limits.maxPeers)")
            }
            guard Int(n) <= r.remaining / 2 else {
                throw WireError(.truncated, at: countAt, "\(n) voter entries (at least 2 bytes each) cannot fit in the \(r.remaining) remaining bytes")
            }
            var voters: [String] = []
            voters.reserveCapacity(Int(n))
            for i in 0..<Int(n) { voters.append(try r.readString("voter \(i)", maxBytes: limits.maxNameBytes)) }
            return VotesMessage(sender: sender, flags: flags, voters: voters)
        }
    }
}

/// WaitConverged request (type 11): how long the node may hold the request, in milliseconds.
public struct WaitConvergedRequest: Sendable, Equatable {
    /// The longest hold a node grants: 7 days. A larger value is held this long.
    public static let maxTimeoutMs: UInt32 = 7 * 24 * 3_600_000
    public var timeoutMs: UInt32
    public init(timeoutMs: UInt32) { self.timeoutMs = timeoutMs }

    /// Encodes the payload: `u32 timeout_ms`.
    public func encode() -> ByteSlice {
        var w = ByteWriter(capacity: 4)
        w.write(timeoutMs)
        return ByteSlice(w.storage)
    }

    /// Decodes the payload; 0 is malformed (a wait that cannot last).
    public static func decode(_ payload: ByteSlice) throws(WireError) -> WaitConvergedRequest {
        try payload.read { (r) throws(WireError) in
            let ms = try r.readUInt32("timeout_ms")
            guard ms > 0 else { throw WireError(.malformed, at: 0, "timeout_ms 0: a wait must last at least 1 ms") }
            return WaitConvergedRequest(timeoutMs: ms)
        }
    }
}
