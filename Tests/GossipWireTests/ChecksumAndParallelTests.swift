// The hardware CRC-32 against zlib's (random lengths and alignments, 40 MB, the golden
// vectors), the CRC fused into the receive path, and the chunks of one message compressed
// and inflated on all cores: same bytes as one core, errors still found, bounds kept.
import Foundation
import Testing
@testable import GossipWire

private func randomBytes(_ n: Int, seed: UInt64) -> [UInt8] {
    var x = seed | 1
    var out = [UInt8](repeating: 0, count: n)
    for i in 0..<n {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        out[i] = UInt8(truncatingIfNeeded: x)
    }
    return out
}

/// Float32-like bytes that compress a little (the bench's kind of data), `n` floats.
private func weights(_ n: Int, seed: UInt64) -> ByteSlice {
    var x = seed | 1
    let s = ByteStorage(count: n * 4)
    for i in 0..<n {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        let f = Float(Int64(bitPattern: x) % 10_000) * 1e-5
        s.mutableBytes.storeBytes(of: f.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
    }
    return ByteSlice(s)
}

private func decode(_ bytes: [UInt8], limits: Limits = .default, pieces: Int) throws -> [InboundMessage] {
    let d = MessageDecoder(limits: limits, buffers: ReceiveBuffers(budget: 1 << 30))
    var out: [InboundMessage] = []
    var i = 0
    while i < bytes.count {
        let j = min(bytes.count, i + pieces)
        try d.append(Array(bytes[i..<j]))
        while let m = d.nextMessage() { out.append(m) }
        i = j
    }
    try d.finish()
    return out
}

@Suite struct HardwareCRCTests {
    @Test func hardwareIsUsedWhereTheCPUHasIt() {
        #if arch(x86_64) || arch(arm64)
        // Every CI and development machine of this project has PCLMULQDQ or ARMv8 CRC32; say so
        // if one does not (the fallback is still correct, only slower).
        if !Checksum.hardwareAvailable { print("note: no hardware CRC-32 on this CPU; zlib's is used") }
        #endif
    }

    @Test func equalsZlibOnEveryLengthAndAlignmentUpTo4096() {
        let data = randomBytes(4096 + 64, seed: 0x1234_5678)
        data.withUnsafeBytes { all in
            for offset in [0, 1, 3, 7, 8, 15, 16, 33] {
                for length in 0...4096 where offset + length <= all.count {
                    // Every length below 300, then a spread (the hardware path starts at 64).
                    guard length < 300 || length % 13 == 0 || length % 64 == 0 || length == 4096 else { continue }
                    let b = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + length)])
                    let initial: UInt32 = length % 3 == 0 ? 0 : 0xDEAD_BEEF
                    #expect(Checksum.crc32(b, initial: initial) == Checksum.zlibCRC32(b, initial: initial),
                            "offset \(offset), length \(length)")
                }
            }
        }
    }

    @Test func knownValues() {
        #expect(Checksum.crc32(Array("123456789".utf8)) == 0xCBF4_3926)   // the CRC-32 check value
        #expect(Checksum.crc32([]) == 0)
        let zeros = [UInt8](repeating: 0, count: 1000)
        #expect(Checksum.crc32(zeros) == zeros.withUnsafeBytes { Checksum.zlibCRC32($0) })
    }

    @Test func continuesAcrossPiecesLikeZlib() {
        let data = randomBytes(100_000, seed: 99)
        data.withUnsafeBytes { all in
            var crc: UInt32 = 0
            var at = 0
            for piece in [1, 63, 64, 65, 4095, 16, 17, 65536, 1000] where at < all.count {
                let n = min(piece, all.count - at)
                crc = Checksum.crc32(UnsafeRawBufferPointer(rebasing: all[at..<(at + n)]), initial: crc)
                at += n
            }
            crc = Checksum.crc32(UnsafeRawBufferPointer(rebasing: all[at...]), initial: crc)
            #expect(crc == Checksum.zlibCRC32(all))
        }
    }

    @Test func equalsZlibOn40MB() {
        let n = 40_000_000
        let s = ByteStorage(count: n)
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        s.mutableBytes.withMemoryRebound(to: UInt64.self) { w in
            for i in 0..<w.count { x ^= x << 13; x ^= x >> 7; x ^= x << 17; w[i] = x }
        }
        #expect(Checksum.crc32(s.bytes) == Checksum.zlibCRC32(s.bytes))
        // Unaligned start and odd length.
        let tail = UnsafeRawBufferPointer(rebasing: s.bytes[3..<(n - 5)])
        #expect(Checksum.crc32(tail) == Checksum.zlibCRC32(tail))
    }

    @Test func equalsZlibOnTheGoldenVectors() throws {
        let dir = HexFile.vectorsDirectory
        var checked = 0
        for file in try FileManager.default.contentsOfDirectory(atPath: dir.path) where file.hasSuffix(".hex") {
            let bytes = try HexFile.parse(String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8))
            #expect(Checksum.crc32(bytes) == bytes.withUnsafeBytes { Checksum.zlibCRC32($0) }, "\(file)")
            // Every checksummed frame's header field matches the hardware CRC of its payload.
            var at = 0
            while at + FrameHeader.size <= bytes.count {
                let h = try bytes.withUnsafeBytes { b in
                    try FrameHeader.parse(UnsafeRawBufferPointer(rebasing: b[at..<(at + FrameHeader.size)]), at: at, limits: .default)
                }
                let end = at + Int(h.frameLength)
                if h.flags.contains(.checksummed) {
                    let crc = bytes.withUnsafeBytes { Checksum.crc32(UnsafeRawBufferPointer(rebasing: $0[(at + FrameHeader.size)..<end])) }
                    #expect(crc == h.checksum, "\(file) frame at \(at)")
                    checked += 1
                }
                at = end
            }
        }
        #expect(checked >= 10)
    }
}

