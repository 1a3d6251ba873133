// The PushSum message (SPEC §5.5): one half of a peer's push-sum mass and its de-biased model,
// sent one way to a random peer. Its payload has the layout of a GossipExchange request
// (`str sender, f64 mass, ModelState`); the reply is an empty payload ("the mass was added").

/// PushSum request: the sender, the mass it gives away, and its de-biased model.
public struct PushSumRequest: Sendable, Equatable {
    public var sender: String
    /// The push-sum mass that travels with the model (finite, ≥ 0 on the wire; a receiver
    /// refuses one outside (0, 1e12]).
    public var mass: Double
    public var model: ModelState
    public init(sender: String, mass: Double, model: ModelState) {
        self.sender = sender; self.mass = mass; self.model = model
    }

    /// Encodes the payload from raw weights, copied once (same layout as GossipExchange's request).
    /// - Parameter data: `table.dataByteCount` bytes of little-endian float32, in table order.
    public static func encode(sender: String, mass: Double, architecture: String, round: UInt64, step: UInt64,
                              samples: UInt64, table: TensorTable, data: UnsafeRawBufferPointer,
                              limits: Limits = .default, into buffer: PayloadBuffer? = nil) throws(WireError) -> ByteSlice {
        try GossipExchangeRequest.encode(sender: sender, weight: mass, architecture: architecture, round: round,
                                         step: step, samples: samples, table: table, data: data,
                                         limits: limits, into: buffer)
    }

    /// Encodes this request.
    public func encode(limits: Limits = .default, into buffer: PayloadBuffer? = nil) throws(WireError) -> ByteSlice {
        try GossipExchangeRequest(sender: sender, weight: mass, model: model).encode(limits: limits, into: buffer)
    }

    /// Decodes the payload; the model's `data` is a view into `payload`.
    /// - Parameter expectedSchemaHash: refuse (`.schemaMismatch`) another schema before reading weights.
    /// - Parameter dtypes: the tensor dtypes accepted (default: all, SPEC §6.5); another is UNIMPLEMENTED.
    public static func decode(_ payload: ByteSlice, limits: Limits = .default,
                              expectedSchemaHash: UInt64? = nil, dtypes: Set<DType> = DType.all) throws(WireError) -> PushSumRequest {
        let r = try GossipExchangeRequest.decode(payload, limits: limits, expectedSchemaHash: expectedSchemaHash, dtypes: dtypes)
        return PushSumRequest(sender: r.sender, mass: r.weight, model: r.model)
    }
}
