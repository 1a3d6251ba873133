// LAN discovery's decisions without sockets (SPEC §5.11): what the announcement filter admits
// and drops (and counts), and the --discover syntax.
import GossipWire
import Testing
@testable import GossipNode

private func datagram(_ endpoint: String, instance: UInt64 = 42, sequence: UInt32 = 1) throws -> [UInt8] {
    try Announcement(endpoint: endpoint, identity: nil, servesModel: true, instance: instance, sequence: sequence, schemaHash: 0).encodeDatagram()
}

/// A stand-in seal for the filter's logic (the real one is DatagramSeal): a 4-byte key tag in
/// front; "opens" only with the same tag.
private func tagSealing(_ tag: [UInt8]) -> DatagramSealing {
    DatagramSealing(seal: { tag + $0 }, open: { d in d.count >= 4 && Array(d.prefix(4)) == tag ? Array(d.dropFirst(4)) : nil })
}

@Suite struct DiscoveryTests {
    let me = "127.0.0.1:7000"

    @Test func aValidAnnouncementIsACandidate() throws {
        var f = AnnounceFilter(instance: 1, sealing: nil)
        let d = try datagram("127.0.0.1:7001")
        #expect(f.admit(d, fullLength: d.count, source: "127.0.0.1", selfEndpoint: me, now: .zero)
                == .candidate(endpoint: "127.0.0.1:7001", try Announcement.decode(datagram: d)))
        #expect(f.counters.accepted == 1 && f.counters.received == 1)
    }

    @Test func anUnspecifiedHostIsTheSourceAddress() throws {
        var f = AnnounceFilter(instance: 1, sealing: nil)
        let d = try datagram("0.0.0.0:7001")
        guard case .candidate(let ep, _) = f.admit(d, fullLength: d.count, source: "10.0.0.5", selfEndpoint: me, now: .zero) else {
            Issue.record("not admitted"); return
        }
        #expect(ep == "10.0.0.5:7001")
    }

    @Test func hostileDatagramsAreDroppedAndCounted() throws {
        var f = AnnounceFilter(instance: 1, sealing: nil, ratePerSecond: 1000, burst: 1000)
        var t = Duration.zero
        func admit(_ d: [UInt8], full: Int? = nil) -> AnnounceFilter.Verdict {
            t += .milliseconds(1)
            return f.admit(d, fullLength: full ?? d.count, source: "127.0.0.1", selfEndpoint: me, now: t)
        }
        // Garbage, a truncated frame, another message type.
        _ = admit([1, 2, 3])
        _ = admit([UInt8](repeating: 0xAB, count: 100))
        var otherType = try datagram("127.0.0.1:7001"); otherType[6] = 1
        _ = admit(otherType)
        #expect(f.counters.malformed == 3)
        // Oversized: longer than 512 bytes, or truncated by the receive buffer.
        _ = admit([UInt8](repeating: 0, count: 600))
        _ = admit([UInt8](repeating: 0, count: 100), full: 5000)
        #expect(f.counters.oversized == 2)
        // Its own announcements (by instance, or by endpoint).
        _ = admit(try datagram("127.0.0.1:7009", instance: 1))
        _ = admit(try datagram(me, instance: 99))
        #expect(f.counters.own == 2)
        // A replay, and an older sequence of the same instance; a restart (new instance) is fresh.
        let d5 = try datagram("127.0.0.1:7002", instance: 7, sequence: 5)
        if case .dropped = admit(d5) { Issue.record("the first announcement was dropped") }
        _ = admit(d5)
        _ = admit(try datagram("127.0.0.1:7002", instance: 7, sequence: 4))
        #expect(f.counters.replayed == 2)
        if case .dropped = admit(try datagram("127.0.0.1:7002", instance: 8, sequence: 1)) { Issue.record("a restart was dropped") }
        // An endpoint nobody can dial.
        _ = admit(try datagram("no-port"))
        #expect(f.counters.malformed == 4)
        #expect(f.counters.accepted == 2)
        #expect(f.counters.received == 12)
    }

    @Test func theTokenBucketDropsAFloodBeforeDecoding() throws {
        var f = AnnounceFilter(instance: 1, sealing: nil, ratePerSecond: 10, burst: 5)
        let d = try datagram("127.0.0.1:7001")
        for i in 0..<50 { _ = f.admit(d, fullLength: d.count, source: "127.0.0.1", selfEndpoint: me, now: .milliseconds(i)) }
        // 5 (burst) + about 0.5 refilled in 50 ms.
        #expect(f.counters.rateLimited >= 44)
        #expect(f.counters.accepted == 1 && f.counters.replayed == f.counters.received - f.counters.rateLimited - 1)
        // A second later the bucket has refilled.
        let fresh = try datagram("127.0.0.1:7003")
        if case .dropped = f.admit(fresh, fullLength: fresh.count, source: "127.0.0.1", selfEndpoint: me, now: .seconds(2)) {
            Issue.record("dropped after the bucket refilled")
        }
    }

    @Test func withANetworkKeyOnlySealedDatagramsAreAccepted() throws {
        let right = tagSealing([1, 2, 3, 4]), wrong = tagSealing([9, 9, 9, 9])
        var f = AnnounceFilter(instance: 1, sealing: right)
        let plain = try datagram("127.0.0.1:7001")
        let wrongKey = wrong.seal(plain)!, rightKey = right.seal(plain)!
        _ = f.admit(plain, fullLength: plain.count, source: "127.0.0.1", selfEndpoint: me, now: .zero)
        _ = f.admit(wrongKey, fullLength: wrongKey.count, source: "127.0.0.1", selfEndpoint: me, now: .zero)
        #expect(f.counters.unauthenticated == 2)
        if case .dropped(let why) = f.admit(rightKey, fullLength: rightKey.count, source: "127.0.0.1", selfEndpoint: me, now: .zero) {
            Issue.record("a correctly sealed announcement was dropped: \(why)")
        }
        // A node without a key does not take sealed datagrams for frames.
        var open = AnnounceFilter(instance: 1, sealing: nil)
        _ = open.admit(rightKey, fullLength: rightKey.count, source: "127.0.0.1", selfEndpoint: me, now: .zero)
        #expect(open.counters.malformed == 1)
    }

    @Test func discoverSyntax() throws {
        let d = try DiscoveryConfig(parsing: "multicast")
        #expect(d.group == DiscoveryConfig.defaultGroup && d.port == DiscoveryConfig.defaultPort)
        let c = try DiscoveryConfig(parsing: "multicast:239.255.0.7:47000")
        #expect(c.group == "239.255.0.7" && c.port == 47000)
        for bad in ["mdns", "multicast:239.255.0.7", "multicast:10.0.0.1:5000", "multicast:239.255.0.7:0", "multicast:239.255.0.7:x", "multicast:1.2.3:5"] {
            #expect(throws: NodeError.self, "\(bad)") { _ = try DiscoveryConfig(parsing: bad) }
        }
    }
}
