// Sealing of discovery datagrams with the network key (SPEC §13.13, "Sealed datagrams",
// DatagramSeal.swift). Until that construction is in this build, a node with a network key
// refuses --discover rather than announce in plaintext where TCP is encrypted.
import GossipSecure

extension DatagramSealing {
    /// The sealing of a network with `key`.
    /// - Throws: `NodeError` when this build cannot seal datagrams.
    public static func networkKey(_ key: NetworkKey) throws -> DatagramSealing {
        throw NodeError("--discover with --network-key needs sealed datagrams (SPEC §13.13), which this build lacks; use --join or --bootstrap on a keyed network")
    }
}
