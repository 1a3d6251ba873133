// Frame layer: header validation, chunking, compression, incremental decoding.
import Testing
@testable import GossipWire

private func payload(_ n: Int, seed: UInt32 = 1) -> ByteSlice {
    var x = seed
    let s = ByteStorage(count: n)
    for i in 0..<n { x = x &* 1664525 &+ 1013904223; s.mutableBytes[i] = UInt8(truncatingIfNeeded: x >> 24) }
    return ByteSlice(s)
}

private func decodeAll(_ bytes: [UInt8], limits: Limits = .default, pieces: Int? = nil) throws -> [InboundMessage] {
    let d = MessageDecoder(limits: limits)
    var out: [InboundMessage] = []
    if let pieces {
        var i = 0
        while i < bytes.count {
            let j = min(bytes.count, i + pieces)
            try d.append(Array(bytes[i..<j]))
            while let m = d.nextMessage() { out.append(m) }
            i = j
        }
    } else {
        try d.append(bytes)
        while let m = d.nextMessage() { out.append(m) }
    }
    try d.finish()
    return out
}

@Test(arguments: [CompressionMode.none, .zlib(level: 1, shuffle: false), .zlib(level: 6, shuffle: true)])
func chunkedRoundTrip(mode: CompressionMode) throws {
    var limits = Limits()
    limits.chunkBytes = 1000
    let p = payload(4321)
    let m = try OutboundMessage(type: .gossipExchange, kind: .response, requestID: 77, payload: p,
                                compression: mode, limits: limits)
    #expect(m.frames.count == 5)
    let bytes = m.serialized()
    for piece in [1, 7, 24, 1000, bytes.count] {
        let got = try decodeAll(bytes, limits: limits, pieces: piece)
        #expect(got.count == 1)
        #expect(got[0].payload.array == p.array)
        #expect(got[0].requestID == 77 && got[0].kind == .response && got[0].type == .gossipExchange)
        #expect(got[0].frameCount == 5)
    }
}

@Test func largeFrameLandsDirectly() throws {
    let p = payload(300_000)
    let bytes = try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 1, payload: p).serialized()
    let got = try decodeAll(bytes, pieces: 65_536)
    #expect(got.map { $0.payload.array } == [p.array])
}

@Test func hostileLengthsRejectedBeforeAllocation() throws {
    for length: UInt32 in [0, 23, UInt32.max] {
        var b = [UInt8](repeating: 0, count: 4)
        withUnsafeBytes(of: length.littleEndian) { for i in 0..<4 { b[i] = $0[i] } }
        let d = MessageDecoder()
        #expect(throws: WireError.self) { try d.append(b) }
    }
}

@Test func truncationAtEveryOffsetIsTyped() throws {
    let bytes = try OutboundMessage(type: .status, kind: .request, requestID: 9, payload: payload(50),
                                    compression: .zlib(level: 1, shuffle: true)).serialized()
    for cut in 1..<bytes.count {
        let d = MessageDecoder()
        try d.append(Array(bytes[0..<cut]))
        #expect(d.nextMessage() == nil)
        #expect(throws: WireError.self) { try d.finish() }
    }
}

@Test func decompressionBombIsBounded() throws {
    // 16 MiB of zeros compresses to a few KiB; declare only 1 KiB.
    let big = ByteStorage(count: 16 << 20, zeroed: true)
    let z = try Compression.deflate(big.bytes, level: 9, shuffle: false)
    let h = FrameHeader(frameLength: UInt32(24 + z.count), flags: [.compressed, .endStream], type: .ping,
                        requestID: 1, chunkRawLength: 1024, messageRawLength: 1024, checksum: 0)
    let d = MessageDecoder()
    do {
        try d.append(h.bytes + z.array)
        Issue.record("bomb accepted")
    } catch {
        // Refused at the header (payload too large for its chunk, SPEC §7) or while inflating.
        #expect([.frameTooLarge, .decompressionOverflow].contains(error.kind))
        #expect(error.statusCode == .resourceExhausted)
    }
}
