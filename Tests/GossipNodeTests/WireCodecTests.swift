// The bridge between GossipML parameter sets and GossipWire messages.
import Foundation
import GossipML
@testable import GossipNode
import GossipWire
import Testing

@Test func schemaHashAgreesBetweenModelAndWire() throws {
    for sizes in [[64, 32, 10], [784, 256, 128, 10], [4, 3, 2]] {
        let arch = try MLPArchitecture(layerSizes: sizes)
        let p = arch.makeParameters(seed: 3)
        #expect(WireCodec.table(p).schemaHash == p.schemaHash)
    }
}

@Test func modelRoundTripsThroughTheWireBitExact() throws {
    let arch = try MLPArchitecture(parsing: "8,5,3")
    let p = arch.makeParameters(seed: 9)
    let payload = try WireCodec.encodeModel(architecture: arch, params: p, round: 7, step: 70, samples: 700)
    let (a, q, m) = try WireCodec.decodeModel(payload, expected: p.schemaHash)
    #expect(a == arch && q == p && m.round == 7 && m.step == 70 && m.samples == 700)
}

@Test func nanWeightsAndOtherSchemasAreRefused() throws {
    let arch = try MLPArchitecture(parsing: "8,5,3")
    var p = arch.makeParameters(seed: 9)
    let other = try MLPArchitecture(parsing: "8,4,3").makeParameters(seed: 1)
    let good = try WireCodec.encodeModel(architecture: arch, params: p, round: 0, step: 0, samples: 0)
    #expect(throws: WireError.self) { _ = try WireCodec.decodeModel(good, expected: other.schemaHash) }
    p.storage[3] = .nan
    let bad = try WireCodec.encodeModel(architecture: arch, params: p, round: 0, step: 0, samples: 0)
    #expect(throws: WireError.self) { _ = try WireCodec.decodeModel(bad, expected: nil) }
}

@Test func exchangeAveragesExactlyAndBothSidesAgree() throws {
    let arch = try MLPArchitecture(parsing: "6,4,2")
    let data = try Dataset(name: "t", features: [Float](repeating: 0.5, count: 6 * 8), labels: [0, 1, 0, 1, 0, 1, 0, 1],
                           featureCount: 6, classCount: 2)
    let a = try Trainer(architecture: arch, parameters: arch.makeParameters(seed: 1), data: data, config: SGDConfig(), seed: 1)
    let bParams = arch.makeParameters(seed: 2)
    let b = try Trainer(architecture: arch, parameters: bParams, data: data, config: SGDConfig(), seed: 2)
    let aBefore = a.parameters
    // A's request as B receives it.
    let req = try WireCodec.encodeExchangeRequest(sender: "a:1", weight: 3, architecture: arch, params: a.parameters,
                                                  round: 0, step: 0, samples: 0)
    let decoded = try WireCodec.decodeExchangeRequest(req, expectedSchemaHash: bParams.schemaHash)
    WireCodec.averageInPlace(b, ownWeight: 1, incoming: decoded.model, incomingWeight: decoded.weight)
    for i in 0..<bParams.storage.count {  // SPEC §5.3, bit for bit: ca = 0.25, cb = 0.75, unfused
        let px: Float = bParams.storage[i] * 0.25, py: Float = aBefore.storage[i] * 0.75
        #expect(b.parameters.storage[i].bitPattern == (px + py).bitPattern)
    }
    // B's reply installed at A: both identical.
    let reply = try WireCodec.encodeExchangeReply(weight: 1, peers: PeerList(entries: []), architecture: arch,
                                                  params: b.parameters, round: 0, step: 0, samples: 0)
    let r = try WireCodec.decodeExchangeReply(reply, expectedSchemaHash: aBefore.schemaHash)
    let d = try WireCodec.installAveraged(r.model, into: a)
    #expect(a.parameters == b.parameters)
    #expect(d > 0)
}

@Test func aLyingArchitectureIsRefusedBeforeAllocating() throws {
    // A small, self-consistent model whose architecture field claims ~1 PB of weights.
    let real = try MLPArchitecture(parsing: "4,3,2").makeParameters(seed: 1)
    let payload = try real.storage.withUnsafeBytes { data in
        try ModelState.encode(architecture: "64,16777216,16777216,10", round: 0, step: 0, samples: 0,
                              table: WireCodec.table(real), data: data)
    }
    do {
        _ = try WireCodec.decodeModel(payload, expected: nil)
        Issue.record("accepted a model whose architecture does not match its tensors")
    } catch let e as WireError {
        #expect(e.kind == .schemaMismatch)
    }
}

