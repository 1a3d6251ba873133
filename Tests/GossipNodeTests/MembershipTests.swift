// Membership soft state and the status document.
import Foundation
@testable import GossipNode
import Testing

@Test func membershipLearnsDropsAndForgets() {
    var m = Membership(selfEndpoint: "127.0.0.1:1", dropAfter: 3, forgetFor: .seconds(30))
    #expect(m.merge(["127.0.0.1:1", "127.0.0.1:2", "", "127.0.0.1:3"]) == ["127.0.0.1:2", "127.0.0.1:3"])
    #expect(m.endpoints == ["127.0.0.1:2", "127.0.0.1:3"])
    #expect(m.markFailure("127.0.0.1:2") == false)
    #expect(m.markFailure("127.0.0.1:2") == false)
    #expect(m.markFailure("127.0.0.1:2") == true)
    #expect(m.endpoints == ["127.0.0.1:3"])
    // Others' stale lists do not bring it back ...
    #expect(m.merge(["127.0.0.1:2"]).isEmpty)
    // ... until forgetFor has passed, or it contacts us itself.
    #expect(m.merge(["127.0.0.1:2"], now: .now + .seconds(31)) == ["127.0.0.1:2"])
    m.remove("127.0.0.1:2")
    m.markSuccess("127.0.0.1:2")
    #expect(m.endpoints == ["127.0.0.1:2", "127.0.0.1:3"])
}

@Test func randomPeerDrawsEveryPeerAndExcludes() {
    var m = Membership(selfEndpoint: "127.0.0.1:1")
    let b = "127.0.0.1:2", c = "127.0.0.1:3"
    m.merge([b, c])
    m.markFailure(b)
    var rng = SplitMix(seed: 7)
    var seen = Set<String>()
    for _ in 0..<50 { seen.insert(m.randomPeer(using: &rng)!) }
    #expect(seen == [b, c])
    #expect(m.randomPeer(excluding: [c], using: &rng) == b)
    #expect(m.randomPeer(excluding: [b, c], using: &rng) == nil)
}

@Test func membershipCapacityIsBounded() {
    var m = Membership(selfEndpoint: "127.0.0.1:1", capacity: 10)
    m.merge((0..<100).map { "10.0.0.1:\($0 + 1000)" })
    #expect(m.count == 10)
}

@Test func membershipAdmitsOnlyEndpoints() {
    var m = Membership(selfEndpoint: "127.0.0.1:1")
    #expect(m.merge(["not an endpoint", "127.0.0.1:0", "host:99999", "[::1]:7000", "localhost:7001"]) == ["[::1]:7000", "localhost:7001"])
    m.markSuccess("evil\u{0}:1")
    #expect(m.count == 2)
}

@Test func statusJSONHasStableKeysAndRoundTrips() throws {
    var s = StatusReport(role: "peer", endpoint: "127.0.0.1:9", phase: "training", architecture: "64,32,10", schemaHash: 0xAB)
    s.accuracy = 0.5
    s.peers = ["127.0.0.1:10"]
    let json = s.json()
    let obj = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    for key in ["role", "endpoint", "phase", "architecture", "schema_hash", "step", "round", "samples_seen", "accuracy",
                "held_out_count", "dataset", "shard", "shard_size", "preprocessing", "peers", "exchanges", "bytes_in",
                "bytes_out", "uptime_seconds"] {
        #expect(obj[key] != nil, "missing key \(key)")
    }
    #expect(obj["schema_hash"] as? String == "00000000000000ab")
    #expect(try StatusReport.parse(json) == s)
}

@Test func statusWithADivergedLossStillEncodes() throws {
    var s = StatusReport(role: "peer", endpoint: "127.0.0.1:9", phase: "training", architecture: "4,3", schemaHash: 1)
    s.loss = .nan
    s.heldOutLoss = .infinity
    s.accuracy = 0.1
    let obj = try #require(try JSONSerialization.jsonObject(with: Data(s.json().utf8)) as? [String: Any])
    #expect(obj["role"] as? String == "peer")
    #expect(obj["loss"] is NSNull && obj["held_out_loss"] is NSNull)
    #expect(obj["accuracy"] as? Double == 0.1)
}
