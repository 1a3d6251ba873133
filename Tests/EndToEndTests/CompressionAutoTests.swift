// `--compression auto` end to end: two real peers choose per peer from their measurements,
// exchange (requests as chosen, replies in kind), and report what they measured in status.
// Also the CLI's refusal of an unknown --compression value (usage error, exit 64).
import Foundation
import GossipNode
import Testing

@Suite(.serialized)
struct CompressionAutoTests {
    @Test func twoAutoPeersExchangeAndReportTheirLinks() throws {
        let c = try Cluster("compression-auto")
        defer { c.shutdown() }
        let boot = try c.bootstrap(arch: "64,256,128,10")
        let a = try c.peer(["--bootstrap", boot.endpoint.description, "--compression", "auto"], shard: "0/2")
        let b = try c.peer(["--bootstrap", boot.endpoint.description, "--compression", "auto"], shard: "1/2")
        // The codec is measured off the sending thread (a tenth of a second of zlib; longer on a
        // loaded machine), so it may come after the first exchanges.
        try c.wait("both peers complete 3 exchanges, measure the link to the other and their codec", timeout: 120, nodes: [a, b]) {
            let sa = try c.status(a), sb = try c.status(b)
            return sa.exchanges.done >= 3 && sb.exchanges.done >= 3
                && sa.compressionAuto?.links[b.endpoint.description] != nil
                && sb.compressionAuto?.links[a.endpoint.description] != nil
                && sa.compressionAuto?.codecMBps != nil && sb.compressionAuto?.codecMBps != nil
        }
        for (n, other) in [(a, b), (b, a)] {
            let auto = try #require(try c.status(n).compressionAuto)
            #expect((auto.codecMBps ?? 0) > 0, "\(n.name) measured its codec")
            #expect((auto.ratio ?? 0) > 1, "\(n.name) measured a ratio above 1 on its weights")
            #expect(auto.compressBelowMBps.map { $0 > 0 && $0 < auto.codecMBps! } == true)
            #expect((auto.links[other.endpoint.description] ?? 0) > 0)
        }
        // A peer without auto reports no compression_auto object.
        let plain = try c.peer(["--bootstrap", boot.endpoint.description], shard: "0/2")
        #expect(try c.status(plain).compressionAuto == nil)
    }

    @Test func unknownCompressionIsAUsageError() throws {
        let (rc, _, err) = try Cluster.run(Cluster.binary("gossipd"), ["peer", "--listen", "127.0.0.1:0", "--bootstrap", "127.0.0.1:1", "--compression", "lz4"])
        #expect(rc == 64)
        #expect(err.contains("--compression must be none, zlib, zlib-shuffle or auto"))
    }
}
