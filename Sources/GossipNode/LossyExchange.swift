// The synchronous exchange and push-sum with a lossy wire encoding (SPEC §6.5: F16, BF16,
// I8). The rule that keeps both sides of an exchange bit-identical: each side contributes
// the DEQUANTIZED value of its own quantized contribution, the request carries the caller's
// and the reply the responder's (not the average), and both compute the same float32 average
// of the two dequantized contributions with the weights the responder used (SPEC §5.3's rule,
// which is symmetric: a+b and the two rounded products are the same on both sides). Error
// feedback: a node's contribution is its model plus the residual that quantization dropped
// from its previous contribution; the new residual is kept only when the exchange is
// installed. An F32 exchange takes none of these paths (SPEC §5.3 unchanged).
import GossipML
import GossipNet
import GossipWire

/// Buffers of a lossy exchange (slot holder only; sized to the model on first use).
struct LossyBuffers {
    /// What quantization dropped from this node's last installed contribution (error feedback).
    var residual: [Float] = []
    /// This node's contribution: its weights plus `residual`.
    var contribution: [Float] = []
    /// The dequantized value of the contribution as sent (what the other side sees).
    var sent: [Float] = []
    /// The other side's dequantized contribution.
    var incoming: [Float] = []

    /// Sizes every buffer to `count` floats (a new model size clears the residual).
    mutating func prepare(count: Int) {
        if residual.count != count { residual = [Float](repeating: 0, count: count) }
        if contribution.count != count { contribution = [Float](repeating: 0, count: count) }
        if sent.count != count { sent = [Float](repeating: 0, count: count) }
        if incoming.count != count { incoming = [Float](repeating: 0, count: count) }
    }

    /// `contribution = own + residual` (error feedback) or `own` (without).
    mutating func contribute(_ own: [Float], errorFeedback: Bool) {
        prepare(count: own.count)
        if errorFeedback {
            contribution.withUnsafeMutableBufferPointer { c in
                own.withUnsafeBufferPointer { o in
                    residual.withUnsafeBufferPointer { r in
                        for i in 0..<c.count { c[i] = o[i] + r[i] }
                    }
                }
            }
        } else {
            contribution.withUnsafeMutableBufferPointer { c in own.withUnsafeBufferPointer { _ = c.update(fromContentsOf: $0) } }
        }
    }

    /// Keeps `contribution − sent` as the residual (call once the exchange is installed).
    mutating func commitResidual(errorFeedback: Bool) {
        guard errorFeedback else { return }
        residual.withUnsafeMutableBufferPointer { r in
            contribution.withUnsafeBufferPointer { c in
                sent.withUnsafeBufferPointer { s in
                    for i in 0..<r.count { r[i] = c[i] - s[i] }
                }
            }
        }
    }

    /// Forgets the residual (a model installed from elsewhere, e.g. a checkpoint).
    mutating func clearResidual() {
        residual.withUnsafeMutableBufferPointer { r in for i in 0..<r.count { r[i] = 0 } }
    }
}

extension ExchangeMath {
    /// `out = average(own, incoming)` by the averaging rule (SPEC §5.3) on float32 arrays.
    /// Precondition: all three have the same count.
    static func average(own: [Float], ownWeight: Double, incoming: [Float], incomingWeight: Double,
                        into out: inout [Float]) {
        precondition(out.count == own.count && incoming.count == own.count, "ExchangeMath.average: sizes differ")
        out.withUnsafeMutableBufferPointer { dst in
            own.withUnsafeBufferPointer { src in _ = dst.update(fromContentsOf: src) }
            incoming.withUnsafeBufferPointer { f in
                Averaging.weightedAverage(into: dst, weight: ownWeight, other: f, weight: incomingWeight)
            }
        }
    }

    /// `‖incoming − own‖₂ / ‖own‖₂` (SPEC §5.3) on float32 arrays of the same count.
    static func relativeDistance(own: [Float], incoming: [Float]) -> Double {
        precondition(incoming.count == own.count, "ExchangeMath.relativeDistance: sizes differ")
        return own.withUnsafeBufferPointer { o in incoming.withUnsafeBufferPointer { Averaging.relativeL2Distance(o, $0) } }
    }

