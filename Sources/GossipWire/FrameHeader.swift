// The fixed 24-byte frame header: layout, flags, message types, and validation of every
// field against the spec (Protocol/SPEC.md, "Frame header"). All integers little-endian.

/// Per-frame flag bits (header byte 5). Bits 6 and 7 are reserved and must be zero.
public struct FrameFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The payload is one zlib stream (RFC 1950) that inflates to `chunkRawLength` bytes.
    public static let compressed = FrameFlags(rawValue: 0x01)
    /// The inflated bytes are byte-shuffled (element size 4); only with `compressed`.
    public static let shuffled = FrameFlags(rawValue: 0x02)
    /// The frame belongs to a reply (clear: a request).
    public static let response = FrameFlags(rawValue: 0x04)
    /// The reply is an error reply (status code + text); only with `response`.
    public static let error = FrameFlags(rawValue: 0x08)
    /// Last frame of the message.
    public static let endStream = FrameFlags(rawValue: 0x10)
    /// The header's checksum field holds the CRC-32 of the payload bytes as sent.
    public static let checksummed = FrameFlags(rawValue: 0x20)

    /// Every bit this version defines.
    public static let known: FrameFlags = [.compressed, .shuffled, .response, .error, .endStream, .checksummed]

    public var description: String {
        var parts: [String] = []
        if contains(.compressed) { parts.append("Z") }
        if contains(.shuffled) { parts.append("S") }
        if contains(.response) { parts.append("R") }
        if contains(.error) { parts.append("E") }
        if contains(.endStream) { parts.append("END") }
        if contains(.checksummed) { parts.append("C") }
        return parts.isEmpty ? "-" : parts.joined(separator: "|")
    }
}

/// A message type number (header bytes 6-7). Numbers are append-only; 0 is reserved.
public struct MessageType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let register = MessageType(rawValue: 1)
    public static let getModel = MessageType(rawValue: 2)
    public static let gossipExchange = MessageType(rawValue: 3)
    public static let status = MessageType(rawValue: 4)
    public static let ping = MessageType(rawValue: 5)
    public static let stop = MessageType(rawValue: 6)
    public static let triggerGossip = MessageType(rawValue: 7)
    /// Push-sum averaging (SPEC §5.5): one-way mass and model, answered with an empty reply.
    public static let pushSum = MessageType(rawValue: 8)
    /// Reserve the responder's exchange slot before the weights travel (SPEC §5.6).
    public static let reserve = MessageType(rawValue: 9)
    /// The done votes a peer knows (SPEC §5.7).
    public static let votes = MessageType(rawValue: 10)
    /// Blocks until the node has finished training (SPEC §5.8).
    public static let waitConverged = MessageType(rawValue: 11)
    /// An external trainer pulls the node's model (SPEC §5.12; control socket only).
    public static let modelPull = MessageType(rawValue: 15)
    /// An external trainer pushes what it trained (SPEC §5.12; control socket only).
    public static let modelPush = MessageType(rawValue: 16)
    /// Reserved: only in connection-level error replies (SPEC §8.1); never a request type.
    public static let connection = MessageType(rawValue: 0xFFFF)

    /// The types this version implements, in number order.
    public static let known: [MessageType] = [.register, .getModel, .gossipExchange, .status, .ping, .stop, .triggerGossip, .pushSum, .reserve, .votes, .waitConverged, .modelPull, .modelPush]

    public var name: String {
        switch rawValue {
        case 1: "Register"
        case 2: "GetModel"
        case 3: "GossipExchange"
        case 4: "Status"
        case 5: "Ping"
        case 6: "Stop"
        case 7: "TriggerGossip"
        case 8: "PushSum"
        case 9: "Reserve"
        case 10: "Votes"
        case 11: "WaitConverged"
        case 15: "ModelPull"
        case 16: "ModelPush"
        case 0xFFFF: "Connection"
        default: "Unknown(\(rawValue))"
        }
    }

    /// Looks a type up by its name (case-insensitive) or number.
    public init?(name: String) {
        if let n = UInt16(name), n != 0 { self.init(rawValue: n); return }
        guard let t = MessageType.known.first(where: { $0.name.lowercased() == name.lowercased() }) else { return nil }
        self = t
    }

    public var isKnown: Bool { MessageType.known.contains(self) }
    public var description: String { name }
}

