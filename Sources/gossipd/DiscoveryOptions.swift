// `gossipd peer --discover multicast[:GROUP:PORT]` (LAN discovery, SPEC §5.11); the logic is
// GossipNode's (Discovery.swift, PeerDiscovery.swift).
import ArgumentParser
import GossipNode

struct DiscoveryOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Find the network on the LAN: announce this peer on an IPv4 multicast group and, without --bootstrap or --join, join through the first member heard. multicast uses group \(DiscoveryConfig.defaultGroup) port \(DiscoveryConfig.defaultPort); multicast:GROUP:PORT picks another. TTL 1 (the local link). With --network-key, announcements are sealed with it and unsealed ones are ignored.",
                                valueName: "multicast[:GROUP:PORT]"))
    var discover: String?

    func validate() throws {
        if let discover { _ = try parse(discover) }
    }

    private func parse(_ text: String) throws -> DiscoveryConfig {
        do { return try DiscoveryConfig(parsing: text) } catch { throw ValidationError("\(error)") }
    }

    /// The discovery config for a node with `security`; nil without --discover.
    func resolve(security: NodeSecurity) throws -> DiscoveryConfig? {
        guard let discover else { return nil }
        var c = try parse(discover)
        if let key = security.networkKey {
            c.sealing = try DatagramSealing.networkKey(key)
        }
        return c
    }
}
