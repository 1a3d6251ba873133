// The incremental receive side: feed it bytes in any pieces and it yields complete messages.
// It validates every header (the length prefix after its first 4 bytes, before anything is
// allocated), checks checksums, inflates compressed chunks with a bound, and reassembles
// chunked messages. Large payloads are read by the transport straight into their final
// place (`writableSpace` hands out the destination), so no prefix is ever copied twice.
// The CRC-32 of a checksummed frame is computed piece by piece right after each piece lands
// (while it is in cache), not in a second pass over the frame. Large compressed chunks that
// are not the last of their message are inflated on other cores (`InflateJobs`) while the
// next chunk arrives; the message is complete once they all have finished.

import Synchronization

/// A frame as it was received, for inspectors (`onFrame`). `payload` are the bytes as sent
/// (still compressed) and are valid only during the callback.
public struct InboundFrame {
    public let header: FrameHeader
    /// Offset of the frame's first byte in the stream.
    public let streamOffset: Int
    public let payload: UnsafeRawBufferPointer
}

/// A complete, reassembled and decompressed message.
public struct InboundMessage: Sendable {
    public let type: MessageType
    public let kind: MessageKind
    public let requestID: UInt32
    /// The uncompressed message payload.
    public let payload: ByteSlice
    /// Number of frames it arrived in.
    public let frameCount: Int
    /// Bytes it took on the wire, headers included.
    public let wireBytes: Int
    /// Offset of its first frame in the stream.
    public let streamOffset: Int
    /// Flags of its first frame (compression, checksum).
    public let firstFrameFlags: FrameFlags
}

/// Incremental frame decoder and message assembler for one direction of one connection.
///
/// Not thread-safe: one owner (a connection's serial queue) drives it. After it throws,
/// it stays failed and throws the same error again: the stream is out of step.
public final class MessageDecoder {
    public let limits: Limits
    /// Called for every frame once it is complete and its checksum verified.
    public var onFrame: ((InboundFrame) -> Void)?

    /// Bytes consumed from the stream so far.
    public private(set) var streamOffset: Int = 0

    private static let stagingSize = 64 << 10
    private static let directThreshold = 8 << 10
    /// Compressed chunks of at least this many raw bytes (and not their message's last) are
    /// inflated on another core; smaller ones are not worth the hand-off.
    static let parallelInflateMinimum = 64 << 10

    private let staging: ByteStorage
    private var readIndex = 0
    private var writeIndex = 0

    private struct Assembly {
        var first: FrameHeader
        var storage: ByteStorage
        var filled: Int
        var frames: Int
        var wireBytes: Int
        var startOffset: Int
        /// Chunks being inflated on other cores (nil until the first one is handed off).
        var jobs: InflateJobs?
    }
    private enum Phase {
        case header
        case payload(header: FrameHeader, headerOffset: Int, received: Int, crc: UInt32)
    }
    private var phase: Phase = .header
    private var assembly: Assembly?
    private var scratch: ByteStorage?
    private var directPending = false
    private var completed: [InboundMessage] = []
    private var completedHead = 0
    private var failure: WireError?

    /// The process-wide receive budget and buffer pool every large buffer comes from.
    public let buffers: ReceiveBuffers

    /// - Parameter buffers: the budget and pool of large receive buffers (default: the
    ///   process's one, `ReceiveBuffers.shared`; tests pass their own).
    public init(limits: Limits = .default, buffers: ReceiveBuffers = .shared) {
        self.limits = limits
        self.buffers = buffers
        self.staging = ByteStorage(count: MessageDecoder.stagingSize)
    }

    /// Bytes currently kept by the buffer pool (tests, diagnostics).
    public var pooledBufferBytes: Int { buffers.pooledBytes }

    /// True while a frame or a chunked message is partly received.
    public var hasPartialData: Bool {
        if readIndex != writeIndex || assembly != nil { return true }
        if case .payload = phase { return true }
        return false
    }

