// WireCodec's PushSum helpers (SPEC §5.5): encode a push from a parameter set, decode one with
// the node's limits and schema, and the empty reply.
import GossipML
import GossipWire

extension WireCodec {
    /// The PushSum request payload: `sender`, the `mass` that travels, and `params` (one copy).
    static func encodePushSum(sender: String, mass: Double, architecture: MLPArchitecture, params: ParameterSet,
                              round: UInt64, step: UInt64, samples: UInt64,
                              into buffer: PayloadBuffer? = nil) throws(WireError) -> ByteSlice {
        // The layout is GossipExchange's request with `mass` in the weight's place.
        try encodeExchangeRequest(sender: sender, weight: mass, architecture: architecture, params: params,
                                  round: round, step: step, samples: samples, into: buffer)
    }

    /// Decodes a PushSum request, refusing another schema before any weight is read.
    /// `dtypes`: the encodings this node accepts (`--accept-dtypes`, SPEC §6.5); another is UNIMPLEMENTED.
    static func decodePushSum(_ p: ByteSlice, expectedSchemaHash: UInt64, dtypes: Set<DType> = DType.all) throws(WireError) -> PushSumRequest {
        let request = try PushSumRequest.decode(p, limits: limits, expectedSchemaHash: expectedSchemaHash, dtypes: dtypes)
        try checkArchitecture(request.model)
        return request
    }

    /// The PushSum reply: an empty payload ("the mass was added").
    static var pushSumReply: ByteSlice { ByteSlice(ByteStorage(count: 0)) }
}
