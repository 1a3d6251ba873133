// Hostile and broken input: every case must end in a typed WireError, never a trap, and
// never an allocation sized by an unchecked field.
import Foundation
import Testing
@testable import GossipWire

/// A raw tensor-table entry, any values allowed.
private struct RawTensor {
    var name: [UInt8]
    var dtype: UInt8 = 1
    var dims: [UInt64]
    var bytes: UInt64
}

/// Builds a GetModel reply payload by hand from raw fields (hash computed unless given).
private func rawModel(_ tensors: [RawTensor], count: UInt32? = nil, hash: UInt64? = nil, data: [UInt8]? = nil) -> ByteSlice {
    var desc: [UInt8] = []
    for t in tensors {
        desc += t.name + Array(":F32:".utf8) + Array(t.dims.map(String.init).joined(separator: ",").utf8) + [10]
    }
    var b: [UInt8] = []
    func u(_ v: UInt64, _ n: Int) { for i in 0..<n { b.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
    u(3, 2); b += Array("3,2".utf8)
    u(0, 8); u(0, 8); u(0, 8)
    u(hash ?? SchemaHash.fnv1a(desc), 8)
    u(UInt64(count ?? UInt32(tensors.count)), 4)
    var total: UInt64 = 0
    for t in tensors {
        u(UInt64(t.name.count), 2); b += t.name
        b.append(t.dtype); b.append(UInt8(t.dims.count))
        for d in t.dims { u(d, 8) }
        u(t.bytes, 8)
        total &+= t.bytes
    }
    let fieldsEnd = b.count + 16
    let dataStart = (fieldsEnd + 63) / 64 * 64
    u(UInt64(dataStart), 8); u(total, 8)
    b += [UInt8](repeating: 0, count: dataStart - b.count)
    b += data ?? [UInt8](repeating: 0, count: Int(min(total, 4096)))
    return ByteSlice(ByteStorage(copying: b))
}

private func modelError(_ p: ByteSlice, limits: Limits = .default) -> WireError? {
    #expect(throws: WireError.self) { try ModelState.decode(p, limits: limits) }
}

private func frame(_ h: FrameHeader, _ payload: [UInt8] = []) -> [UInt8] { h.bytes + payload }

private func header(length: Int = 24, version: UInt8 = FrameHeader.currentVersion, flags: UInt8 = 0x10, type: UInt16 = 5,
                    chunk: UInt32 = 0, message: UInt32 = 0) -> FrameHeader {
    FrameHeader(frameLength: UInt32(length), version: version, flags: FrameFlags(rawValue: flags),
                type: MessageType(rawValue: type), requestID: 1, chunkRawLength: chunk, messageRawLength: message, checksum: 0)
}

private func frameError(_ bytes: [UInt8], limits: Limits = .default) -> WireError? {
    #expect(throws: WireError.self) {
        let d = MessageDecoder(limits: limits)
        try d.append(bytes)
        try d.finish()
    }
}

@Test func sanityOfTheRawBuilder() throws {
    let p = rawModel([RawTensor(name: Array("w".utf8), dims: [2, 3], bytes: 24)])
    #expect(try ModelState.decode(p).table.tensors[0].shape == [2, 3])
}

@Test func truncationAtEveryOffsetOfAModelFrame() throws {
    let bytes = try OutboundMessage(body: .getModelReply(Fixtures.model()), requestID: 2).serialized()
    for cut in 0..<bytes.count {
        let d = MessageDecoder()
        try d.append(Array(bytes[0..<cut]))
        #expect(d.nextMessage() == nil)
        if cut > 0 { #expect(throws: WireError.self) { try d.finish() } }
    }
    // And the body alone, cut at every offset.
    let payload = try Fixtures.model().encode().array
    for cut in 0..<payload.count {
        let e = #expect(throws: WireError.self) { try ModelState.decode(ByteSlice(ByteStorage(copying: payload[0..<cut]))) }
        #expect(e?.offset != nil)
    }
}

@Test func lengthPrefixZero() {
    let e = frameError([0, 0, 0, 0])
    #expect(e?.kind == .frameTooShort && e?.offset == 0)
}

@Test func lengthPrefixMax() {
    let e = frameError([0xff, 0xff, 0xff, 0xff])
    #expect(e?.kind == .frameTooLarge && e?.statusCode == .resourceExhausted)
}

@Test func unknownVersion() {
    // Version 3 (a future node) and version 1 (a node from before identities in peer lists,
    // whose peer lists this version could not read) are both refused at header byte 4.
    for v: UInt8 in [3, 1, 0, 0xff] {
        let e = frameError(frame(header(version: v)))
        #expect(e?.kind == .unsupportedVersion && e?.offset == 4 && e?.statusCode == .unimplemented, "version \(v)")
        #expect(e?.message == "protocol version \(v) is not supported; this node speaks version 2")
    }
    #expect(FrameHeader.currentVersion == 2)
    let reply = ErrorReply.unsupportedVersion(1)
    #expect(reply.code == .unimplemented && reply.message == "protocol version 1 is not supported; this node speaks version 2")
}

@Test func flagsOutOfRange() {
    for f: UInt8 in [0x40, 0x80, 0xd0] { #expect(frameError(frame(header(flags: f)))?.kind == .unknownFlags) }
    #expect(frameError(frame(header(flags: 0x12)))?.kind == .invalidFlags)   // shuffled without compressed
    #expect(frameError(frame(header(flags: 0x18)))?.kind == .invalidFlags)   // error without response
}

@Test func messageTypeZeroIsRefused() {
    #expect(frameError(frame(header(type: 0)))?.kind == .malformed)
}

@Test func unknownMessageTypeBody() {
    // Frames of an unknown type pass the frame layer (skippable by length); the body decode says so.
    let d = MessageDecoder()
    #expect(throws: Never.self) { try d.append(frame(header(type: 999))) }
    let m = d.nextMessage()!
    #expect((#expect(throws: WireError.self) { try MessageBody.decode(m) })?.kind == .unknownMessageType)
}

@Test func tensorByteCountNotMatchingShape() {
    let e = modelError(rawModel([RawTensor(name: Array("w".utf8), dims: [2, 3], bytes: 20)]))
    #expect(e?.kind == .lengthMismatch)
}

@Test func shapeProductOverflowsInt() {
    for dims: [UInt64] in [[1 << 62, 4], [UInt64(Int.max), 2], [UInt64.max], [1 << 32, 1 << 32]] {
        let e = modelError(rawModel([RawTensor(name: Array("w".utf8), dims: dims, bytes: 0)]))
        #expect(e?.kind == .malformed, "\(dims)")
    }
}

@Test func byteCountsOverflowWhenSummed() {
    let big = UInt64(Int.max / 4 / 4 * 4) // 4 tensors of ~Int.max/4 bytes each
    let t = (0..<5).map { RawTensor(name: Array("w\($0)".utf8), dims: [big / 4], bytes: big) }
    let e = modelError(rawModel(t))
    #expect(e?.kind == .malformed || e?.kind == .lengthMismatch)
}

@Test func moreTensorsThanTheLimit() {
    // A count of 4 billion is refused at the count field, before anything is reserved.
    let e = modelError(rawModel([], count: UInt32.max))
    #expect(e?.kind == .limitExceeded)
    var limits = Limits()
    limits.maxTensors = 1
    let two = rawModel([RawTensor(name: [0x61], dims: [1], bytes: 4), RawTensor(name: [0x62], dims: [1], bytes: 4)])
    #expect(modelError(two, limits: limits)?.kind == .limitExceeded)
    // A count within the limit that the payload cannot hold is refused before reserving.
    #expect(modelError(rawModel([], count: 4000))?.kind == .truncated)
}

@Test func longerNamesThanTheLimit() {
    let e = modelError(rawModel([RawTensor(name: [UInt8](repeating: 0x61, count: 257), dims: [1], bytes: 4)]))
    #expect(e?.kind == .limitExceeded)
}

@Test func moreDimensionsThanTheLimit() {
    let e = modelError(rawModel([RawTensor(name: [0x61], dims: [UInt64](repeating: 1, count: 9), bytes: 4)]))
    #expect(e?.kind == .limitExceeded)
}

@Test func invalidUTF8Names() {
    for bad: [UInt8] in [[0xff], [0xc3], [0xed, 0xa0, 0x80], [0x61, 0x80]] {
        let e = modelError(rawModel([RawTensor(name: bad, dims: [1], bytes: 4)]))
        #expect(e?.kind == .invalidUTF8)
    }
    var b: [UInt8] = [2, 0, 0xc3, 0x28] + [UInt8](repeating: 0, count: 8)
    #expect((#expect(throws: WireError.self) { try RegisterRequest.decode(ByteSlice(ByteStorage(copying: b))) })?.kind == .invalidUTF8)
    b = [1, 0, 0, 0, 1, 0, 0, 0, 0xfe]
    #expect((#expect(throws: WireError.self) { try ErrorReply.decode(ByteSlice(ByteStorage(copying: b))) })?.kind == .invalidUTF8)
}

@Test func unknownAndUnsupportedDTypes() {
    #expect(modelError(rawModel([RawTensor(name: [0x61], dtype: 9, dims: [1], bytes: 4)]))?.kind == .malformed)
    let e = modelError(rawModel([RawTensor(name: [0x61], dtype: 2, dims: [2], bytes: 4)]))
    // A GetModel reply is F32 only (SPEC §6.5): F16 is refused as UNIMPLEMENTED, naming it and --wire-dtype.
    #expect(e?.kind == .unsupported && e?.statusCode == .unimplemented && e?.message.contains("F16") == true && e?.message.contains("--wire-dtype") == true)
}

@Test func declaredSchemaHashMustMatchTheTable() {
    let e = modelError(rawModel([RawTensor(name: [0x61], dims: [1], bytes: 4)], hash: 12345))
    #expect(e?.kind == .malformed && e?.message.contains("schema hash") == true)
}

@Test func expectedSchemaHashCheckedBeforeTheTable() throws {
    // The table after the hash is garbage; the mismatch is reported first.
    var p = try Fixtures.model().encode().array
    let hashAt = 2 + 3 + 24
    for i in (hashAt + 8)..<p.count { p[i] = 0xff }
    let e = #expect(throws: WireError.self) {
        try ModelState.decode(ByteSlice(ByteStorage(copying: p)), expectedSchemaHash: 7)
    }
    #expect(e?.kind == .schemaMismatch && e?.offset == hashAt)
}

@Test func nonZeroPaddingAndWrongDataOffset() throws {
    let good = try Fixtures.model().encode().array
    let m = try ModelState.decode(ByteSlice(ByteStorage(copying: good)))
    let dataStart = m.data.range.lowerBound
    var p = good
    p[dataStart - 1] = 1
    #expect(modelError(ByteSlice(ByteStorage(copying: p)))?.kind == .malformed)
    p = good
    p[dataStart - 16 - (dataStart - m.fieldsSize) ] ^= 0x40    // data_offset field
    #expect(modelError(ByteSlice(ByteStorage(copying: p))) != nil)
    #expect(modelError(ByteSlice(ByteStorage(copying: good + [0, 0, 0, 0])))?.kind == .lengthMismatch)
}

@Test func corruptZlib() throws {
    var bytes = try OutboundMessage(body: .getModelReply(Fixtures.model()), requestID: 2,
                                    compression: .zlib(level: 6, shuffle: false), checksum: false).serialized()
    bytes[24 + 4] ^= 0xff
    bytes[24 + 5] ^= 0xff
    let e = frameError(bytes)
    #expect(e?.kind == .decompressionFailed || e?.kind == .lengthMismatch || e?.kind == .decompressionOverflow)
    // Not zlib at all.
    let junk: [UInt8] = [0x12, 0x34, 0x56, 0x78]
    #expect(frameError(frame(header(length: 28, flags: 0x11, chunk: 8, message: 8), junk))?.kind == .decompressionFailed)
}

@Test func checksumMismatchIsDataLoss() throws {
    var bytes = try OutboundMessage(body: .pingRequest(Fixtures.pingBytes), requestID: 6).serialized()
    bytes[bytes.count - 1] ^= 1
    let e = frameError(bytes)
    #expect(e?.kind == .checksumMismatch && e?.statusCode == .dataLoss && e?.offset == 20)
}

@Test func decompressionBombStaysBounded() throws {
    // 64 MiB of zeros deflates to ~64 KiB; the frame declares 4 KiB. A payload that large for a
    // 4 KiB chunk is refused at the header (no deflater needs it: SPEC §7), before buffering.
    let big = ByteStorage(count: 64 << 20, zeroed: true)
    let z = try Compression.deflate(big.bytes, level: 9, shuffle: true)
    let bytes = frame(header(length: 24 + z.count, flags: 0x13, chunk: 4096, message: 4096), z.array)
    #expect(frameError(bytes)?.kind == .frameTooLarge)
    #expect(frameError(bytes)?.statusCode == .resourceExhausted)
    // A small bomb that passes that check (1 MiB of zeros in ~1 KiB, declared 4 KiB) is
    // stopped while inflating, at the declared size.
    let small = try Compression.deflate(ByteStorage(count: 1 << 20, zeroed: true).bytes, level: 9, shuffle: true)
    let smallBytes = frame(header(length: 24 + small.count, flags: 0x13, chunk: 4096, message: 4096), small.array)
    #expect(frameError(smallBytes)?.kind == .decompressionOverflow)
    // Declaring the full size is refused by the message limit before allocating.
    var limits = Limits()
    limits.maxMessageBytes = 1 << 20
    let huge = frame(header(length: 24 + z.count, flags: 0x11, chunk: 64 << 20, message: 64 << 20), z.array)
    #expect(frameError(huge, limits: limits)?.kind == .messageTooLarge)
}

/// Where a flipped bit landed, and what that must lead to.
private enum FlipClass: String, CaseIterable {
    case version            // header byte 4: refused, unsupportedVersion
    case checksummed        // payload or CRC field of a checksummed frame: refused, checksumMismatch
    case requestID          // one frame's request id: a single frame decodes unchanged under the new
                            // id; a frame of a chunked message breaks the stream (streamViolation)
    case plainPayload       // payload of an uncompressed, unchecked frame: the frame layer accepts it;
                            // the body decodes to a different value or is refused by the body decoder
    case otherHeader        // length, flags, type, sizes: refused or decoded, promises kept
}

/// Error kinds only the frame layer raises (never the body decoder).
private let frameLayerKinds: Set<WireError.Kind> = [
    .frameTooShort, .frameTooLarge, .unsupportedVersion, .unknownFlags, .invalidFlags, .checksumMismatch,
    .decompressionFailed, .decompressionOverflow, .streamViolation,
]

/// Single-bit flips in the golden vectors, half of them with checksums: each mutated input is
/// classified by where the flip landed and checked against what that class must give, and
/// every input that decodes must keep the codec's promises (DecodeOracle: offsets inside the
/// input, decode(encode(x)) == x, re-framed bodies decode back).
@Test func bitFlipsAreRefusedWithTheRightKind() throws {
    var rng = SplitMix(seed: 0x5eed)
    var counts: [FlipClass: Int] = [:]
    for i in 0..<10_000 {
        var spec = Fixtures.specs[Int(rng.next() % UInt64(Fixtures.specs.count))]
        spec.checksum = i % 2 == 0
        let original = try spec.encode()
        // The frame holding the flipped byte: walk the length prefixes.
        let bit = Int(rng.next() % UInt64(original.count * 8))
        var start = 0, frames = 0, frame: FrameHeader?, frameStart = 0
        while start < original.count {
            let h = try original.withUnsafeBytes { (raw) throws(WireError) in
                try FrameHeader.parse(UnsafeRawBufferPointer(rebasing: raw[start...]), at: start, limits: spec.limits)
            }
            if (start..<(start + Int(h.frameLength))).contains(bit / 8) { frame = h; frameStart = start }
            start += Int(h.frameLength)
            frames += 1
        }
        let h = try #require(frame)
        let at = bit / 8 - frameStart
        var mutated = original
        mutated[bit / 8] ^= UInt8(1 << (bit % 8))

        var violations: [String] = []
        let got = DecodeOracle.decodeStream(mutated, limits: spec.limits, expectedSchemaHash: Fixtures.hash, violations: &violations)
        let want = DecodeOracle.decodeStream(original, limits: spec.limits, expectedSchemaHash: Fixtures.hash, violations: &violations)
        #expect(violations.isEmpty, "\(spec.name) bit \(bit): \(violations)")
        try #require(want.error == nil && want.bodies.count == 1, "\(spec.name) does not decode")

        let kind: FlipClass
        if at == 4 {
            kind = .version
            #expect(got.error?.kind == .unsupportedVersion, "\(spec.name) bit \(bit): \(got)")
        } else if h.flags.contains(.checksummed) && at >= 20 {
            kind = .checksummed
            #expect(got.error?.kind == .checksumMismatch, "\(spec.name) bit \(bit): \(got)")
        } else if (8..<12).contains(at) {
            kind = .requestID
            if frames == 1 {
                #expect(got.error == nil && got.bodies == want.bodies && got.requestIDs != want.requestIDs,
                        "\(spec.name) bit \(bit): \(got)")
            } else {
                #expect(got.error?.kind == .streamViolation, "\(spec.name) bit \(bit): \(got)")
            }
        } else if at >= 24 && !h.flags.contains(.compressed) {
            kind = .plainPayload
            #expect(got.error == nil && got.bodies.count == 1, "\(spec.name) bit \(bit): \(got)")
            switch got.bodies.first {
            case .success?:
                #expect(got.bodies != want.bodies, "\(spec.name) bit \(bit): a flipped payload bit decoded to the same body")
            case .failure(let e)?:
                #expect(!frameLayerKinds.contains(e.kind), "\(spec.name) bit \(bit): body refused with frame-layer kind \(e)")
            case nil:
                break
            }
        } else {
            kind = .otherHeader
        }
        counts[kind, default: 0] += 1
    }
    for c in FlipClass.allCases {
        #expect(counts[c, default: 0] >= 100, "only \(counts[c, default: 0]) flips in class \(c)")
    }
}

/// SplitMix64: a small seeded generator for reproducible fuzzing.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// The fuzzer's inputs replayed (tools/fuzz/run.sh, DecodeOracle.fuzzOne): its seeds (every
/// golden vector as a frame stream, split at several points, and every vector's payload as a
/// body of every type and kind, and of its own under the default limits) and every input in KnownBad/
/// (inputs that once broke a decoder promise or crashed the fuzz target). None may trap or
/// break a promise.
@Test func fuzzSeedsAndKnownBadInputsKeepPromises() throws {
    var inputs: [(String, [UInt8])] = []
    for spec in Fixtures.specs {
        let bytes = try spec.encode()
        for cut in [0, 1, 24, 128, 255] { inputs.append(("\(spec.name) stream cut \(cut)", [0, UInt8(cut)] + bytes)) }
        let payload = try spec.body.encode(limits: spec.limits).array
        for pick in 0..<(DecodeOracle.bodyTypes.count * DecodeOracle.kinds.count) {
            inputs.append(("\(spec.name) as body \(pick)", [1, UInt8(pick)] + payload))
        }
        // Its own type and kind under the default limits too.
        let own = DecodeOracle.bodyTypes.firstIndex(of: spec.body.type)! + DecodeOracle.bodyTypes.count * DecodeOracle.kinds.firstIndex(of: spec.body.kind)!
        inputs.append(("\(spec.name) as its own body, default limits", [2, UInt8(own)] + payload))
    }
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("KnownBad")
    let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
    for f in files.sorted() where f.hasSuffix(".bin") {
        inputs.append((f, try [UInt8](Data(contentsOf: dir.appendingPathComponent(f)))))
    }
    #expect(inputs.count > Fixtures.specs.count * 30)
    for (name, input) in inputs {
        let violations = DecodeOracle.fuzzOne(input)
        #expect(violations.isEmpty, "\(name): \(violations)")
    }
}
