// The one place where the node converts between its Membership's peer entries and the wire's
// peer list (SPEC §5: endpoint + identity).
import GossipWire

enum WirePeers {
    /// The entries of a received peer list.
    static func entries(_ list: PeerList) -> [PeerEntry] { list.entries }

    /// The wire peer list of `entries`.
    static func list(_ entries: [PeerEntry]) -> PeerList { PeerList(entries: entries) }
}