@Suite struct FusedChecksumTests {
    /// A checksummed multi-frame message decodes whatever the read sizes (the CRC is
    /// computed piece by piece as the bytes land), and one flipped byte is found.
    @Test func checkedPieceByPieceAndCorruptionFound() throws {
        var limits = Limits()
        limits.chunkBytes = 100_000
        let p = ByteSlice(ByteStorage(copying: randomBytes(350_003, seed: 7)))
        for compression in [CompressionMode.none, .zlib(level: 1, shuffle: true)] {
            let wire = try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 9, payload: p,
                                           compression: compression, checksum: true, limits: limits).serialized()
            for pieces in [1 << 20, 65_536, 8_191, 24, 7] {
                let got = try decode(wire, limits: limits, pieces: pieces)
                #expect(got.count == 1)
                #expect(got.first.map { Array($0.payload.withUnsafeBytes { Array($0) }) } == Array(p.withUnsafeBytes { Array($0) }))
            }
            // One flipped payload byte (in the first, second and last frame) is a checksum mismatch.
            let m = try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 9, payload: p,
                                        compression: compression, checksum: true, limits: limits)
            let second = Int(m.frames[0].header.frameLength) + FrameHeader.size + 10
            for flip in [FrameHeader.size + 5, second, wire.count - 1] {
                var bad = wire
                bad[flip] ^= 0x40
                for pieces in [65_536, 4_096] {
                    var caught: WireError?
                    do { _ = try decode(bad, limits: limits, pieces: pieces) } catch { caught = error as? WireError }
                    #expect(caught?.kind == .checksumMismatch, "flip at \(flip), \(compression), pieces \(pieces)")
                }
            }
        }
    }
}

@Suite struct ParallelChunkTests {
    /// Frames compressed on all cores are byte-identical to those compressed on one.
    @Test func parallelEncodeEqualsSerial() throws {
        var limits = Limits()
        limits.chunkBytes = 64 << 10
        let p = weights(300_001, seed: 3)   // 1.2 MB: 19 chunks, the last short
        let saved = ParallelChunks.width
        defer { ParallelChunks.width = saved }
        ParallelChunks.width = 1
        let one = try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 1, payload: p,
                                      compression: .zlib(level: 1, shuffle: true), checksum: true, limits: limits).serialized()
        ParallelChunks.width = 4
        let many = try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 1, payload: p,
                                       compression: .zlib(level: 1, shuffle: true), checksum: true, limits: limits).serialized()
        #expect(one == many)
        let plain = try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 1, payload: p,
                                        compression: .none, checksum: true, limits: limits)
        #expect(plain.frames.count == 19)
        #expect(plain.frames.last!.header.flags.contains(.endStream))
        #expect(plain.frames.dropLast().allSatisfy { !$0.header.flags.contains(.endStream) })
    }

    /// Chunks inflated on other cores while the next arrives reassemble exactly, for every
    /// read size, message after message on one decoder.
    @Test func parallelInflateReassembles() throws {
        var limits = Limits()
        limits.chunkBytes = 80 << 10   // above the hand-off minimum: every chunk but the last goes to a worker
        let saved = ParallelChunks.width
        defer { ParallelChunks.width = saved }
        ParallelChunks.width = 4
        let a = weights(400_000, seed: 11), b = weights(123_457, seed: 12)
        var wire: [UInt8] = []
        for (i, p) in [a, b, a].enumerated() {
            for shuffle in [false, true] {
                wire += try OutboundMessage(type: .gossipExchange, kind: .request, requestID: UInt32(2 * i + (shuffle ? 1 : 0)),
                                            payload: p, compression: .zlib(level: 1, shuffle: shuffle),
                                            checksum: i == 1, limits: limits).serialized()
            }
        }
        for pieces in [1 << 20, 50_000, 4_099] {
            let got = try decode(wire, limits: limits, pieces: pieces)
            #expect(got.count == 6)
            let expected = [a, a, b, b, a, a].map { p in p.withUnsafeBytes { Array($0) } }
            #expect(got.map { m in m.payload.withUnsafeBytes { Array($0) } } == expected)
        }
    }

    /// A corrupt chunk inflated by a worker fails the message at END_STREAM (or the next
    /// frame), with the inflater's error and offset, and the decoder stays failed.
    @Test func workerErrorsSurface() throws {
        var limits = Limits()
        limits.chunkBytes = 80 << 10
        let saved = ParallelChunks.width
        defer { ParallelChunks.width = saved }
        ParallelChunks.width = 2
        let p = weights(200_000, seed: 5)   // 800 KB: 10 chunks
        let m = try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 1, payload: p,
                                    compression: .zlib(level: 1, shuffle: false), checksum: false, limits: limits)
        var wire = m.serialized()
        // Corrupt the deflate data of the second frame (not its header).
        let second = Int(m.frames[0].header.frameLength)
        let target = second + FrameHeader.size + Int(m.frames[1].header.frameLength - 24) / 2
        for k in 0..<16 { wire[target + k] ^= 0xFF }
        var caught: WireError?
        do { _ = try decode(wire, limits: limits, pieces: 65_536) } catch { caught = error as? WireError }
        #expect(caught != nil)
        #expect([WireError.Kind.decompressionFailed, .lengthMismatch, .decompressionOverflow].contains(caught!.kind))
        // Decompression is still bounded: a truncated stream (no END_STREAM) ends as truncated or with the worker's error.
        let cut = Array(wire[0..<(wire.count - 100)])
        #expect(throws: WireError.self) { _ = try decode(cut, limits: limits, pieces: 65_536) }
    }
}