    /// The next complete message, if any.
    public func nextMessage() -> InboundMessage? {
        guard completedHead < completed.count else { return nil }
        let m = completed[completedHead]
        completedHead += 1
        if completedHead == completed.count { completed.removeAll(keepingCapacity: true); completedHead = 0 }
        return m
    }

    /// Where the next received bytes should be written (never empty). Call `didWrite` with
    /// the number of bytes actually written there before asking again.
    public func writableSpace() -> UnsafeMutableRawBufferPointer {
        if failure == nil, readIndex == writeIndex, case .payload(let h, _, let received, _) = phase {
            let remaining = h.payloadLength - received
            if remaining >= MessageDecoder.directThreshold {
                directPending = true
                return destination(for: h, from: received, count: remaining)
            }
        }
        directPending = false
        if readIndex == writeIndex {
            readIndex = 0
            writeIndex = 0
            // Between the chunks of a large message the next frame is almost surely another
            // large chunk: read just its header, so its payload goes straight to its place
            // instead of through the staging buffer.
            if failure == nil, case .header = phase, let a = assembly,
               Int(a.first.messageRawLength) - a.filled >= MessageDecoder.directThreshold {
                return UnsafeMutableRawBufferPointer(rebasing: staging.mutableBytes[0..<FrameHeader.size])
            }
        }
        if writeIndex == staging.count || (staging.count - writeIndex < FrameHeader.size && readIndex > 0) {
            let unread = writeIndex - readIndex
            let base = staging.mutableBytes.baseAddress!
            base.copyMemory(from: base + readIndex, byteCount: unread)
            readIndex = 0
            writeIndex = unread
        }
        return UnsafeMutableRawBufferPointer(rebasing: staging.mutableBytes[writeIndex...])
    }

    /// Records that `count` bytes were written into the last `writableSpace()` and decodes.
    public func didWrite(_ count: Int) throws(WireError) {
        if let failure { throw failure }
        if directPending {
            directPending = false
            guard case .payload(let h, let at, let received, var crc) = phase else { preconditionFailure("direct write outside a payload") }
            precondition(received + count <= h.payloadLength)
            if h.flags.contains(.checksummed) {
                crc = Checksum.crc32(UnsafeRawBufferPointer(destination(for: h, from: received, count: count)), initial: crc)
            }
            phase = .payload(header: h, headerOffset: at, received: received + count, crc: crc)
            if received + count == h.payloadLength { try guarded { () throws(WireError) in try finishPayload() } }
            return
        }
        precondition(writeIndex + count <= staging.count)
        writeIndex += count
        try guarded { () throws(WireError) in try process() }
    }

