// The Reserve message (type 9, SPEC §5.6): a caller of a GossipExchange asks the responder to
// keep its exchange slot for it, in a few dozen bytes, before the weights travel. The reply
// is empty (reserved); a refusal is an error reply (ABORTED = busy).

/// Reserve request: `str sender`, `u64 schema_hash`, `u32 lease_ms`.
public struct ReserveRequest: Sendable, Equatable {
    /// The caller's advertised endpoint: the sender its GossipExchange will name.
    public var sender: String
    /// The schema hash of the model the caller will send (never 0 from a peer with a model).
    public var schemaHash: UInt64
    /// How long the caller asks the slot to be kept, in milliseconds; the responder caps it.
    public var leaseMs: UInt32

    public init(sender: String, schemaHash: UInt64, leaseMs: UInt32) {
        self.sender = sender; self.schemaHash = schemaHash; self.leaseMs = leaseMs
    }

    /// Encodes the payload: `str sender, u64 schema_hash, u32 lease_ms`.
    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        try checkName(sender, "sender", limits: limits)
        var w = ByteWriter(capacity: ByteWriter.size(ofString: sender) + 12)
        w.writeString(sender)
        w.write(schemaHash)
        w.write(leaseMs)
        return ByteSlice(w.storage)
    }

    public static func decode(_ payload: ByteSlice, limits: Limits = .default) throws(WireError) -> ReserveRequest {
        try payload.read { (r) throws(WireError) in
            ReserveRequest(sender: try r.readString("sender", maxBytes: limits.maxNameBytes),
                           schemaHash: try r.readUInt64("schema hash"),
                           leaseMs: try r.readUInt32("lease_ms"))
        }
    }
}