/// SPEC §6.4: a received exchange model (request, reply, push) whose `architecture` field does
/// not name its tensor table exactly is refused with FAILED_PRECONDITION, even when the schema
/// hash (of the table) is the receiver's own. Found by tools/spec_peer.py: the node used to take
/// a request claiming `3,2`, `external`-less junk, `""` or `064,...` with a 64,... table.
@Test func exchangeModelsWhoseArchitectureFieldLiesAreRefused() throws {
    let arch = try MLPArchitecture(parsing: "6,4,2")
    let p = arch.makeParameters(seed: 4)
    let table = WireCodec.table(p)
    func request(_ architecture: String) throws -> ByteSlice {
        try p.storage.withUnsafeBytes { data in
            try GossipExchangeRequest.encode(sender: "127.0.0.1:7001", weight: 10, architecture: architecture,
                                             round: 0, step: 0, samples: 0, table: table, data: data)
        }
    }
    func reply(_ architecture: String) throws -> ByteSlice {
        try p.storage.withUnsafeBytes { data in
            try GossipExchangeReply.encode(weight: 10, peers: PeerList(entries: []), architecture: architecture,
                                           round: 0, step: 0, samples: 0, table: table, data: data)
        }
    }
    for ok in ["6,4,2", "external"] {
        #expect(try WireCodec.decodeExchangeRequest(request(ok), expectedSchemaHash: p.schemaHash).model.architecture == ok)
        #expect(try WireCodec.decodeExchangeReply(reply(ok), expectedSchemaHash: p.schemaHash).weight == 10)
        #expect(try WireCodec.decodePushSum(request(ok), expectedSchemaHash: p.schemaHash).mass == 10)
    }
    for lie in ["06,4,2", " 6,4,2", "+6,4,2"] {   // GetModel replies too (SPEC §6.4: the form of §5.1)
        let payload = try p.storage.withUnsafeBytes { data in
            try ModelState.encode(architecture: lie, round: 0, step: 0, samples: 0, table: table, data: data)
        }
        do {
            _ = try WireCodec.decodeModel(payload, expected: nil)
            Issue.record("GetModel: accepted the architecture field '\(lie)'")
        } catch let e as WireError {
            #expect(e.kind == .schemaMismatch)
        }
    }
    for lie in ["3,2", "", "06,4,2", "6, 4,2", "+6,4,2", "6,4,2,", "6,2,4", "6,4"] {
        for decode in [{ try WireCodec.decodeExchangeRequest(request(lie), expectedSchemaHash: p.schemaHash).model },
                       { try WireCodec.decodeExchangeReply(reply(lie), expectedSchemaHash: p.schemaHash).model },
                       { try WireCodec.decodePushSum(request(lie), expectedSchemaHash: p.schemaHash).model }] {
            do {
                _ = try decode()
                Issue.record("accepted a model whose architecture field is '\(lie)' with a 6,4,2 table")
            } catch let e as WireError {
                #expect(e.kind == .schemaMismatch, "'\(lie)': \(e)")
            }
        }
    }
}

/// A lossy push (SPEC §6.5) is judged and merged run by run, without a model-sized buffer:
/// the merge is bit for bit the merge of the whole dequantized model, and the distance is
/// that of the dequantized model (up to float32 partial sums taken over other pieces).
@Test(arguments: [DType.bfloat16, .float16, .int8])
func lossyModelsMergeRunByRunAsTheWholeDequantizedModel(_ dtype: DType) throws {
    let arch = try MLPArchitecture(parsing: "64,70,10")   // a 4480-weight tensor: two runs
    let data = try Dataset(name: "t", features: [Float](repeating: 0.5, count: 64 * 4), labels: [0, 1, 2, 3],
                           featureCount: 64, classCount: 10)
    let own = arch.makeParameters(seed: 1)
    let theirs = arch.makeParameters(seed: 2)
    let t = try Trainer(architecture: arch, parameters: own, data: data, config: SGDConfig(), seed: 1)
    let wire = WireCodec.table(theirs).encoded(as: dtype)
    let payload = try WireCodec.encodeExchangeRequest(sender: "a:1", weight: 3, architecture: arch, wire: wire,
                                                      floats: theirs.storage, round: 0, step: 0, samples: 0)
    let model = try WireCodec.decodeExchangeRequest(payload, expectedSchemaHash: own.schemaHash).model
    #expect(model.table.isLossy)
    try WireCodec.checkFinite(model)
    var incoming = [Float](repeating: 0, count: own.storage.count)
    try model.dequantize(into: &incoming)
    let wholeDistance = ExchangeMath.relativeDistance(own: own.storage, incoming: incoming)
    let runDistance = ExchangeMath.relativeDistance(own: own.storage, incoming: model)
    #expect(abs(runDistance - wholeDistance) <= 1e-6 * wholeDistance && wholeDistance > 0.1, "\(runDistance) vs \(wholeDistance)")
    var expected = own.storage
    expected.withUnsafeMutableBufferPointer { e in
        incoming.withUnsafeBufferPointer { Averaging.weightedAverage(into: e, weight: 1, other: $0, weight: 3) }
    }
    WireCodec.averageInPlace(t, ownWeight: 1, incoming: model, incomingWeight: 3)
    #expect(t.parameters.storage.map(\.bitPattern) == expected.map(\.bitPattern))
}
