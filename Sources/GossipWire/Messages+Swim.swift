// The two SWIM messages (SPEC §5.10): Probe (12, "ping" and its ack) and ProbeRequest (13,
// "ping-req" and its indirect ack). Both directions of both types share one layout. They
// travel as single-frame UDP datagrams (sealed with the network key, §13.13), so a body is
// small: at most `SwimBody.maxUpdates` updates and `SwimBody.maxDatagramBytes` in all.
// Encoding and decoding only; the protocol is GossipNode's Swim.swift.

/// A piggybacked membership update: `u8 status, u32 incarnation, str member`.
public struct SwimWireUpdate: Sendable, Equatable {
    /// 0 alive, 1 suspect, 2 dead; anything else is malformed.
    public var status: UInt8
    public var incarnation: UInt32
    public var member: String

    public init(status: UInt8, incarnation: UInt32, member: String) {
        self.status = status
        self.incarnation = incarnation
        self.member = member
    }
}

/// The body of Probe and ProbeRequest, request and reply (SPEC §5.10):
/// `str sender, u32 incarnation, str target, u8 count, count × update`.
public struct SwimBody: Sendable, Equatable {
    /// Most updates in one body.
    public static let maxUpdates = 64
    /// Largest datagram a node sends or accepts (sealed or not): fits a 1500-byte MTU with
    /// IPv6 and UDP headers to spare.
    public static let maxDatagramBytes = 1400
    /// Longest member id (sender, target, update member).
    public static let maxIDBytes = 255

    /// The sender's member id: the HOST:PORT of its TCP listener (its UDP socket has the same port).
    public var sender: String
    /// The sender's incarnation.
    public var incarnation: UInt32
    /// Probe request: the member probed (the receiver). ProbeRequest request: the member to
    /// probe. ProbeRequest reply: the member that answered. Probe reply (ack): empty.
    public var target: String
    public var updates: [SwimWireUpdate]

    public init(sender: String, incarnation: UInt32, target: String, updates: [SwimWireUpdate]) {
        self.sender = sender
        self.incarnation = incarnation
        self.target = target
        self.updates = updates
    }

    static func checkID(_ s: String, _ what: String, at: Int? = nil) throws(WireError) {
        guard s.utf8.count <= maxIDBytes else {
            throw WireError(.limitExceeded, at: at, "\(what) of \(s.utf8.count) bytes exceeds the \(maxIDBytes)-byte limit of a member id")
        }
    }

    /// The exact encoded size.
    public var encodedSize: Int {
        updates.reduce(ByteWriter.size(ofString: sender) + 4 + ByteWriter.size(ofString: target) + 1) {
            $0 + 5 + ByteWriter.size(ofString: $1.member)
        }
    }

    /// Encodes the payload.
    /// - Throws: `.limitExceeded` for an id past 255 bytes or more than 64 updates;
    ///   `.malformed` for a status past 2.
    public func encode() throws(WireError) -> ByteSlice {
        try Self.checkID(sender, "sender")
        try Self.checkID(target, "target")
        guard updates.count <= Self.maxUpdates else {
            throw WireError(.limitExceeded, "\(updates.count) updates exceed the limit of \(Self.maxUpdates) per message")
        }
        for u in updates {
            try Self.checkID(u.member, "update member")
            guard u.status <= 2 else { throw WireError(.malformed, "update status \(u.status) is not 0 (alive), 1 (suspect) or 2 (dead)") }
        }
        var w = ByteWriter(capacity: encodedSize)
        w.writeString(sender)
        w.write(incarnation)
        w.writeString(target)
        w.write(UInt8(updates.count))
        for u in updates {
            w.write(u.status)
            w.write(u.incarnation)
            w.writeString(u.member)
        }
        return ByteSlice(w.storage)
    }

    /// Decodes the payload strictly: ids ≤ 255 bytes of UTF-8, ≤ 64 updates, status 0...2, no trailing bytes.
    public static func decode(_ payload: ByteSlice) throws(WireError) -> SwimBody {
        try payload.read { (r) throws(WireError) in
            let sender = try r.readString("sender", maxBytes: maxIDBytes)
            let incarnation = try r.readUInt32("incarnation")
            let target = try r.readString("target", maxBytes: maxIDBytes)
            let countAt = r.position
            let n = Int(try r.readUInt8("update count"))
            guard n <= maxUpdates else {
                throw WireError(.limitExceeded, at: countAt, "\(n) updates exceed the limit of \(maxUpdates) per message")
            }
            var updates: [SwimWireUpdate] = []
            updates.reserveCapacity(n)
            for i in 0..<n {
                let at = r.position
                let status = try r.readUInt8("update \(i) status")
                guard status <= 2 else {
                    throw WireError(.malformed, at: at, "update \(i) status \(status) is not 0 (alive), 1 (suspect) or 2 (dead)")
                }
                let inc = try r.readUInt32("update \(i) incarnation")
                let member = try r.readString("update \(i) member", maxBytes: maxIDBytes)
                updates.append(SwimWireUpdate(status: status, incarnation: inc, member: member))
            }
            return SwimBody(sender: sender, incarnation: incarnation, target: target, updates: updates)
        }
    }
}