/// The 24-byte header that starts every frame.
///
/// ```
/// off size field
///  0   4   frame_length        total bytes of the frame, this field included (24...max)
///  4   1   version             2 (`currentVersion`)
///  5   1   flags               FrameFlags
///  6   2   message_type        MessageType (0 reserved)
///  8   4   request_id          chosen by the requester; the reply carries the same id
/// 12   4   chunk_raw_length    uncompressed bytes of this frame's payload
/// 16   4   message_raw_length  uncompressed bytes of the whole message (same in every chunk)
/// 20   4   checksum            CRC-32 (zlib) of the payload as sent, or 0 without `checksummed`
/// ```
public struct FrameHeader: Sendable, Equatable {
    public static let size = 24
    public static let currentVersion: UInt8 = 2

    public var frameLength: UInt32
    public var version: UInt8
    public var flags: FrameFlags
    public var type: MessageType
    public var requestID: UInt32
    public var chunkRawLength: UInt32
    public var messageRawLength: UInt32
    public var checksum: UInt32

    public init(frameLength: UInt32, version: UInt8 = FrameHeader.currentVersion, flags: FrameFlags,
                type: MessageType, requestID: UInt32, chunkRawLength: UInt32,
                messageRawLength: UInt32, checksum: UInt32) {
        self.frameLength = frameLength
        self.version = version
        self.flags = flags
        self.type = type
        self.requestID = requestID
        self.chunkRawLength = chunkRawLength
        self.messageRawLength = messageRawLength
        self.checksum = checksum
    }

    /// Bytes of payload that follow the header.
    public var payloadLength: Int { Int(frameLength) - FrameHeader.size }

