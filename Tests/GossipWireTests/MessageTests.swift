// Message bodies and the tensor payload: round trips, the schema hash, alignment, one-copy
// decode into a destination, and limits at and past their edge.
import Testing
@testable import GossipWire

@Test func schemaHashMatchesTheSharedDefinition() {
    #expect(SchemaHash.description(of: Fixtures.tensors) == "layers.0.weight:F32:2,3\nlayers.0.bias:F32:2\n")
    // Computed with Python: FNV-1a 64 over the UTF-8 of the text above.
    #expect(SchemaHash.of(Fixtures.tensors) == 0x2595_8d0c_ab31_add1)
    #expect(SchemaHash.fnv1a([UInt8]()) == 0xcbf2_9ce4_8422_2325)
}

@Test func modelRoundTripIsAlignedAndCopiesOnce() throws {
    let payload = try Fixtures.model().encode()
    let m = try ModelState.decode(payload, expectedSchemaHash: Fixtures.hash)
    #expect(m == Fixtures.model())
    #expect((m.data.range.lowerBound - payload.range.lowerBound) % 64 == 0)
    #expect(Int(bitPattern: m.data.bytes.baseAddress!) % 64 == 0)
    #expect(m.data.storage === payload.storage)        // a view, not a copy
    var dst = [Float](repeating: 0, count: 8)
    try m.copyData(into: &dst)
    #expect(dst == Fixtures.weights)
    var small = [Float](repeating: 0, count: 7)
    #expect(throws: WireError.self) { try m.copyData(into: &small) }
    #expect(m.tensorData(1).array == Fixtures.weights[6...].withUnsafeBytes { [UInt8]($0) })
}

@Test func exchangeRoundTripsWithFill() throws {
    let p = try GossipExchangeRequest.encode(sender: "a:1", weight: 2.5, architecture: "3,2", round: 1, step: 2, samples: 3,
                                             table: Fixtures.table, dataByteCount: 32) { dst in
        Fixtures.weights.withUnsafeBytes { dst.copyMemory(from: $0) }
    }
    let r = try GossipExchangeRequest.decode(p)
    #expect(r.sender == "a:1" && r.weight == 2.5 && r.model.round == 1 && r.model.samples == 3)
    #expect(r.model.data.array == Fixtures.weights.withUnsafeBytes { [UInt8]($0) })
    let reply = GossipExchangeReply(weight: 1, peers: Fixtures.peers, model: Fixtures.model())
    #expect(try GossipExchangeReply.decode(reply.encode()) == reply)
}

@Test func simpleBodiesRoundTrip() throws {
    for spec in Fixtures.specs {
        let payload = try spec.body.encode()
        #expect(try MessageBody.decode(type: spec.body.type, kind: spec.body.kind, payload: payload) == spec.body, "\(spec.name)")
    }
}

@Test func unknownMessageTypeIsTyped() throws {
    let e = #expect(throws: WireError.self) {
        try MessageBody.decode(type: MessageType(rawValue: 99), kind: .request, payload: ByteSlice(ByteStorage(count: 0)))
    }
    #expect(e?.kind == .unknownMessageType && e?.statusCode == .unimplemented)
}

@Test func schemaMismatchIsFailedPrecondition() throws {
    let p = try Fixtures.model().encode()
    let e = #expect(throws: WireError.self) { try ModelState.decode(p, expectedSchemaHash: 42) }
    #expect(e?.kind == .schemaMismatch && e?.statusCode == .failedPrecondition)
    #expect(try ModelState.decode(p, expectedSchemaHash: 0) == Fixtures.model())  // 0 = any
}

