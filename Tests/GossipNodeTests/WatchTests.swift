// gossipctl watch without sockets: the walk over a made-up network, nodes going down and
// staying listed, the bounds on what a lying node can make the watcher hold or print, the
// exact text block, the JSON object, and the pairwise model distance.
import Foundation
import GossipML
@testable import GossipNode
import Synchronization
import Testing

private let t0 = Date(timeIntervalSince1970: 1_764_756_000)   // 2025-12-03 10:00:00 UTC

private func peer(_ ep: String, peers: [String], bootstrap: String? = nil, round: Int = 3) -> StatusReport {
    var s = StatusReport(role: "peer", endpoint: ep, phase: "training", architecture: "64,32,10", schemaHash: 1)
    s.peers = peers
    s.bootstrap = bootstrap
    s.round = round
    s.loss = 0.5
    s.accuracy = 0.875
    s.exchanges.done = 7
    s.exchanges.failed = 1
    s.bytesIn = 1500
    s.bytesOut = 2_500_000
    return s
}

private func boot(_ ep: String, peers: [String]) -> StatusReport {
    var s = StatusReport(role: "bootstrap", endpoint: ep, phase: "serving", architecture: "64,32,10", schemaHash: 1)
    s.peers = peers
    return s
}

/// A made-up network the fetch function answers from; endpoints in `down` fail.
private final class FakeNet: Sendable {
    let nodes: [String: StatusReport]
    let down = Mutex<Set<String>>([])
    let clock = Mutex<Date>(t0)
    init(_ nodes: [StatusReport]) { self.nodes = Dictionary(uniqueKeysWithValues: nodes.map { ($0.endpoint, $0) }) }
    func fetch(_ e: String) -> Result<StatusReport, WatchPollError> {
        if down.withLock({ $0.contains(e) }) { return .failure(WatchPollError("UNAVAILABLE: connection refused")) }
        guard let s = nodes[e] else { return .failure(WatchPollError("UNAVAILABLE: no such node")) }
        return .success(s)
    }
    func watch(from seed: String, maxNodes: Int = 256, models: NetworkWatch.FetchModel? = nil) throws -> NetworkWatch {
        try NetworkWatch(seed: seed, maxNodes: maxNodes, parallel: 3, distanceEvery: 2,
                         fetchStatus: { self.fetch($0) }, fetchModel: models, clock: { self.clock.withLock { $0 } })
    }
    func advance(_ s: Double) { clock.withLock { $0 = $0.addingTimeInterval(s) } }
}

private let b = "127.0.0.1:7000"
private let p = (1...4).map { "127.0.0.1:\(7000 + $0)" }

private func fourPeers() -> FakeNet {
    // Each peer knows only its successor; only the last names the bootstrap: the walk must go
    // hop by hop to find everyone.
    FakeNet([boot(b, peers: p),
             peer(p[0], peers: [p[1]]), peer(p[1], peers: [p[2]]), peer(p[2], peers: [p[3]]),
             peer(p[3], peers: [p[0]], bootstrap: b)])
}

@Test func watchWalksPeerListsToEveryNodeInOneTick() throws {
    let net = fourPeers()
    let w = try net.watch(from: p[0])
    w.step()
    #expect(w.table.nodes.count == 5)
    #expect(w.table.rows.map(\.endpoint) == [b] + p, "bootstrap first, then peers by port")
    #expect(w.table.rows.map { $0.status?.role } == ["bootstrap", "peer", "peer", "peer", "peer"])
    #expect(w.table.rows.allSatisfy { $0.up })
    #expect(w.table.rows.allSatisfy { $0.polls == 1 }, "each node polled once per tick")
}

