// LAN discovery end to end (SPEC §5.11): three real peers on loopback, no bootstrap and no
// --join, find each other by multicast and exchange; hostile datagrams sent to the group
// (garbage, oversized, another type, an announcement of an endpoint nobody serves) are
// dropped and counted, and none of them adds a member. Skipped, with the reason, where this
// machine cannot deliver multicast on loopback.
import Foundation
import GossipML
import GossipNet
@testable import GossipNode
import GossipWire
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A UDP socket that sends to (and, joined on 127.0.0.1, receives from) a multicast group.
private final class GroupSocket {
    let fd: Int32
    let group: String
    let port: UInt16

    init?(group: String, port: UInt16) {
        self.group = group
        self.port = port
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = inet_addr(group)
        let bound = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var mreq = ip_mreq(imr_multiaddr: in_addr(s_addr: inet_addr(group)), imr_interface: in_addr(s_addr: inet_addr("127.0.0.1")))
        var lo = in_addr(s_addr: inet_addr("127.0.0.1"))
        guard bound == 0,
              setsockopt(fd, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &mreq, socklen_t(MemoryLayout<ip_mreq>.size)) == 0,
              setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_IF, &lo, socklen_t(MemoryLayout<in_addr>.size)) == 0 else {
            close(fd)
            return nil
        }
        setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_LOOP, &one, socklen_t(MemoryLayout<Int32>.size))
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = inet_addr(group)
        let n = bytes.withUnsafeBytes { b in withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            sendto(fd, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } }
        return n == bytes.count
    }

    /// Whether a datagram this socket sends comes back to it (multicast loopback works here).
    func loopsBack() -> Bool {
        let probe = Array("gossip-probe-\(getpid())".utf8)
        guard send(probe) else { return false }
        var buf = [UInt8](repeating: 0, count: 256)
        for _ in 0..<5 {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == probe.count && Array(buf[0..<n]) == probe { return true }
            if n < 0 { return false }
        }
        return false
    }
}

@Suite(.serialized)
struct LANDiscoveryTests {
    @Test func threePeersFindEachOtherByMulticastWithNoBootstrap() throws {
        let group = "239.255.\(UInt8.random(in: 1...254)).\(UInt8.random(in: 1...254))"
        let port = UInt16.random(in: 40000...60000)
        guard let probe = GroupSocket(group: group, port: port), probe.loopsBack() else {
            print("skipped: multicast to \(group):\(port) on loopback is not possible on this machine (no IP_ADD_MEMBERSHIP on 127.0.0.1 or no loopback delivery)")
            return
        }
        let c = try Cluster("lan-discovery")
        defer { c.shutdown() }
        // The first member needs a model of its own: an initial model file in its state dir.
        let seedDir = c.dir + "/seed"
        try FileManager.default.createDirectory(atPath: seedDir, withIntermediateDirectories: true)
        let arch = try MLPArchitecture(parsing: "64,32,10")
        try SafeTensors.write(arch.makeParameters(seed: 1), metadata: ["arch": "64,32,10"], to: seedDir + "/model.safetensors")
        let discover = ["--discover", "multicast:\(group):\(port)"]
        let t0 = ContinuousClock.now
        let a = try c.peer(discover, shard: "0/3", stateDir: seedDir)
        let b = try c.peer(discover, shard: "1/3")
        let d = try c.peer(discover, shard: "2/3")
        let nodes = [a, b, d]
        try c.wait("every peer to list the two others", timeout: 60, nodes: nodes) {
            try nodes.allSatisfy { n in
                let peers = Set(try c.status(n).peers)
                return nodes.filter { $0 !== n }.allSatisfy { peers.contains($0.endpoint.description) }
            }
        }
        let found = ContinuousClock.now - t0
        try c.wait("exchanges between the discovered peers", timeout: 60, nodes: nodes) {
            try c.status(b).exchanges.done > 0 && c.status(d).exchanges.done > 0
        }
        // Hostile datagrams: garbage, oversized, another message type, and an announcement of
        // an endpoint nobody serves (a candidate whose contact fails: never a member).
        let before = try #require(try c.status(a).discovery)
        probe.send(Array("not a frame at all".utf8))
        probe.send([UInt8](repeating: 0x5A, count: 1400))
        var ping = OutboundMessage.empty(type: .ping, kind: .request, requestID: 1).serialized()
        probe.send(ping)
        ping[6] = 14   // type 14 with a Ping's empty payload: not an Announcement
        probe.send(ping)
        let ghost = "127.0.0.1:\(UInt16.random(in: 2...1000))"
        probe.send(try Announcement(endpoint: ghost, identity: nil, servesModel: true, instance: 77, sequence: 1, schemaHash: 0).encodeDatagram())
        try c.wait("the hostile datagrams to be counted", timeout: 30, nodes: nodes) {
            guard let s = try c.status(a).discovery else { return false }
            return s.malformed >= before.malformed + 3 && s.oversized >= before.oversized + 1 && s.contacted > before.contacted
        }
        let after = try #require(try c.status(a).discovery)
        for n in nodes {
            let peers = try c.status(n).peers
            #expect(!peers.contains(ghost), "\(n.name) made the unreachable announced endpoint \(ghost) a member: \(peers)")
            #expect(peers.count == 2, "\(n.name) lists \(peers)")
        }
        print("LAN discovery: 3 peers found each other \(found) after the first started (debug build, loaded machine); peer A counted \(after)")
    }
}
