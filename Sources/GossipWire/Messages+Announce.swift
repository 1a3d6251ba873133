// Announce (type 14, SPEC §5.11 "LAN discovery"): the one-frame datagram a member multicasts
// so that starting peers on the LAN find the network. Encoding builds the whole datagram (a
// frame: header + payload); decoding takes a whole datagram and refuses anything that is not
// exactly one valid Announce frame.

/// An announcement: where the sender serves TCP, who it is, and whether it has a model.
public struct Announcement: Sendable, Equatable {
    /// Flag bit: `identity` follows (32 bytes).
    public static let hasIdentityFlag: UInt8 = 0x01
    /// Flag bit: the sender serves a model (GetModel answers); clear while it onboards.
    public static let servesModelFlag: UInt8 = 0x02
    /// The largest datagram a receiver reads; longer ones are dropped as oversized.
    public static let maxDatagramBytes = 512

    /// HOST:PORT of the sender's TCP listener; an unspecified host (0.0.0.0, ::) means "the
    /// datagram's source address".
    public var endpoint: String
    /// The sender's static public key (32 bytes), if it has one worth pinning.
    public var identity: [UInt8]?
    /// The sender serves a model.
    public var servesModel: Bool
    /// Random per process start; with `sequence` it lets receivers drop replays.
    public var instance: UInt64
    /// Counts the sender's announcements since its start (1, 2, ...).
    public var sequence: UInt32
    /// The schema hash of the sender's model (§6.3), 0 while it has none.
    public var schemaHash: UInt64

    public init(endpoint: String, identity: [UInt8]?, servesModel: Bool, instance: UInt64, sequence: UInt32, schemaHash: UInt64) {
        self.endpoint = endpoint
        self.identity = identity
        self.servesModel = servesModel
        self.instance = instance
        self.sequence = sequence
        self.schemaHash = schemaHash
    }

    /// The payload: `u8 flags, str endpoint, [32 identity if flag 0x01], u64 instance,
    /// u32 sequence, u64 schema_hash`.
    public func encodePayload(limits: Limits = .default) throws(WireError) -> [UInt8] {
        guard endpoint.utf8.count <= limits.maxNameBytes else {
            throw WireError(.limitExceeded, at: nil, "endpoint of \(endpoint.utf8.count) bytes exceeds the name limit of \(limits.maxNameBytes)")
        }
        if let identity, identity.count != PeerEntry.identityByteCount {
            throw WireError(.malformed, at: nil, "an identity is \(PeerEntry.identityByteCount) bytes, not \(identity.count)")
        }
        var flags: UInt8 = 0
        if identity != nil { flags |= Announcement.hasIdentityFlag }
        if servesModel { flags |= Announcement.servesModelFlag }
        var w = ByteWriter(capacity: 1 + ByteWriter.size(ofString: endpoint) + (identity?.count ?? 0) + 20)
        w.write(flags)
        w.writeString(endpoint)
        if let identity { w.write(bytes: identity) }
        w.write(instance)
        w.write(sequence)
        w.write(schemaHash)
        return ByteSlice(w.storage).array
    }

    /// The whole datagram: one frame (flags END|C, request id 0) carrying the payload.
    public func encodeDatagram(limits: Limits = .default) throws(WireError) -> [UInt8] {
        let payload = try encodePayload(limits: limits)
        let length = FrameHeader.size + payload.count
        guard length <= Announcement.maxDatagramBytes else {
            throw WireError(.limitExceeded, at: nil, "an announcement of \(length) bytes exceeds \(Announcement.maxDatagramBytes); shorten the endpoint")
        }
        let header = FrameHeader(frameLength: UInt32(length), flags: [.endStream, .checksummed], type: .announce, requestID: 0,
                                 chunkRawLength: UInt32(payload.count), messageRawLength: UInt32(payload.count),
                                 checksum: Checksum.crc32(payload))
        var out = [UInt8](repeating: 0, count: length)
        out.withUnsafeMutableBytes { header.write(to: $0.baseAddress!) }
        out.replaceSubrange(FrameHeader.size..<length, with: payload)
        return out
    }

    /// Decodes one whole datagram. Throws for anything else: a short or oversized datagram,
    /// a header the frame rules refuse, another type, a reply or compressed frame, a length
    /// that disagrees with the datagram, a missing or wrong checksum, bad fields, trailing bytes.
    public static func decode(datagram: [UInt8], limits: Limits = .default) throws(WireError) -> Announcement {
        guard datagram.count <= maxDatagramBytes else {
            throw WireError(.frameTooLarge, at: 0, "datagram of \(datagram.count) bytes exceeds the \(maxDatagramBytes)-byte announcement limit")
        }
        guard datagram.count >= FrameHeader.size else {
            throw WireError(.frameTooShort, at: 0, "datagram of \(datagram.count) bytes is shorter than a frame header")
        }
        let result = datagram.withUnsafeBytes { raw in Result { () throws(WireError) in try decodeFrame(raw, limits: limits) } }
        return try result.get()
    }

    private static func decodeFrame(_ raw: UnsafeRawBufferPointer, limits: Limits) throws(WireError) -> Announcement {
        do {
            let h = try FrameHeader.parse(raw, at: 0, limits: limits)
            guard h.type == .announce else {
                throw WireError(.unknownMessageType, at: 6, "datagram carries message type \(h.type.rawValue) (\(h.type.name)); only Announce (14) travels in discovery datagrams")
            }
            guard Int(h.frameLength) == raw.count else {
                throw WireError(.lengthMismatch, at: 0, "frame length \(h.frameLength) disagrees with the datagram's \(raw.count) bytes")
            }
            guard h.flags == [.endStream, .checksummed], h.requestID == 0 else {
                throw WireError(.invalidFlags, at: 5, "an Announce frame has flags END|C and request id 0 (got flags \(h.flags), id \(h.requestID))")
            }
            let payload = UnsafeRawBufferPointer(rebasing: raw[FrameHeader.size...])
            guard Checksum.crc32(payload) == h.checksum else {
                throw WireError(.checksumMismatch, at: 20, "payload CRC-32 does not match the header")
            }
            var r = ByteReader(payload, baseOffset: FrameHeader.size)
            let flags = try r.readUInt8("flags")
            guard flags & ~(hasIdentityFlag | servesModelFlag) == 0 else {
                throw WireError(.reservedNonZero, at: FrameHeader.size, "announcement flag bits 0x\(String(flags & ~(hasIdentityFlag | servesModelFlag), radix: 16)) are reserved")
            }
            let endpoint = try r.readString("endpoint", maxBytes: limits.maxNameBytes)
            var identity: [UInt8]?
            if flags & hasIdentityFlag != 0 { identity = Array(try r.readBytes(PeerEntry.identityByteCount, "identity")) }
            let a = Announcement(endpoint: endpoint, identity: identity, servesModel: flags & servesModelFlag != 0,
                                 instance: try r.readUInt64("instance"), sequence: try r.readUInt32("sequence"),
                                 schemaHash: try r.readUInt64("schema hash"))
            try r.expectEnd("the announcement")
            return a
        }
    }
}
