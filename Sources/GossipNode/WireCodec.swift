// The bridge between the model (GossipML's ParameterSet) and the wire (GossipWire's
// messages): a table built from the parameter specs, weights copied once into an outgoing
// payload, and received weights validated (schema, finiteness) before they are copied once
// into the live model or averaged into it.
import GossipML
import GossipWire

enum WireCodec {
    static let limits = Limits.default

    /// The wire table of a parameter set (same schema hash as `ParameterSet.schemaHash`).
    static func table(_ p: ParameterSet) -> TensorTable {
        TensorTable(tensors: p.specs.map { TensorInfo(name: $0.name, shape: $0.shape) })
    }

    /// Runs a typed-throwing encoder over the weights' raw bytes (no copy).
    private static func withWeights(_ params: ParameterSet,
                                    _ encode: (UnsafeRawBufferPointer) throws(WireError) -> ByteSlice) throws(WireError) -> ByteSlice {
        let r: Result<ByteSlice, WireError> = params.storage.withUnsafeBytes { data in
            Result { () throws(WireError) in try encode(data) }
        }
        return try r.get()
    }

    /// Runs a typed-throwing encoder over float32 values (no copy): the lossy encodings' input.
    static func withFloats(_ floats: [Float],
                           _ encode: (UnsafeBufferPointer<Float>) throws(WireError) -> ByteSlice) throws(WireError) -> ByteSlice {
        let r: Result<ByteSlice, WireError> = floats.withUnsafeBufferPointer { f in
            Result { () throws(WireError) in try encode(f) }
        }
        return try r.get()
    }

    /// `list` cut to `limits.maxPeers` entries (a responder puts its own first, SPEC §5.1).
    static func peerList(_ list: PeerList) -> PeerList {
        PeerList(entries: Array(list.entries.prefix(limits.maxPeers)))
    }

    static func encode(_ m: RegisterRequest) throws(WireError) -> ByteSlice { try m.encode(limits: limits) }
    static func encode(_ m: RegisterReply) throws(WireError) -> ByteSlice {
        var m = m
        m.peers = peerList(m.peers)
        return try m.encode(limits: limits)
    }
    static func encode(_ m: GetModelRequest) throws(WireError) -> ByteSlice { try m.encode(limits: limits) }
    static func encode(_ m: StatusReply) throws(WireError) -> ByteSlice { try m.encode(limits: limits) }
    static func encode(_ m: TriggerGossipRequest) throws(WireError) -> ByteSlice { try m.encode(limits: limits) }

    static func decodeRegisterRequest(_ p: ByteSlice) throws(WireError) -> RegisterRequest { try .decode(p, limits: limits) }
    static func decodeRegisterReply(_ p: ByteSlice) throws(WireError) -> RegisterReply { try .decode(p, limits: limits) }
    static func decodeGetModelRequest(_ p: ByteSlice) throws(WireError) -> GetModelRequest { try .decode(p, limits: limits) }
    static func decodeStatusReply(_ p: ByteSlice) throws(WireError) -> StatusReply { try .decode(p, limits: limits) }
    static func decodeTriggerRequest(_ p: ByteSlice) throws(WireError) -> TriggerGossipRequest { try .decode(p, limits: limits) }

    /// The payload of a TriggerGossip reply (SPEC §5.4): `text json` holding `result.json()`.
    /// The peer's TriggerGossip handler answers a successful exchange with exactly this.
    static func encodeTriggerGossipReply(_ result: TriggerGossipResult) throws(WireError) -> ByteSlice {
        try StatusReply(json: try result.json()).encode(limits: limits)
    }

    /// Reads a TriggerGossip reply payload.
    static func decodeTriggerGossipReply(_ p: ByteSlice) throws -> TriggerGossipResult {
        try TriggerGossipResult(json: try decodeStatusReply(p).json)
    }

    /// A GetModel reply carrying `params` (weights copied once into the payload).
    static func encodeModel(architecture: MLPArchitecture, params: ParameterSet, round: UInt64, step: UInt64,
                            samples: UInt64) throws(WireError) -> ByteSlice {
        let t = table(params)
        return try withWeights(params) { (data) throws(WireError) in
            try ModelState.encode(architecture: architecture.description, round: round, step: step, samples: samples,
                                  table: t, data: data, limits: limits)
        }
    }

