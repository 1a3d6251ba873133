// The Reserve message (SPEC §5.6) between the node and the wire.
import GossipWire

extension WireCodec {
    static func encode(_ m: ReserveRequest) throws(WireError) -> ByteSlice { try m.encode(limits: limits) }

    /// Decodes a Reserve request and refuses another schema than `expectedSchemaHash`
    /// (FAILED_PRECONDITION, as for a GossipExchange). `lease_ms` 0 is a release (SPEC §5.6).
    static func decodeReserveRequest(_ p: ByteSlice, expectedSchemaHash: UInt64) throws -> ReserveRequest {
        let r = try ReserveRequest.decode(p, limits: limits)
        guard r.schemaHash == expectedSchemaHash else {
            throw WireError(.schemaMismatch, "Reserve for schema \(StatusReport.hex(r.schemaHash)) but this peer holds \(StatusReport.hex(expectedSchemaHash))")
        }
        return r
    }
}
