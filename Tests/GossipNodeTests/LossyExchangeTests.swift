// The synchronous exchange with a lossy encoding (SPEC §6.5) ends bit-identical on both
// sides: the caller's and the responder's computations, as the node runs them (the same
// encoders, decoders, weight rule and averaging kernel), with and without the weight cap
// and over several rounds of error feedback.
import Foundation
import GossipML
@testable import GossipNode
import GossipWire
import Testing

@Suite struct LossyExchangeTests {
    @Test(arguments: [DType.bfloat16, .float16, .int8])
    func bothSidesEndBitIdentical(_ dtype: DType) throws {
        let arch = try MLPArchitecture(parsing: "20,30,10")
        let cap = ExchangeBounds().weightCap
        // (caller weight b, responder weight a): plain, caller capped, responder capped.
        for (b, a) in [(600.0, 1400.0), (10_000.0, 100.0), (100.0, 10_000.0)] {
            var x = arch.makeParameters(seed: 1).storage
            var y = arch.makeParameters(seed: 2).storage
            var caller = LossyBuffers(), responder = LossyBuffers()
            let wire = WireCodec.table(arch.makeParameters(seed: 1)).encoded(as: dtype)
            for round in 0..<4 {
                // Local training between exchanges, different on each side.
                for i in x.indices { x[i] += Float(i % 7) * 1e-4; y[i] -= Float(i % 5) * 3e-4 }
                // Caller: contribution, request, what it sent.
                caller.contribute(x, errorFeedback: true)
                let req = try WireCodec.encodeExchangeRequest(sender: "a:1", weight: b, architecture: arch, wire: wire,
                                                              floats: caller.contribution, round: 0, step: 0, samples: 0)
                try GossipExchangeRequest.decode(req).model.dequantize(into: &caller.sent)
                // Responder: dequantize, cap, its contribution as the reply, the average.
                let got = try WireCodec.decodeExchangeRequest(req, expectedSchemaHash: wire.schemaHash)
                responder.prepare(count: y.count)
                try got.model.dequantize(into: &responder.incoming)
                let used = ExchangeMath.cappedWeights(own: a, incoming: got.weight, cap: cap)
                responder.contribute(y, errorFeedback: true)
                let rep = try WireCodec.encodeExchangeReply(weight: used.own, peers: PeerList(entries: []), architecture: arch,
                                                            wire: got.model.table, floats: responder.contribution,
                                                            round: 0, step: 0, samples: 0)
                try GossipExchangeReply.decode(rep).model.dequantize(into: &responder.sent)
                var yNew = [Float](repeating: 0, count: y.count)
                ExchangeMath.average(own: responder.sent, ownWeight: used.own, incoming: responder.incoming,
                                     incomingWeight: used.incoming, into: &yNew)
                responder.commitResidual(errorFeedback: true)
                // Caller: the reply, the weight the responder used, the same average.
                let r = try WireCodec.decodeExchangeReply(rep, expectedSchemaHash: wire.schemaHash)
                #expect(ExchangeMath.replyWeightWithinCap(r.weight, sent: b, cap: cap))
                try r.model.dequantize(into: &caller.incoming)
                let bUsed = ExchangeMath.callerWeightUsed(sent: b, replyWeight: r.weight, cap: cap)
                #expect(bUsed == used.incoming)
                var xNew = [Float](repeating: 0, count: x.count)
                ExchangeMath.average(own: caller.sent, ownWeight: bUsed, incoming: caller.incoming,
                                     incomingWeight: r.weight, into: &xNew)
                caller.commitResidual(errorFeedback: true)
                #expect(xNew.map(\.bitPattern) == yNew.map(\.bitPattern), "round \(round), weights \(b), \(a)")
                x = xNew
                y = yNew
                // The residual is what quantization dropped: small, and not all zero.
                let maxResidual = caller.residual.map(abs).max()!
                #expect(maxResidual > 0 && maxResidual < 0.05)
            }
        }
    }

    @Test func errorFeedbackCarriesSmallUpdatesThatRoundingWouldDrop() throws {
        // One weight at 1.0 and an update of 1e-3 per round: bf16's step at 1.0 is 2^-7, so
        // without error feedback the sent value stays 1.0; with it, it moves on average.
        var withEF = LossyBuffers(), without = LossyBuffers()
        let arch = try MLPArchitecture(parsing: "1,1")
        let wire = WireCodec.table(arch.makeParameters(seed: 1)).encoded(as: .bfloat16)
        var sentEF: Float = 0, sentPlain: Float = 0
        for k in 1...100 {
            let x: [Float] = [1 + Float(k) * 1e-3 * 0.01, 0]   // tiny drift
            for (ef, bufIndex) in [(true, 0), (false, 1)] {
                var buf = bufIndex == 0 ? withEF : without
                buf.contribute(x, errorFeedback: ef)
                let req = try WireCodec.encodeExchangeRequest(sender: "a:1", weight: 1, architecture: arch, wire: wire,
                                                              floats: buf.contribution, round: 0, step: 0, samples: 0)
                try GossipExchangeRequest.decode(req).model.dequantize(into: &buf.sent)
                buf.commitResidual(errorFeedback: ef)
                if ef { sentEF += buf.sent[0] - 1; withEF = buf } else { sentPlain += buf.sent[0] - 1; without = buf }
            }
        }
        // The true total drift is Σ k·1e-5 = 0.0505; error feedback sends it (within a step).
        #expect(sentPlain == 0)
        #expect(abs(sentEF - 0.0505) < 0x1p-7)
    }
}
