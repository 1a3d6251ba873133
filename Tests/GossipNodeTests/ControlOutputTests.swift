// Exact output of gossipctl's text rendering and of its JSON error object.
import Foundation
@testable import GossipNode
import GossipWire
import Testing

@Test func statusTextIsExact() {
    var s = StatusReport(role: "peer", endpoint: "127.0.0.1:7001", phase: "training", architecture: "64,32,10",
                         schemaHash: 0x81828bcd8b5572b4)
    s.dataset = "digits"
    s.shard = "0/4"
    s.shardSize = 375
    s.round = 12
    s.step = 120
    s.samplesSeen = 3840
    s.loss = 0.12345
    s.accuracy = 0.9562
    s.heldOutLoss = 0.2
    s.heldOutCount = 297
    s.exchanges.done = 10
    s.exchanges.busy = 1
    s.bytesIn = 1_200_000
    s.bytesOut = 1_100_000
    s.peers = ["127.0.0.1:7002", "127.0.0.1:7003"]
    s.uptimeSeconds = 4.25
    s.checkpointRound = 10
    #expect(Control.text(s) == """
    role        peer
    endpoint    127.0.0.1:7001
    phase       training
    model       64,32,10  schema 81828bcd8b5572b4
    dataset     digits  shard 0/4 (375 rows)
    progress    round 12  step 120  samples 3840
    loss        0.1235 (train, last round)
    accuracy    95.62% on 297 held-out rows (loss 0.2000)
    exchanges   done 10  failed 0  busy 1  refused 0
    rejected    weight capped 0  models 0
    checkpoint  round 10
    traffic     in 1.2 MB  out 1.1 MB
    peers       2: 127.0.0.1:7002 127.0.0.1:7003
    uptime      4.2 s
    """)
}

@Test func statusTextShowsRejectionsByPeer() throws {
    var s = StatusReport(role: "peer", endpoint: "127.0.0.1:7001", phase: "training", architecture: "64,32,10",
                         schemaHash: 1)
    s.rejected.weightCapped = 2
    s.rejected.modelsRejected = 5
    s.rejected.byPeer = ["127.0.0.1:7009": 6, "127.0.0.1:7003": 1]
    let line = Control.text(s).split(separator: "\n").first { $0.hasPrefix("rejected") }
    #expect(line == "rejected    weight capped 2  models 5  by peer: 127.0.0.1:7003 1, 127.0.0.1:7009 6")
    // The JSON keys of contract B, and a round trip through the reader.
    let json = s.json()
    #expect(json.contains(#""rejected":{"bound_resets":0,"by_peer":{"127.0.0.1:7003":1,"127.0.0.1:7009":6},"models_rejected":5,"weight_capped":2}"#), "\(json)")
    #expect(try StatusReport.parse(json).rejected == s.rejected)
    // An older node's status without the key reads as no rejections.
    #expect(try StatusReport.parse(#"{"role":"peer"}"#).rejected == StatusReport.Rejected())
}

@Test func failureJSONIsExact() {
    let f = ControlFailure(exitCode: .remoteError, message: "x answered FAILED_PRECONDITION: schema", status: .failedPrecondition)
    #expect(f.json == #"{"error":{"exit_code":70,"message":"x answered FAILED_PRECONDITION: schema","status":"FAILED_PRECONDITION","status_code":9}}"#)
}

@Test func statusTextShowsTheIdentityAndTheChannel() {
    var s = StatusReport(role: "bootstrap", endpoint: "10.0.0.1:7000", phase: "serving", architecture: "64,32,10", schemaHash: 1)
    let id = String(repeating: "ab", count: 32)
    s.identity = id
    s.secure = true
    s.peers = ["10.0.0.2:7001"]
    #expect(Control.text(s).split(separator: "\n").prefix(3).joined(separator: "\n") == """
    role        bootstrap
    endpoint    10.0.0.1:7000
    identity    \(id)  encrypted (Noise_XXpsk3_25519_AESGCM_SHA256)
    """)
    s.secure = false
    #expect(Control.text(s).contains("identity    \(id)  plaintext (no network key)"))
}

@Test func peersTextAndJSONCarryIdentities() throws {
    var s = StatusReport(role: "peer", endpoint: "127.0.0.1:7001", phase: "training", architecture: "", schemaHash: 0)
    let known = String(repeating: "0f", count: 32)
    s.identity = String(repeating: "11", count: 32)
    s.peers = ["127.0.0.1:7002", "127.0.0.1:7003"]
    s.peerIdentities = ["127.0.0.1:7002": known, "127.0.0.1:7003": nil]
    #expect(Control.peersText(s) == "127.0.0.1:7002  \(known)\n127.0.0.1:7003  -")
    #expect(Control.peersJSON(s) == #"{"endpoint":"127.0.0.1:7001","identity":""# + s.identity! + #"","peer_identities":{"127.0.0.1:7002":""# + known + #"","127.0.0.1:7003":null},"peers":["127.0.0.1:7002","127.0.0.1:7003"]}"#)
    // The status JSON round-trips the new keys, null identities included.
    let back = try StatusReport.parse(s.json())
    #expect(back == s)
    #expect(s.json().contains(#""peer_identities":{"127.0.0.1:7002":""# + known + #"","127.0.0.1:7003":null}"#))
    // An older node's status (no identity keys) still reads.
    let old = try StatusReport.parse(#"{"role":"peer"}"#)
    #expect(old.identity == nil && old.secure == nil && old.peerIdentities.isEmpty)
}