    static func encodeExchangeRequest(sender: String, weight: Double, architecture: MLPArchitecture, params: ParameterSet,
                                      round: UInt64, step: UInt64, samples: UInt64,
                                      into buffer: PayloadBuffer? = nil) throws(WireError) -> ByteSlice {
        let t = table(params)
        return try withWeights(params) { (data) throws(WireError) in
            try GossipExchangeRequest.encode(sender: sender, weight: weight, architecture: architecture.description,
                                             round: round, step: step, samples: samples, table: t, data: data,
                                             limits: limits, into: buffer)
        }
    }

    static func encodeExchangeReply(weight: Double, peers: PeerList, architecture: MLPArchitecture, params: ParameterSet,
                                    round: UInt64, step: UInt64, samples: UInt64,
                                    into buffer: PayloadBuffer? = nil) throws(WireError) -> ByteSlice {
        let t = table(params)
        let list = peerList(peers)
        return try withWeights(params) { (data) throws(WireError) in
            try GossipExchangeReply.encode(weight: weight, peers: list, architecture: architecture.description,
                                           round: round, step: step, samples: samples, table: t, data: data,
                                           limits: limits, into: buffer)
        }
    }

    /// `dtypes`: the encodings this node accepts (`--accept-dtypes`, SPEC §6.5); another is
    /// UNIMPLEMENTED, refused before any weight is read.
    static func decodeExchangeRequest(_ p: ByteSlice, expectedSchemaHash: UInt64,
                                      dtypes: Set<DType> = DType.all) throws(WireError) -> GossipExchangeRequest {
        let request = try GossipExchangeRequest.decode(p, limits: limits, expectedSchemaHash: expectedSchemaHash, dtypes: dtypes)
        try checkArchitecture(request.model)
        return request
    }

    static func decodeExchangeReply(_ p: ByteSlice, expectedSchemaHash: UInt64) throws(WireError) -> GossipExchangeReply {
        let reply = try GossipExchangeReply.decode(p, limits: limits, expectedSchemaHash: expectedSchemaHash)
        try checkArchitecture(reply.model)
        try checkFinite(reply.model)
        return reply
    }

    /// Throws `.schemaMismatch` (FAILED_PRECONDITION) unless a received model's `architecture`
    /// field names its tensor table exactly (SPEC §6.4): `external` (the table is the schema),
    /// or layer sizes in the canonical form of §5.1 (no spaces, no leading zeros or signs)
    /// whose table (names and shapes, in order) is the received one.
    ///
    /// The schema hash was already compared with the receiver's own, so this only refuses a
    /// field that lies about the table it travels with; it allocates nothing per weight.
    static func checkArchitecture(_ model: ModelState) throws(WireError) {
        if model.architecture == MLPArchitecture.externalName { return }
        guard let arch = try? MLPArchitecture(parsing: model.architecture), arch.description == model.architecture,
              arch.parameterSpecs.count == model.table.tensors.count,
              zip(arch.parameterSpecs, model.table.tensors).allSatisfy({ $0.name == $1.name && $0.shape == $1.shape }) else {
            throw WireError(.schemaMismatch,
                            "model architecture '\(model.architecture)' does not name its tensor table "
                            + "(\(model.table.tensors.count) tensors, schema \(String(model.table.schemaHash, radix: 16))); "
                            + "send the layer sizes as in SPEC §5.1, e.g. 784,256,128,10, or 'external'")
        }
    }

    /// Decodes a model into a new parameter set (one copy), checking it fits its architecture.
    ///
    /// The architecture string is checked against the received tensor table (schema hash and
    /// byte count) before anything is allocated for it, so a lying `architecture` field cannot
    /// make the node allocate more than the message it actually sent.
    static func decodeModel(_ p: ByteSlice, expected: UInt64?) throws -> (MLPArchitecture, ParameterSet, ModelState) {
        let model = try ModelState.decode(p, limits: limits, expectedSchemaHash: expected)
        let (arch, params) = try parameters(of: model)
        return (arch, params, model)
    }