    /// Writes the 24 header bytes at `p`.
    public func write(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: frameLength.littleEndian, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: version, toByteOffset: 4, as: UInt8.self)
        p.storeBytes(of: flags.rawValue, toByteOffset: 5, as: UInt8.self)
        p.storeBytes(of: type.rawValue.littleEndian, toByteOffset: 6, as: UInt16.self)
        p.storeBytes(of: requestID.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: chunkRawLength.littleEndian, toByteOffset: 12, as: UInt32.self)
        p.storeBytes(of: messageRawLength.littleEndian, toByteOffset: 16, as: UInt32.self)
        p.storeBytes(of: checksum.littleEndian, toByteOffset: 20, as: UInt32.self)
    }

    /// The 24 header bytes.
    public var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: FrameHeader.size) { buf, n in
            write(to: UnsafeMutableRawPointer(buf.baseAddress!))
            n = FrameHeader.size
        }
    }

    /// The text of the UNIMPLEMENTED error reply to a frame of `version` (SPEC §2, §10 and
    /// `Protocol/vectors/error_unsupported_version.hex` quote it; tests keep the three equal).
    public static func unsupportedVersionText(_ version: UInt8) -> String {
        "protocol version \(version) is not supported; this node speaks version \(currentVersion)"
    }

    /// Reads the length prefix alone and checks it, so a hostile length is refused after
    /// four bytes, before anything is allocated.
    public static func checkLength(_ length: UInt32, at offset: Int, limits: Limits) throws(WireError) {
        if length < UInt32(size) {
            throw WireError(.frameTooShort, at: offset,
                            "frame length \(length) is below the \(size)-byte header size; the peer does not speak this protocol or the stream is out of step")
        }
        if UInt64(length) > UInt64(limits.maxFrameBytes) {
            throw WireError(.frameTooLarge, at: offset,
                            "frame length \(length) exceeds the limit of \(limits.maxFrameBytes) bytes; the sender must chunk large messages (or raise maxFrameBytes)")
        }
    }

    /// Parses and validates a header from exactly `size` bytes.
    /// - Parameter offset: the header's offset in the stream, for error messages.
    public static func parse(_ raw: UnsafeRawBufferPointer, at offset: Int, limits: Limits) throws(WireError) -> FrameHeader {
        precondition(raw.count >= size)
        let length = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        try checkLength(length, at: offset, limits: limits)
        let version = raw[4]
        guard version == currentVersion else {
            throw WireError(.unsupportedVersion, at: offset + 4, unsupportedVersionText(version))
        }
        let flags = FrameFlags(rawValue: raw[5])
        let unknown = flags.subtracting(.known)
        guard unknown.isEmpty else {
            throw WireError(.unknownFlags, at: offset + 5,
                            "flag bits 0x\(String(unknown.rawValue, radix: 16)) are reserved and must be zero")
        }
        if flags.contains(.shuffled) && !flags.contains(.compressed) {
            throw WireError(.invalidFlags, at: offset + 5, "the shuffled flag is only valid together with compressed")
        }
        if flags.contains(.error) && !flags.contains(.response) {
            throw WireError(.invalidFlags, at: offset + 5, "the error flag is only valid together with response")
        }
        let type = MessageType(rawValue: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 6, as: UInt16.self)))
        guard type.rawValue != 0 else {
            throw WireError(.malformed, at: offset + 6, "message type 0 is reserved")
        }
        if type == .connection && !flags.contains(.error) {
            throw WireError(.malformed, at: offset + 6,
                            "message type 0xFFFF (Connection) is reserved for connection-level error replies (SPEC §8.1); it is never a request or a plain reply")
        }
        let header = FrameHeader(
            frameLength: length, version: version, flags: flags, type: type,
            requestID: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
            chunkRawLength: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 12, as: UInt32.self)),
            messageRawLength: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt32.self)),
            checksum: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 20, as: UInt32.self)))
        let kind: MessageKind = flags.contains(.error) ? .error : (flags.contains(.response) ? .response : .request)
        let typeLimit = limits.maxMessageBytes(for: type, kind: kind)
        guard Int(header.messageRawLength) <= typeLimit else {
            throw WireError(.messageTooLarge, at: offset + 16,
                            "\(type) \(kind) of \(header.messageRawLength) uncompressed bytes exceeds this receiver's \(Limits.limitName(for: type, kind: kind)) of \(typeLimit); send less (model messages are bounded by the receiver's model size)")
        }
        guard header.chunkRawLength <= header.messageRawLength else {
            throw WireError(.lengthMismatch, at: offset + 12,
                            "chunk of \(header.chunkRawLength) bytes is larger than its whole message (\(header.messageRawLength))")
        }
        if !flags.contains(.compressed) && Int(header.chunkRawLength) != header.payloadLength {
            throw WireError(.lengthMismatch, at: offset + 12,
                            "uncompressed frame declares \(header.chunkRawLength) payload bytes but carries \(header.payloadLength)")
        }
        if flags.contains(.compressed) && header.payloadLength == 0 {
            throw WireError(.lengthMismatch, at: offset, "compressed frame carries no zlib stream")
        }
        if flags.contains(.compressed) && header.payloadLength > Compression.maxDeflatedSize(Int(header.chunkRawLength)) {
            throw WireError(.frameTooLarge, at: offset,
                            "compressed frame carries \(header.payloadLength) bytes for a \(header.chunkRawLength)-byte chunk, more than any zlib stream of that chunk needs (\(Compression.maxDeflatedSize(Int(header.chunkRawLength)))); send it uncompressed")
        }
        if !flags.contains(.checksummed) && header.checksum != 0 {
            throw WireError(.reservedNonZero, at: offset + 20, "checksum field must be 0 when the checksummed flag is clear")
        }
        return header
    }
}