    /// Feeds bytes (copies them through `writableSpace`).
    public func append(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        var rest = bytes
        while !rest.isEmpty {
            let space = writableSpace()
            let n = Swift.min(space.count, rest.count)
            space.baseAddress!.copyMemory(from: rest.baseAddress!, byteCount: n)
            try didWrite(n)
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
    }

    public func append(_ bytes: [UInt8]) throws(WireError) {
        let result: Result<Void, WireError> = bytes.withUnsafeBytes { b in Result { () throws(WireError) in try append(b) } }
        try result.get()
    }

    /// Declares the end of the stream.
    /// - Throws: `.truncated` when a frame or a chunked message is unfinished.
    public func finish() throws(WireError) {
        if let failure { throw failure }
        if let error = assembly?.jobs?.wait() {
            failure = error
            throw error
        }
        if case .payload(let h, let at, let received, _) = phase {
            throw WireError(.truncated, at: at, "stream ended inside a frame: \(received + (writeIndex - readIndex)) of \(h.payloadLength) payload bytes received")
        }
        if readIndex != writeIndex {
            throw WireError(.truncated, at: streamOffset, "stream ended inside a frame header (\(writeIndex - readIndex) of \(FrameHeader.size) bytes)")
        }
        if let a = assembly {
            throw WireError(.truncated, at: a.startOffset, "stream ended inside a chunked message: \(a.filled) of \(a.first.messageRawLength) bytes received, no END_STREAM frame")
        }
    }

    // MARK: - internals

    private func guarded(_ body: () throws(WireError) -> Void) throws(WireError) {
        do { try body() } catch {
            failure = error
            throw error
        }
    }

    /// A buffer of exactly `count` bytes from the process's receive budget (a pooled one
    /// the application released, else a fresh one). Reuse matters for large messages: a
    /// fresh 40 MB buffer costs more in page faults than copying the payload itself.
    /// - Throws: `.limitExceeded` (RESOURCE_EXHAUSTED) when the budget has no room.
    private func takeBuffer(count: Int, for what: String, at offset: Int) throws(WireError) -> ByteStorage {
        guard let s = buffers.take(count: count) else {
            throw WireError(.limitExceeded, at: offset,
                            "no receive memory for \(what) of \(count) bytes: this node's receive budget (\(buffers.budget) bytes for all connections) is in use; retry later")
        }
        return s
    }

    private func destination(for h: FrameHeader, from received: Int, count: Int) -> UnsafeMutableRawBufferPointer {
        if h.flags.contains(.compressed) {
            return UnsafeMutableRawBufferPointer(rebasing: scratch!.mutableBytes[received..<(received + count)])
        }
        let a = assembly!
        let start = a.filled + received
        return UnsafeMutableRawBufferPointer(rebasing: a.storage.mutableBytes[start..<(start + count)])
    }

    private func process() throws(WireError) {
        while true {
            let available = writeIndex - readIndex
            switch phase {
            case .header:
                if available >= 4 {
                    let length = UInt32(littleEndian: staging.bytes.loadUnaligned(fromByteOffset: readIndex, as: UInt32.self))
                    try FrameHeader.checkLength(length, at: streamOffset, limits: limits)
                }
                guard available >= FrameHeader.size else { return }
                let raw = UnsafeRawBufferPointer(rebasing: staging.bytes[readIndex..<(readIndex + FrameHeader.size)])
                let header = try FrameHeader.parse(raw, at: streamOffset, limits: limits)
                let headerOffset = streamOffset
                readIndex += FrameHeader.size
                streamOffset += FrameHeader.size
                try startFrame(header, at: headerOffset)
            case .payload(let h, let at, let received, var crc):
                guard available > 0 else { return }
                let n = Swift.min(available, h.payloadLength - received)
                let dst = destination(for: h, from: received, count: n)
                dst.baseAddress!.copyMemory(from: staging.bytes.baseAddress! + readIndex, byteCount: n)
                if h.flags.contains(.checksummed) { crc = Checksum.crc32(UnsafeRawBufferPointer(dst), initial: crc) }
                readIndex += n
                phase = .payload(header: h, headerOffset: at, received: received + n, crc: crc)
                if received + n == h.payloadLength { try finishPayload() }
            }
        }
    }

    private func startFrame(_ h: FrameHeader, at offset: Int) throws(WireError) {
        let kind: MessageKind = h.flags.contains(.error) ? .error : (h.flags.contains(.response) ? .response : .request)
        if let error = assembly?.jobs?.failure { throw error }
        if let a = assembly {
            let aKind: MessageKind = a.first.flags.contains(.error) ? .error : (a.first.flags.contains(.response) ? .response : .request)
            guard a.first.requestID == h.requestID, a.first.type == h.type, aKind == kind,
                  a.first.messageRawLength == h.messageRawLength else {
                throw WireError(.streamViolation, at: offset,
                                "frame for \(h.type) request \(h.requestID) arrived before the END_STREAM frame of \(a.first.type) request \(a.first.requestID)")
            }
            guard Int(h.chunkRawLength) <= Int(a.first.messageRawLength) - a.filled else {
                throw WireError(.lengthMismatch, at: offset + 12,
                                "chunk of \(h.chunkRawLength) bytes overruns the message's declared \(a.first.messageRawLength) bytes (\(a.filled) already received)")
            }
        } else {
            // Allocation is bounded: messageRawLength was checked against its type's limit,
            // and the process-wide budget bounds all connections together.
            let storage = try takeBuffer(count: Int(h.messageRawLength), for: "a \(h.type) message", at: offset)
            assembly = Assembly(first: h, storage: storage, filled: 0,
                                frames: 0, wireBytes: 0, startOffset: offset)
        }
        if h.flags.contains(.compressed) {
            if scratch == nil || scratch!.count < h.payloadLength {
                // Bounded by the chunk's size (FrameHeader.parse checks it against
                // Compression.maxDeflatedSize) and charged to the budget when large.
                scratch = nil
                scratch = try takeBuffer(count: h.payloadLength, for: "a compressed frame", at: offset)
            }
        }
        phase = .payload(header: h, headerOffset: offset, received: 0, crc: 0)
        if h.payloadLength == 0 { try finishPayload() }
    }

    private func finishPayload() throws(WireError) {
        guard case .payload(let h, let at, _, let crc) = phase, var a = assembly else { preconditionFailure("no payload in progress") }
        let payloadOffset = at + FrameHeader.size
        let wire: UnsafeRawBufferPointer
        if h.flags.contains(.compressed) {
            wire = UnsafeRawBufferPointer(rebasing: scratch!.bytes[0..<h.payloadLength])
        } else {
            wire = UnsafeRawBufferPointer(rebasing: a.storage.bytes[a.filled..<(a.filled + h.payloadLength)])
        }
        streamOffset = payloadOffset + h.payloadLength
        if h.flags.contains(.checksummed) {
            guard crc == h.checksum else {
                throw WireError(.checksumMismatch, at: at + 20,
                                "payload CRC-32 is 0x\(String(crc, radix: 16)) but the header says 0x\(String(h.checksum, radix: 16)); the frame was corrupted")
            }
        }
        let chunkRange = a.filled..<(a.filled + Int(h.chunkRawLength))
        var handedOff = false
        if h.flags.contains(.compressed) {
            let width = ParallelChunks.width
            if width > 1, !h.flags.contains(.endStream), Int(h.chunkRawLength) >= MessageDecoder.parallelInflateMinimum {
                // Inflate on another core while the next chunk arrives; joined at END_STREAM.
                onFrame?(InboundFrame(header: h, streamOffset: at, payload: wire))
                if a.jobs == nil { a.jobs = InflateJobs(width: width) }
                a.jobs!.submit(source: scratch!, count: h.payloadLength, destination: a.storage, range: chunkRange,
                               shuffled: h.flags.contains(.shuffled), offset: payloadOffset)
                scratch = nil   // the job owns it now; the next frame takes another
                handedOff = true
            } else {
                let dst = UnsafeMutableRawBufferPointer(rebasing: a.storage.mutableBytes[chunkRange])
                try Compression.inflate(wire, into: dst, shuffled: h.flags.contains(.shuffled), at: payloadOffset)
            }
        }
        if !handedOff { onFrame?(InboundFrame(header: h, streamOffset: at, payload: wire)) }
        if h.flags.contains(.compressed), let s = scratch, s.count > ReceiveBuffers.uncharged {
            scratch = nil   // a large scratch buffer is charged: do not hold it between frames
        }
        a.filled += Int(h.chunkRawLength)
        a.frames += 1
        a.wireBytes += Int(h.frameLength)
        phase = .header
        if h.flags.contains(.endStream) {
            guard a.filled == Int(a.first.messageRawLength) else {
                throw WireError(.lengthMismatch, at: at,
                                "END_STREAM after \(a.filled) bytes, but the message declares \(a.first.messageRawLength)")
            }
            if let jobs = a.jobs, let error = jobs.wait() {
                assembly = a
                throw error
            }
            let kind: MessageKind = h.flags.contains(.error) ? .error : (h.flags.contains(.response) ? .response : .request)
            completed.append(InboundMessage(type: h.type, kind: kind, requestID: h.requestID,
                                            payload: ByteSlice(a.storage), frameCount: a.frames,
                                            wireBytes: a.wireBytes, streamOffset: a.startOffset,
                                            firstFrameFlags: a.first.flags))
            buffers.offer(a.storage)
            assembly = nil
        } else {
            assembly = a
        }
    }
}
