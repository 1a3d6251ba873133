// Turns one message payload into its frames: splits it into chunks of at most
// `limits.chunkBytes`, compresses each chunk when asked, and builds each 24-byte header.
// Uncompressed chunks are views of the payload storage: nothing is copied, so a transport
// can send header and payload with one gather write.

/// One frame ready to send: its header and a view of its payload bytes.
public struct OutboundFrame: Sendable {
    public let header: FrameHeader
    public let payload: ByteSlice
}

/// Who a message is addressed as: a request, a reply, or an error reply.
public enum MessageKind: Sendable, Equatable {
    case request
    case response
    case error
    var flags: FrameFlags {
        switch self {
        case .request: []
        case .response: .response
        case .error: [.response, .error]
        }
    }
}

/// A whole message as a sequence of frames sharing one request id.
public struct OutboundMessage: Sendable {
    public let type: MessageType
    public let kind: MessageKind
    public let requestID: UInt32
    public let frames: [OutboundFrame]

    /// Bytes on the wire, headers included.
    public var wireBytes: Int { frames.reduce(0) { $0 + Int($1.header.frameLength) } }

    /// The frames as one contiguous byte array (tests, vectors, small messages).
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(wireBytes)
        for f in frames {
            out.append(contentsOf: f.header.bytes)
            f.payload.withUnsafeBytes { out.append(contentsOf: $0) }
        }
        return out
    }

    /// Splits `payload` into frames.
    ///
    /// - Parameters:
    ///   - checksum: set the CRC-32 of each payload as sent (flag `checksummed`).
    /// - Throws: `.messageTooLarge` when the payload exceeds `limits.maxMessageBytes`,
    ///   `.compressionFailed` if zlib fails.
    public init(type: MessageType, kind: MessageKind, requestID: UInt32, payload: ByteSlice,
                compression: CompressionMode = .none, checksum: Bool = true,
                limits: Limits = .default) throws(WireError) {
        let typeLimit = limits.maxMessageBytes(for: type, kind: kind)
        guard payload.count <= typeLimit, payload.count <= Int(UInt32.max) else {
            throw WireError(.messageTooLarge, "\(type) \(kind) of \(payload.count) bytes exceeds \(Limits.limitName(for: type, kind: kind)) of \(typeLimit)")
        }
        precondition(type.rawValue != 0, "message type 0 is reserved")
        let chunk = Swift.max(1, Swift.min(limits.chunkBytes, limits.maxFrameBytes - FrameHeader.size - 64))
        let count = Swift.max(1, (payload.count + chunk - 1) / chunk)
        // Each chunk is independent (its own zlib stream and CRC): deflate and checksum them on
        // all cores, each straight into its own frame slot. Uncompressed chunks stay views.
        let slots = UnsafeMutableBufferPointer<Result<OutboundFrame, WireError>?>.allocate(capacity: count)
        slots.initialize(repeating: nil)
        defer { slots.deinitialize(); slots.deallocate() }
        let work = { (i: Int) in
            let start = i * chunk
            let end = Swift.min(payload.count, start + chunk)
            slots[i] = Result { () throws(WireError) in
                try Self.frame(payload: payload, start: start, end: end, type: type, kind: kind, requestID: requestID,
                               compression: compression, checksum: checksum, limits: limits)
            }
        }
        let parallel: Bool
        if case .zlib = compression { parallel = count > 1 } else { parallel = checksum && count > 1 }
        if parallel { ParallelChunks.forEach(count, work) } else { for i in 0..<count { work(i) } }
        var frames: [OutboundFrame] = []
        frames.reserveCapacity(count)
        for i in 0..<count { frames.append(try slots[i]!.get()) }
        self.type = type
        self.kind = kind
        self.requestID = requestID
        self.frames = frames
    }

    /// The frame of payload bytes `start..<end` (compressed and checksummed as asked).
    private static func frame(payload: ByteSlice, start: Int, end: Int, type: MessageType, kind: MessageKind,
                              requestID: UInt32, compression: CompressionMode, checksum: Bool,
                              limits: Limits) throws(WireError) -> OutboundFrame {
        let raw = ByteSlice(payload.storage, (payload.range.lowerBound + start)..<(payload.range.lowerBound + end))
        var flags = kind.flags
        var body = raw
        if case .zlib(let level, let shuffle) = compression {
            body = try raw.withUnsafeBytes { (bytes) throws(WireError) in
                try Compression.deflate(bytes, level: level, shuffle: shuffle)
            }
            flags.insert(.compressed)
            if shuffle { flags.insert(.shuffled) }
        }
        if end == payload.count { flags.insert(.endStream) }
        var crc: UInt32 = 0
        if checksum {
            flags.insert(.checksummed)
            crc = body.withUnsafeBytes { Checksum.crc32($0) }   // right after deflate: the bytes are hot
        }
        guard body.count + FrameHeader.size <= limits.maxFrameBytes else {
            throw WireError(.frameTooLarge, "a compressed chunk grew to \(body.count) bytes, past the frame limit")
        }
        let header = FrameHeader(frameLength: UInt32(FrameHeader.size + body.count), flags: flags, type: type,
                                 requestID: requestID, chunkRawLength: UInt32(end - start),
                                 messageRawLength: UInt32(payload.count), checksum: crc)
        return OutboundFrame(header: header, payload: body)
    }

    /// A message with an empty payload.
    public static func empty(type: MessageType, kind: MessageKind, requestID: UInt32, checksum: Bool = true) -> OutboundMessage {
        // An empty payload cannot fail to encode.
        try! OutboundMessage(type: type, kind: kind, requestID: requestID,
                             payload: ByteSlice(ByteStorage(count: 0)), checksum: checksum)
    }
}