@Test func watchKeepsANodeThatStopsAnsweringAndMarksIt() throws {
    let net = fourPeers()
    let w = try net.watch(from: p[1])
    w.step()
    net.down.withLock { _ = $0.insert(b) }
    net.advance(1)
    w.step()
    net.advance(2)
    w.step()
    let row = try #require(w.table.nodes[b])
    #expect(!row.up)
    #expect(row.status?.role == "bootstrap", "the last answer is kept")
    #expect(row.error == "UNAVAILABLE: connection refused")
    #expect(w.table.rows.filter(\.up).count == 4)
    let text = WatchRender.text(w.snapshot)
    let bootLine = try #require(text.first { $0.hasPrefix(b) })
    #expect(bootLine.hasSuffix("DOWN 3s"), "\(bootLine)")
    #expect(text[0].hasSuffix("5 nodes, 4 up, 1 down"), "\(text[0])")
    for e in p { #expect(text.contains { $0.hasPrefix(e) && $0.hasSuffix("0s ago") }) }
    // Back again: up, with the new answer.
    net.down.withLock { $0.removeAll() }
    w.step()
    #expect(w.table.nodes[b]?.up == true)
}

@Test func watchNeverAnsweredNodeIsDownNeverSeen() throws {
    let net = FakeNet([peer(p[0], peers: [p[1]], bootstrap: b)])   // p1 and b do not exist
    let w = try net.watch(from: p[0])
    w.step()
    #expect(w.table.nodes.count == 3)
    let text = WatchRender.text(w.snapshot)
    #expect(text.contains { $0.hasPrefix(b) && $0.hasSuffix("DOWN never seen") }, "\(text)")
}

@Test func watchBoundsWhatALyingNodeCanMakeItHold() throws {
    var liar = peer(p[0], peers: (1...1000).map { "10.0.0.\($0 % 250):\(1000 + $0)" } + ["not an endpoint", "x:99999", String(repeating: "a", count: 5000) + ":1"])
    liar.role = "peer\u{1B}[2J\u{1B}[H"
    liar.phase = String(repeating: "p", count: 500)
    let net = FakeNet([liar])
    let w = try net.watch(from: p[0], maxNodes: 10)
    w.step()
    #expect(w.table.nodes.count == 10)
    #expect(w.table.overflow.count == 991)
    #expect(w.table.malformed == 3)
    let text = WatchRender.text(w.snapshot).joined(separator: "\n")
    #expect(!text.contains("\u{1B}"), "no escape code from a node reaches the terminal")
    #expect(!text.contains(String(repeating: "p", count: 25)), "long fields are cut")
    #expect(text.contains("991 more endpoints learned but not watched (--max-nodes)"))
    #expect(text.contains("3 peer-list entries ignored: not HOST:PORT"))
    #expect(throws: WatchPollError.self) { try net.watch(from: "nohostport") }
}

@Test func watchTextBlockIsExact() throws {
    var down = WatchedNode(endpoint: b, firstKnown: t0)
    down.status = boot(b, peers: [p[0]])
    down.lastSeen = t0.addingTimeInterval(-4)
    down.error = "UNAVAILABLE: refused"
    down.polls = 5
    var up = WatchedNode(endpoint: p[0], firstKnown: t0)
    up.status = peer(p[0], peers: [b], round: 12)
    up.lastSeen = t0
    up.polls = 5
    let d = WatchDistance(value: 0.0123456, peers: 4, skipped: 0, schemaHash: "00000000000000ab", computedAt: t0.addingTimeInterval(-2), tick: 3)
    let snap = WatchSnapshot(seed: p[0], tick: 5, time: t0, rows: [down, up], distance: d)
    #expect(WatchRender.text(snap) == [
        "gossip network via 127.0.0.1:7001: tick 5 at 10:00:00 UTC, 2 nodes, 1 up, 1 down",
        "ENDPOINT        ROLE       PHASE     ROUND  LOSS    ACCURACY  EXCH OK/FAIL  IN      OUT     LAST SEEN",
        "127.0.0.1:7000  bootstrap  serving   -      -       -         -             0 B     0 B     DOWN 4s",
        "127.0.0.1:7001  peer       training  12     0.5000  87.50%    7/1           1.5 kB  2.5 MB  0s ago",
        "max pairwise distance 0.012346 (relative L2 over 4 peers, schema 00000000000000ab) at 09:59:58 UTC (tick 3, 2s ago)",
    ])
    let none = WatchSnapshot(seed: p[0], tick: 1, time: t0, rows: [up], distanceEvery: 0)
    #expect(WatchRender.text(none).last == "max pairwise distance: off (--distance-every 0)")
}

@Test func watchJSONIsOneParsableObjectPerTick() throws {
    let net = fourPeers()
    let w = try net.watch(from: p[2])
    w.step()
    net.down.withLock { _ = $0.insert(b) }
    w.step()
    let line = WatchRender.json(w.snapshot)
    #expect(!line.contains("\n"))
    let obj = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    #expect(obj["tick"] as? Int == 2)
    let nodes = try #require(obj["nodes"] as? [[String: Any]])
    #expect(nodes.count == 5)
    #expect(nodes[0]["endpoint"] as? String == b)
    #expect(nodes[0]["up"] as? Bool == false)
    #expect(nodes[0]["role"] as? String == "bootstrap")
    #expect(nodes[0]["error"] as? String == "UNAVAILABLE: connection refused")
    #expect(nodes[1]["up"] as? Bool == true)
    #expect(nodes[1]["exchanges_ok"] as? Int == 7)
    #expect(nodes[1]["accuracy"] as? Double == 0.875)
    #expect(obj["distance"] is NSNull)
}

@Test func watchDistanceIsTheLargestPairOfTheMajoritySchema() throws {
    let specs: [(name: String, shape: [Int])] = [("w", [2, 2])]
    let a = try ParameterSet(specs: specs, storage: [1, 0, 0, 0])
    let c = try ParameterSet(specs: specs, storage: [1, 0, 0, 0.5])
    let e = try ParameterSet(specs: specs, storage: [2, 0, 0, 0])
    let other = try ParameterSet(specs: [("w", [4])], storage: [9, 9, 9, 9])
    let r = try #require(watchMaxDistance([("a", a), ("c", c), ("e", e), ("o", other)]))
    #expect(r.peers == 3)
    #expect(r.skipped == 1)
    #expect(r.schemaHash == a.schemaHash)
    // |a - e| / |a| = 1 is the largest (|e - a| / |e| = 0.5; |a - c| = 0.5).
    #expect(abs(r.value - 1.0) < 1e-9)
    #expect(watchMaxDistance([("a", a), ("o", other)]) == nil)

    // Through the watch: computed on tick 1 and every 2 ticks (distanceEvery: 2), from peers only.
    let net = fourPeers()
    let models: [String: ParameterSet] = [p[0]: a, p[1]: c, p[2]: a, p[3]: other]
    let w = try net.watch(from: p[0], models: { models[$0] })
    w.step()
    #expect(w.distance?.tick == 1)
    #expect(w.distance?.peers == 3)
    #expect(w.distance?.skipped == 1)
    w.step()
    #expect(w.distance?.tick == 1)
    w.step()
    #expect(w.distance?.tick == 3)
    #expect(WatchRender.text(w.snapshot).last?.hasPrefix("max pairwise distance 0.500000 (relative L2 over 3 peers") == true)
}