@Test func encoderRefusesInconsistentTables() throws {
    var t = Fixtures.table
    t.schemaHash ^= 1
    #expect(throws: WireError.self) {
        try [Float](repeating: 0, count: 8).withUnsafeBytes { d in
            _ = try ModelState.encode(architecture: "x", round: 0, step: 0, samples: 0, table: t, data: d)
        }
    }
    #expect(throws: WireError.self) {
        try [Float](repeating: 0, count: 7).withUnsafeBytes { d in
            _ = try ModelState.encode(architecture: "x", round: 0, step: 0, samples: 0, table: Fixtures.table, data: d)
        }
    }
    // F16 data of the right size encodes (SPEC §6.5: exchanges and pushes may carry it); a
    // GetModel reply decoder refuses it (F32 only) with UNIMPLEMENTED.
    let f16 = TensorTable(tensors: [TensorInfo(name: "h", dtype: .float16, shape: [2], byteCount: 4)])
    let p = try [UInt8](repeating: 0, count: 4).withUnsafeBytes { d in
        try ModelState.encode(architecture: "x", round: 0, step: 0, samples: 0, table: f16, data: d)
    }
    let e = #expect(throws: WireError.self) { try ModelState.decode(p) }
    #expect(e?.kind == .unsupported)
    let wrong = TensorTable(tensors: [TensorInfo(name: "h", dtype: .float16, shape: [2], byteCount: 8)])
    #expect(throws: WireError.self) {
        try [UInt8](repeating: 0, count: 8).withUnsafeBytes { d in
            _ = try ModelState.encode(architecture: "x", round: 0, step: 0, samples: 0, table: wrong, data: d)
        }
    }
}

@Test func peerLimitAtAndPastEdge() throws {
    var limits = Limits()
    limits.maxPeers = 3
    let at = RegisterReply(peers: PeerList(entries: ["a:1", "b:2", "c:3"].map { PeerEntry(endpoint: $0) }), architecture: "x", schemaHash: 1)
    #expect(try RegisterReply.decode(at.encode(limits: limits), limits: limits) == at)
    let past = RegisterReply(peers: PeerList(entries: ["a:1", "b:2", "c:3", "d:4"].map { PeerEntry(endpoint: $0) }), architecture: "x", schemaHash: 1)
    #expect(throws: WireError.self) { try past.encode(limits: limits) }
    let e = #expect(throws: WireError.self) { try RegisterReply.decode(past.encode(), limits: limits) }
    #expect(e?.kind == .limitExceeded && e?.offset == 0)
}

@Test func nameAndTextLimitsAtAndPastEdge() throws {
    var limits = Limits()
    limits.maxNameBytes = 8
    limits.maxTextBytes = 10
    let ok = RegisterRequest(endpoint: "h:123456", schemaHash: 0)
    #expect(try RegisterRequest.decode(ok.encode(limits: limits), limits: limits) == ok)
    let long = RegisterRequest(endpoint: "h:1234567", schemaHash: 0)
    #expect(throws: WireError.self) { try long.encode(limits: limits) }
    #expect((#expect(throws: WireError.self) { try RegisterRequest.decode(long.encode(), limits: limits) })?.kind == .limitExceeded)
    let s = StatusReply(json: "0123456789")
    #expect(try StatusReply.decode(s.encode(limits: limits), limits: limits) == s)
    #expect((#expect(throws: WireError.self) { try StatusReply.decode(StatusReply(json: "01234567890").encode(), limits: limits) })?.kind == .limitExceeded)
    // Error text past the limit is cut, not refused.
    let er = try ErrorReply(code: .internal, message: String(repeating: "é", count: 8)).encode(limits: limits)
    #expect(try ErrorReply.decode(er, limits: limits).message == String(repeating: "é", count: 5))
}

@Test func tensorLimitsAtAndPastEdge() throws {
    var limits = Limits()
    limits.maxTensors = 2
    limits.maxDimensions = 2
    let p = try Fixtures.model().encode()
    #expect(try ModelState.decode(p, limits: limits) == Fixtures.model())
    limits.maxTensors = 1
    #expect((#expect(throws: WireError.self) { try ModelState.decode(p, limits: limits) })?.kind == .limitExceeded)
    limits.maxTensors = 2
    limits.maxDimensions = 1
    #expect((#expect(throws: WireError.self) { try ModelState.decode(p, limits: limits) })?.kind == .limitExceeded)
}

@Test func emptyPayloadsMustBeEmpty() {
    let one = ByteSlice(ByteStorage(copying: [0] as [UInt8]))
    #expect(throws: WireError.self) { try MessageBody.decode(type: .status, kind: .request, payload: one) }
    #expect(throws: WireError.self) { try MessageBody.decode(type: .stop, kind: .response, payload: one) }
}

@Test func trailingBytesAreRefused() throws {
    let p = try GetModelRequest(schemaHash: 1).encode().array + [0]
    let e = #expect(throws: WireError.self) { try GetModelRequest.decode(ByteSlice(ByteStorage(copying: p))) }
    #expect(e?.kind == .lengthMismatch && e?.offset == 8)
}

// Version 2 peer lists (SPEC §5): each entry is `str endpoint` then a 32-byte identity, all
// zero when not known.

