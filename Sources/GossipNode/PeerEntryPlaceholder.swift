// PLACEHOLDER until the wire2 branch (contract B) is merged: GossipWire's `PeerEntry` and
// `PeerList.entries` do not exist on this branch yet. The node keeps identities in its own
// Membership and crosses the wire only through the function pair `WirePeers` below. When
// wire2 is merged: delete `PeerEntry` here (GossipWire's has the same fields and init) and
// switch the two functions to `list.entries` and `PeerList(entries: entries)`. Where wire2
// edited the same peer-list lines of Peer.swift, Bootstrap.swift and PeerExchange.swift, keep
// this branch's version (it goes through `WirePeers`); wire2's WireCodec.swift is taken as is.
// Checked by a trial merge of channel (8939d8a) + wire2 (25e0a77) + this switch: GossipNodeTests,
// SecurityEndToEndTests and NetworkTests pass.
import GossipWire

/// One peer-list entry: an endpoint and the identity it proved (nil: not known).
public struct PeerEntry: Sendable, Equatable, Hashable {
    public var endpoint: String
    /// The 32-byte Curve25519 public key; nil when not known (a plaintext network, or an
    /// endpoint not dialed yet).
    public var identity: [UInt8]?
    public init(endpoint: String, identity: [UInt8]? = nil) {
        self.endpoint = endpoint
        self.identity = identity
    }
}

/// The one place where the node converts between its peer entries and the wire's peer list.
enum WirePeers {
    /// The entries of a received peer list. (wire2: `list.entries`.)
    static func entries(_ list: PeerList) -> [PeerEntry] {
        list.peers.map { PeerEntry(endpoint: $0) }
    }

    /// The wire peer list of `entries`. (wire2: `PeerList(entries: entries)`.)
    static func list(_ entries: [PeerEntry]) -> PeerList {
        PeerList(peers: entries.map(\.endpoint))
    }
}