    /// The weight the responder used for the caller's contribution, from the weight the caller
    /// sent (`sent`) and the one the reply reports (`replyWeight` = the responder's own, after
    /// the cap): `min(sent, cap × replyWeight)`. Exact (cap is a power of two) and equal to the
    /// responder's `b'` in every case of the cap (SPEC §6.5).
    static func callerWeightUsed(sent: Double, replyWeight: Double, cap: Double) -> Double {
        min(sent, cap * replyWeight)
    }
}

extension WireCodec {
    /// A GossipExchange request whose model is `floats` encoded as `wire`.
    static func encodeExchangeRequest(sender: String, weight: Double, architecture: MLPArchitecture, wire: TensorTable,
                                      floats: [Float], round: UInt64, step: UInt64, samples: UInt64,
                                      into buffer: PayloadBuffer? = nil) throws(WireError) -> ByteSlice {
        try withFloats(floats) { f throws(WireError) in
            try GossipExchangeRequest.encode(sender: sender, weight: weight, architecture: architecture.description,
                                             round: round, step: step, samples: samples, wire: wire, floats: f,
                                             limits: limits, into: buffer)
        }
    }

    /// A GossipExchange reply whose model is `floats` encoded as `wire`.
    static func encodeExchangeReply(weight: Double, peers: PeerList, architecture: MLPArchitecture, wire: TensorTable,
                                    floats: [Float], round: UInt64, step: UInt64, samples: UInt64,
                                    into buffer: PayloadBuffer? = nil) throws(WireError) -> ByteSlice {
        let list = peerList(peers)
        return try withFloats(floats) { f throws(WireError) in
            try GossipExchangeReply.encode(weight: weight, peers: list, architecture: architecture.description,
                                           round: round, step: step, samples: samples, wire: wire, floats: f,
                                           limits: limits, into: buffer)
        }
    }

}

extension PeerNode {
    /// Remembers that `peer` refused this node's lossy encoding: exchanges and pushes to it go
    /// in F32 from now on (SPEC §6.5).
    func rememberF32(_ peer: String, after why: String) {
        let added = f32Peers.withLock { s -> Bool in
            guard s.count < Self.maxF32Peers else { return false }
            return s.insert(peer).inserted
        }
        if added {
            logger.notice("peer refused this node's wire encoding; exchanging with it in f32 from now on",
                          metadata: ["peer": "\(peer)", "wire_dtype": "\(config.wireDType.optionName)", "why": "\(why)"])
        }
    }

    /// The caller's lossy request and its tensor table (slot held): contribution = weights (+ residual), encoded
    /// in `config.wireDType`; `model.lossy.sent` receives its dequantized value.
    func lossyExchangeRequest(sender: String, weight: Double, architecture: MLPArchitecture, params: ParameterSet,
                              counters cnt: Counters) throws -> (ByteSlice, TensorTable) {
        model.lossy.contribute(params.storage, errorFeedback: config.errorFeedback)
        let wire = WireCodec.table(params).encoded(as: config.wireDType)
        let request = try WireCodec.encodeExchangeRequest(sender: sender, weight: weight, architecture: architecture, wire: wire,
                                                          floats: model.lossy.contribution, round: cnt.round, step: cnt.step,
                                                          samples: cnt.samples, into: requestBuffer)
        // What the responder will see, bit for bit: decode what was encoded.
        try GossipExchangeRequest.decode(request, limits: WireCodec.limits).model.dequantize(into: &model.lossy.sent)
        return (request, wire)
    }