/// A Register reply payload with the given peer-list bytes, architecture "x" and hash 1.
private func registerReplyPayload(_ peerList: [UInt8]) -> ByteSlice {
    ByteSlice(ByteStorage(copying: peerList + [1, 0, 0x78] + [1, 0, 0, 0, 0, 0, 0, 0]))
}

@Test func peerListEntriesCarryA32ByteIdentity() throws {
    let id = [UInt8](1...32)
    let list = PeerList(entries: [PeerEntry(endpoint: "a:1", identity: id), PeerEntry(endpoint: "b:2")])
    #expect(list.endpoints == ["a:1", "b:2"])
    let reply = RegisterReply(peers: list, architecture: "x", schemaHash: 1)
    let payload = try reply.encode()
    let expected: [UInt8] = [2, 0, 0, 0] + [3, 0] + Array("a:1".utf8) + id + [3, 0] + Array("b:2".utf8) + [UInt8](repeating: 0, count: 32)
        + [1, 0, 0x78] + [1, 0, 0, 0, 0, 0, 0, 0]
    #expect(payload.array == expected)
    let back = try RegisterReply.decode(payload)
    #expect(back == reply)
    #expect(back.peers.entries[0].identity == id && back.peers.entries[1].identity == nil)
}

@Test func zeroIdentityIsUnknown() throws {
    // 32 zero bytes and nil are the same entry: the wire has one form for "not known".
    let zero = PeerEntry(endpoint: "a:1", identity: [UInt8](repeating: 0, count: 32))
    #expect(zero.identity == nil && zero == PeerEntry(endpoint: "a:1"))
    var bytes: [UInt8] = [1, 0, 0, 0, 3, 0] + Array("a:1".utf8) + [UInt8](repeating: 0, count: 32)
    #expect(try RegisterReply.decode(registerReplyPayload(bytes)).peers.entries == [PeerEntry(endpoint: "a:1", identity: nil)])
    // One non-zero byte anywhere makes it a known identity, kept byte for byte.
    bytes[bytes.count - 1] = 0x80
    let got = try RegisterReply.decode(registerReplyPayload(bytes)).peers.entries[0].identity
    #expect(got == [UInt8](repeating: 0, count: 31) + [0x80])
}

@Test func identityOfAnotherLengthIsRefusedOnEncode() throws {
    for n in [0, 1, 31, 33, 64] {
        let list = PeerList(entries: [PeerEntry(endpoint: "a:1", identity: [UInt8](repeating: 7, count: n))])
        let e = #expect(throws: WireError.self) { try RegisterReply(peers: list, architecture: "x", schemaHash: 1).encode() }
        #expect(e?.kind == .malformed && e?.message.contains("a:1") == true && e?.message.contains("\(n) bytes") == true, "\(n): \(String(describing: e))")
        let model = Fixtures.model()
        #expect(throws: WireError.self) { try GossipExchangeReply(weight: 1, peers: list, model: model).encode() }
    }
}

@Test func hostilePeerCountsAreRefusedBeforeAllocation() throws {
    // A count that the old 2-byte minimum per entry would have let through: 10 entries need at
    // least 340 bytes, 40 remain. Refused at the count (offset 0) before reserving anything.
    let e = #expect(throws: WireError.self) {
        try RegisterReply.decode(registerReplyPayload([10, 0, 0, 0] + [UInt8](repeating: 0, count: 29)))
    }
    #expect(e?.kind == .truncated && e?.offset == 0, "\(String(describing: e))")
    #expect(e?.message.contains("at least 34 bytes each") == true)
    // A count past maxPeers: refused as a limit, before the fit check.
    let big = #expect(throws: WireError.self) { try RegisterReply.decode(registerReplyPayload([0xff, 0xff, 0xff, 0xff])) }
    #expect(big?.kind == .limitExceeded && big?.offset == 0)
    // An identity cut short: the endpoint reads, the identity runs past the payload.
    let entry: [UInt8] = [1, 0, 0, 0, 3, 0] + Array("a:1".utf8) + [UInt8](repeating: 9, count: 31)
    let short = #expect(throws: WireError.self) {
        try ByteSlice(ByteStorage(copying: entry)).read { (r) throws(WireError) in try PeerList.read(&r, limits: .default) }
    }
    #expect(short?.kind == .truncated && short?.offset == 9 && short?.message.contains("peer 0 identity") == true, "\(String(describing: short))")
}