/// A SWIM message as one UDP datagram's frame (SPEC §5.10): exactly one uncompressed,
/// checksummed frame with END_STREAM, of type Probe or ProbeRequest, at most 1400 bytes.
public enum SwimDatagram {
    /// Encodes `body` (one of the four SWIM bodies) as one frame with request id `seq`.
    /// - Throws: the body's encoding errors; `.frameTooLarge` past `SwimBody.maxDatagramBytes`.
    public static func encode(_ body: MessageBody, seq: UInt32) throws(WireError) -> [UInt8] {
        switch body {
        case .probe, .probeAck, .indirectProbe, .indirectProbeAck: break
        default: throw WireError(.malformed, "only Probe and ProbeRequest travel as SWIM datagrams, not \(body.type)")
        }
        let payload = try body.encode()
        let total = FrameHeader.size + payload.count
        guard total <= SwimBody.maxDatagramBytes else {
            throw WireError(.frameTooLarge, "a SWIM datagram of \(total) bytes exceeds \(SwimBody.maxDatagramBytes); piggyback fewer updates")
        }
        let crc = payload.withUnsafeBytes { Checksum.crc32($0) }
        var flags = body.kind.flags
        flags.insert(.endStream)
        flags.insert(.checksummed)
        let header = FrameHeader(frameLength: UInt32(total), flags: flags, type: body.type, requestID: seq,
                                 chunkRawLength: UInt32(payload.count), messageRawLength: UInt32(payload.count), checksum: crc)
        var out = header.bytes
        out.reserveCapacity(total)
        payload.withUnsafeBytes { out.append(contentsOf: $0) }
        return out
    }

    /// Decodes one datagram strictly: the header's rules (§2), then length = datagram size,
    /// END_STREAM set, neither COMPRESSED nor ERROR, a matching checksum, type 12 or 13, and
    /// the body (§5.10). Nothing is allocated beyond the body's own fields.
    /// - Throws: `WireError`; the caller drops the datagram and counts it.
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> (body: MessageBody, seq: UInt32) {
        guard bytes.count >= FrameHeader.size else {
            throw WireError(.frameTooShort, at: 0, "datagram of \(bytes.count) bytes is shorter than a frame header")
        }
        guard bytes.count <= SwimBody.maxDatagramBytes else {
            throw WireError(.frameTooLarge, at: 0, "datagram of \(bytes.count) bytes exceeds \(SwimBody.maxDatagramBytes)")
        }
        let payload = ByteSlice(ByteStorage(copying: bytes))
        let header = try payload.withUnsafeBytes { (raw) throws(WireError) -> FrameHeader in
            try FrameHeader.parse(UnsafeRawBufferPointer(rebasing: raw[0..<FrameHeader.size]), at: 0, limits: .default)
        }
        guard Int(header.frameLength) == bytes.count else {
            throw WireError(.lengthMismatch, at: 0, "frame length \(header.frameLength) differs from the datagram's \(bytes.count) bytes")
        }
        guard header.type == .probe || header.type == .probeRequest else {
            throw WireError(.unknownMessageType, at: 6, "\(header.type) does not travel as a SWIM datagram")
        }
        let f = header.flags
        guard f.contains(.endStream), !f.contains(.compressed), !f.contains(.error),
              header.messageRawLength == header.chunkRawLength else {
            throw WireError(.invalidFlags, at: 5, "a SWIM datagram is one uncompressed frame with END_STREAM and no ERROR (flags \(f))")
        }
        let body = ByteSlice(payload.storage, FrameHeader.size..<bytes.count)
        if f.contains(.checksummed) {
            let crc = body.withUnsafeBytes { Checksum.crc32($0) }
            guard crc == header.checksum else {
                throw WireError(.checksumMismatch, at: 20, "payload CRC-32 \(crc) does not match the header's \(header.checksum)")
            }
        }
        let kind: MessageKind = f.contains(.response) ? .response : .request
        return (try MessageBody.decode(type: header.type, kind: kind, payload: body), header.requestID)
    }
}