    /// A received model as an architecture and a new parameter set (one copy), checking that
    /// the table fits the architecture and the weights are finite.
    static func parameters(of model: ModelState) throws -> (MLPArchitecture, ParameterSet) {
        try checkArchitecture(model)   // the field in the canonical form of SPEC §5.1, naming this table
        // An external model (SPEC §6.4): its table is the schema.
        let arch = model.architecture == MLPArchitecture.externalName
            ? try MLPArchitecture(external: model.table.tensors.map { ($0.name, $0.shape) })
            : try MLPArchitecture(parsing: model.architecture)
        let specs = arch.parameterSpecs
        let declared = TensorTable(tensors: specs.map { TensorInfo(name: $0.name, shape: $0.shape) })
        guard declared.schemaHash == model.table.schemaHash, declared.tensors == model.table.tensors,
              declared.dataByteCount == model.data.count else {
            throw WireError(.schemaMismatch, "model tensors do not match its declared architecture \(model.architecture)")
        }
        var params = ParameterSet(specs: specs)
        try checkFinite(model)
        try model.copyData(into: &params.storage)
        return (arch, params)
    }

    /// Throws `.malformed` (INVALID_ARGUMENT) when the weights hold a NaN or an infinity. A
    /// model in a lossy encoding (SPEC §6.5) is checked as it will be dequantized: I8 scales,
    /// and every value finite after dequantization.
    static func checkFinite(_ model: ModelState) throws(WireError) {
        if model.table.isLossy {
            let r: Result<Void, WireError> = model.data.withUnsafeBytes { raw in
                Result { () throws(WireError) in try LossyCodec.validate(raw, table: model.table) }
            }
            return try r.get()
        }
        let ok = model.data.withUnsafeBytes { raw in
            raw.withMemoryRebound(to: Float.self) { ParameterSet.allFinite($0) }
        }
        guard ok else { throw WireError(.malformed, "model weights contain NaN or Inf; refused") }
    }

    /// Replaces the trainer's weights with `model`'s (validated, one copy); returns the relative
    /// L2 distance between the old and the new weights. Caller holds the node lock.
    static func installAveraged(_ model: ModelState, into trainer: Trainer) throws -> Double {
        try trainer.withParameters { (p: inout ParameterSet) throws -> Double in
            guard model.data.count == p.storage.count * 4 else {
                throw WireError(.lengthMismatch, "reply model has \(model.data.count) bytes, expected \(p.storage.count * 4)")
            }
            // One vectorised pass for the distance (GossipML's kernel), then one memcpy.
            let distance = model.data.withUnsafeBytes { raw in
                raw.withMemoryRebound(to: Float.self) { incoming in
                    p.storage.withUnsafeBufferPointer { own in Averaging.relativeL2Distance(own, incoming) }
                }
            }
            try model.copyData(into: &p.storage)
            return distance
        }
    }

    /// `own = (ownWeight * own + w * incoming) / (ownWeight + w)` in place. Caller holds the node lock.
    /// A lossy model (SPEC §6.5) is merged dequantized, run by run through a stack buffer; it
    /// must have passed `checkFinite` (then its decoding cannot fail, and the merge is the
    /// same, bit for bit, as a merge of the whole dequantized array: the average is per weight).
    static func averageInPlace(_ trainer: Trainer, ownWeight: Double, incoming: ModelState, incomingWeight: Double) {
        if incoming.table.isLossy {
            trainer.withParameters { p in
                p.storage.withUnsafeMutableBufferPointer { dst in
                    incoming.data.withUnsafeBytes { raw in
                        do {
                            try LossyCodec.forEachRun(raw, table: incoming.table) { at, run in
                                Averaging.weightedAverage(into: UnsafeMutableBufferPointer(rebasing: dst[at..<(at + run.count)]),
                                                          weight: ownWeight, other: run, weight: incomingWeight)
                            }
                        } catch {
                            preconditionFailure("averageInPlace: a lossy model merged without checkFinite: \(error)")
                        }
                    }
                }
            }
            return
        }
        trainer.withParameters { p in
            incoming.data.withUnsafeBytes { raw in
                raw.withMemoryRebound(to: Float.self) { f in
                    p.storage.withUnsafeMutableBufferPointer { dst in
                        Averaging.weightedAverage(into: dst, weight: ownWeight, other: f, weight: incomingWeight)
                    }
                }
            }
        }
    }
}