    /// The caller's exact finish (SPEC §6.5; slot held): an F32 request whose model is this
    /// node's weights plus its residual (what quantization dropped from its earlier
    /// contributions), so the network gets it back; the reply is the usual F32 average. The
    /// caller clears the residual once it installs that average.
    func exactFinishRequest(sender: String, weight: Double, architecture: MLPArchitecture, params: ParameterSet,
                            counters cnt: Counters) throws -> ByteSlice {
        model.lossy.contribute(params.storage, errorFeedback: config.errorFeedback)
        return try WireCodec.encodeExchangeRequest(sender: sender, weight: weight, architecture: architecture,
                                                   wire: WireCodec.table(params), floats: model.lossy.contribution,
                                                   round: cnt.round, step: cnt.step, samples: cnt.samples, into: requestBuffer)
    }

    /// The caller's average from a lossy reply (slot held): the responder's dequantized
    /// contribution averaged with this node's `model.lossy.sent`, into `model.scratch`, with
    /// the weights the responder used. Returns the relative L2 distance of the result from the
    /// current weights (judged against the reply bound). Changes no model state.
    func lossyReplyAverage(_ reply: GossipExchangeReply, sentWeight: Double, requestTable: TensorTable, own: [Float]) throws -> Double {
        guard reply.model.table.tensors == requestTable.tensors else {
            throw WireError(.malformed, "the reply's tensors are not encoded as the request's (\(Set(reply.model.table.tensors.map(\.dtype.hashName)).sorted()) vs \(Set(requestTable.tensors.map(\.dtype.hashName)).sorted())); a responder answers in the request's encoding (SPEC §6.5)")
        }
        try reply.model.dequantize(into: &model.lossy.incoming)
        let b = ExchangeMath.callerWeightUsed(sent: sentWeight, replyWeight: reply.weight, cap: config.exchangeBounds.weightCap)
        if model.scratch.count != own.count { model.scratch = [Float](repeating: 0, count: own.count) }
        ExchangeMath.average(own: model.lossy.sent, ownWeight: b, incoming: model.lossy.incoming,
                             incomingWeight: reply.weight, into: &model.scratch)
        return ExchangeMath.relativeDistance(own: own, incoming: model.scratch)
    }
}

extension PeerNode {
    /// The responder's lossy reply (slot held; `model.lossy.incoming` holds the request's
    /// dequantized contribution): encodes this node's contribution (weights + residual) as
    /// the request's table does, dequantizes what it encoded into `model.lossy.sent`,
    /// averages the two into `model.scratch` and keeps the new residual. The caller installs
    /// `model.scratch` right after (`handleExchange`). Returns the reply and `distance`.
    func lossyAveragedReply(_ request: GossipExchangeRequest, trainer t: Trainer, architecture arch: MLPArchitecture,
                            ownWeight: Double, incomingWeight: Double, distance: Double) throws -> (ByteSlice, Double) {
        let own = t.parameters
        let me = endpoint.description
        let (cnt, peers) = core.withLock { c in
            (counters(c), c.state.membership.entries(c.state.peerSample(excluding: request.sender, me: me, limit: WireCodec.limits.maxPeers),
                                                     selfIdentity: config.security.advertisedIdentity))
        }
        // A test attacker distorts its contribution.
        let mine = config.misbehaviour.map { m in attackRNG.withLock { m.distort(own, rng: &$0) } } ?? own
        model.lossy.contribute(mine.storage, errorFeedback: config.errorFeedback)
        let reply = try WireCodec.encodeExchangeReply(weight: ownWeight, peers: WirePeers.list(peers), architecture: arch,
                                                      wire: request.model.table, floats: model.lossy.contribution,
                                                      round: cnt.round, step: cnt.step, samples: cnt.samples, into: replyBuffer)
        // What the caller will see, bit for bit: decode what was encoded.
        try GossipExchangeReply.decode(reply, limits: WireCodec.limits).model.dequantize(into: &model.lossy.sent)
        ExchangeMath.average(own: model.lossy.sent, ownWeight: ownWeight, incoming: model.lossy.incoming,
                             incomingWeight: incomingWeight, into: &model.scratch)
        model.lossy.commitResidual(errorFeedback: config.errorFeedback)
        return (reply, distance)
    }
}
