// framedump proxy between real nodes: every frame of the session shows, in both directions,
// and the session completes exactly as without the proxy.
import Foundation
import GossipNet
@testable import GossipNode
import Testing

@Suite(.serialized)
struct ProxyTests {
    @Test func proxyShowsEveryFrameAndChangesNothing() throws {
        let c = try Cluster("proxy")
        defer { c.shutdown() }
        let boot = try c.bootstrap()
        // The proxy, started like a node; its stdout is the frame log.
        let out = "\(c.dir)/proxy.out", ready = "\(c.dir)/proxy.ready"
        FileManager.default.createFile(atPath: out, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Cluster.binary("framedump"))
        p.arguments = ["proxy", "--upstream", boot.endpoint.description, "--ready-file", ready, "--record", "\(c.dir)/rec"]
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        var proxyEndpoint = ""
        try c.wait("the proxy listens") {
            proxyEndpoint = ((try? String(contentsOfFile: ready, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            return !proxyEndpoint.isEmpty
        }
        // A peer onboards through the proxy; gossipctl asks the bootstrap through it too.
        let peer = try c.peer(["--bootstrap", proxyEndpoint], shard: "0/1", rounds: 2)
        let viaProxy = try c.ctl(["status", "--endpoint", proxyEndpoint, "-o", "json"])
        let direct = try c.ctl(["status", "--endpoint", boot.endpoint.description, "-o", "json"])
        #expect(viaProxy.0 == 0 && direct.0 == 0)
        let a = try StatusReport.parse(viaProxy.1), b = try StatusReport.parse(direct.1)
        #expect(a.peers == b.peers && a.peers == [peer.endpoint.description])
        #expect(a.schemaHash == b.schemaHash && a.architecture == b.architecture)
        var lines: [String] = []
        try c.wait("the proxy printed the whole session") {
            lines = ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            return lines.filter { $0.contains("Status") }.count >= 2
        }
        for expected in ["c>s Register request", "s>c Register reply", "c>s GetModel request", "s>c GetModel reply",
                         "c>s Status request", "s>c Status reply"] {
            #expect(lines.contains { $0.contains(expected) }, "missing '\(expected)' in:\n\(lines.joined(separator: "\n"))")
        }
        // The recorded raw stream decodes with framedump dump, same frames.
        let (code, dumped, err) = try Cluster.run(Cluster.binary("framedump"), ["--check", "\(c.dir)/rec-1-s2c.bin"])
        #expect(code == 0, "\(dumped) \(err)")
    }
}
