// One insider against honest peers (SPEC §5.3), with the real binaries: a hostile client's
// scaled, noised and over-weighted exchanges against one peer, then a whole network of four
// honest peers and one attacker (`gossipd peer --misbehave`, a hidden test hook) for each of
// the three attacks, on digits with the demo's recipe. Plaintext loopback: nothing here
// depends on the channel, so the tests keep working when the network key is added.
import Foundation
import GossipML
import GossipNet
@testable import GossipNode
import GossipWire
import Testing

@Suite(.serialized)
struct InsiderTests {
    /// A peer refuses a x50 model and a noise model with MODEL_REJECTED (17), naming the
    /// distance and the bound, and changes nothing; a claimed weight of 1e9 is capped to
    /// 4 x its own, so the average keeps exactly a fifth of its model. Counted in status.
    @Test func aPeerRefusesOutliersAndCapsAClaimedWeight() throws {
        let c = try Cluster("insider-one")
        defer { c.shutdown() }
        let boot = try c.bootstrap()
        let peer = try c.peer(["--bootstrap", boot.endpoint.description], shard: "0/1", rounds: 1)
        try c.wait("the peer finishes training", nodes: [peer]) { try c.status(peer).phase == "averaging" }
        let before = try c.model(peer)
        let arch = try MLPArchitecture(parsing: "64,32,10")
        let attacker = "127.0.0.1:9"
        func offer(_ params: ParameterSet, weight: Double) throws -> Result<InboundMessage, RPCError> {
            let req = try WireCodec.encodeExchangeRequest(sender: attacker, weight: weight, architecture: arch, params: params,
                                                          round: 0, step: 0, samples: 0)
            return callSync(c.client, peer.endpoint, .gossipExchange, req, deadline: .seconds(10))
        }
        var rng = SeededGenerator(seed: 3)
        for attack in [Misbehaviour.scale(50), .noise] {
            guard case .failure(let e) = try offer(attack.distort(before, rng: &rng), weight: 1500) else {
                Issue.record("\(attack): an outlier was accepted")
                return
            }
            #expect(e.code == .modelRejected, "\(attack): \(e)")
            #expect(e.message.contains("relative L2 distance") && e.message.contains("over the bound 0.75"), "\(e.message)")
            #expect(try c.model(peer) == before, "\(attack): nothing may change")
        }
        // The claim: a model close to the peer's, weight 1e9.
        var shifted = before
        for i in shifted.storage.indices { shifted.storage[i] += 0.001 }
        guard case .success(let msg) = try offer(shifted, weight: 1e9) else {
            Issue.record("a capped exchange must be answered")
            return
        }
        let reply = try WireCodec.decodeExchangeReply(msg.payload, expectedSchemaHash: before.schemaHash)
        #expect(reply.weight == 1500, "the responder reports the weight it used")
        let after = try c.model(peer)
        for i in after.storage.indices {   // ca = 0.2, cb = 0.8 (SPEC §5.3 averaging rule)
            let px: Float = before.storage[i] * 0.2, py: Float = shifted.storage[i] * 0.8
            if after.storage[i].bitPattern != (px + py).bitPattern {
                Issue.record("weight \(i): \(after.storage[i]) is not the capped average \(px + py)")
                break
            }
        }
        var received = before
        try reply.model.copyData(into: &received.storage)
        #expect(received == after, "the caller receives exactly the responder's new model")
        let s = try c.status(peer)
        #expect(s.rejected.modelsRejected == 2 && s.rejected.weightCapped == 1, "\(s.rejected)")
        #expect(s.rejected.byPeer == [attacker: 3])
        #expect(s.exchanges.refused >= 2)
        #expect(try c.ctl(["status", "--endpoint", peer.endpoint.description]).1
            .contains("rejected    weight capped 1  models 2  by peer: \(attacker) 3"))
    }

    /// A caller that refuses a reply keeps its weights exactly; the responder's average stands,
    /// so after that exchange the two sides differ (SPEC §5.3). A triggered exchange reports
    /// the refusal as MODEL_REJECTED.
    @Test func aRefusedReplyLeavesTheCallerUntouched() throws {
        let c = try Cluster("insider-reply")
        defer { c.shutdown() }
        let boot = try c.bootstrap()
        let honest = try c.peer(["--bootstrap", boot.endpoint.description], shard: "0/2", rounds: 1)
        let attacker = try c.peer(["--bootstrap", boot.endpoint.description, "--misbehave", "scale:50"], shard: "1/2", rounds: 1)
        try c.wait("both peers finish training", nodes: [honest, attacker]) {
            try [honest, attacker].allSatisfy { try c.status($0).phase == "averaging" }
        }
        // The honest peer never learns of the attacker (a refused request adds no member) and
        // refuses every request it sends: the honest model is fixed now.
        let before = try c.model(honest)
        let (code, _, err) = try c.ctl(["gossip"] + honest.socketArgs + ["--with", attacker.endpoint.description, "-o", "json"])
        #expect(code == 70, "\(err)")
        #expect(err.contains("MODEL_REJECTED") && err.contains("nothing installed"), "\(err)")
        #expect(try c.model(honest) == before, "the caller keeps its own weights, bit for bit")
        #expect(try c.model(attacker) != before, "the responder's average stands: the two sides differ")
        let s = try c.status(honest)
        #expect(s.rejected.modelsRejected >= 1 && (s.rejected.byPeer[attacker.endpoint.description] ?? 0) >= 1, "\(s.rejected)")
    }

    /// Four honest peers and one attacker (a member: every node holds the network key, channels
    /// encrypted) on digits with the demo's recipe (64,256,128,10,
    /// 60 rounds of 10 steps, lr 0.2 cosine, batch 128, input noise 0.4), no pace.
    private func network(_ attack: String) throws {
        let c = try Cluster("insider-\(attack.prefix(5))", secure: true)   // the attacker holds the network key: a member
        defer { c.shutdown() }
        let boot = try c.bootstrap(arch: "64,256,128,10")
        var honest: [NodeProcess] = []
        for i in 0..<4 {
            honest.append(try c.peer(["--bootstrap", boot.endpoint.description], shard: "\(i)/4", rounds: 60,
                                     training: Cluster.tuned))
        }
        let attacker = try c.peer(["--bootstrap", boot.endpoint.description, "--misbehave", attack], shard: "0/4", rounds: 60,
                                  training: Cluster.tuned)
        let all = honest + [attacker]
        try c.wait("every peer finishes 60 training rounds", timeout: 300, nodes: all) {
            try all.allSatisfy { try c.status($0).phase == "averaging" }
        }
        let split = try DatasetSource.digits.load()
        let arch = try MLPArchitecture(parsing: "64,256,128,10")
        var accuracies: [Double] = []
        try c.wait("every honest peer at >= 92% held out", timeout: 60, nodes: all) {
            accuracies = try honest.map { evaluate(architecture: arch, parameters: try c.model($0), on: split.test).accuracy }
            return accuracies.allSatisfy { $0 >= 0.92 }
        }
        let key = attacker.endpoint.description
        var report: [String] = []
        for (p, acc) in zip(honest, accuracies) {
            let r = try c.status(p).rejected
            #expect((r.byPeer[key] ?? 0) > 0, "\(p.name) does not name the attacker \(key): \(r)")
            let honestRefusals = r.byPeer.filter { $0.key != key }.values.reduce(0, +)
            // Rarely, the liar's capped weight pulls one honest model far enough that a few
            // honest exchanges with it are refused until the bounds reset (one CI run: 6 on one
            // peer, accuracy still 93.6%); usually 0. More than 10 would be a real regression.
            #expect(honestRefusals <= 10, "\(p.name) refused honest peers: \(r.byPeer)")
            report.append(String(format: "%@ acc %.3f capped %d rejected %d by attacker %d honest %d resets %d", p.name, acc,
                                 r.weightCapped, r.modelsRejected, r.byPeer[key] ?? 0, honestRefusals, r.boundResets))
        }
        print("insider \(attack): " + report.joined(separator: "; "))
    }

    @Test func fourHonestPeersOutlastAScalingInsider() throws { try network("scale:50") }
    @Test func fourHonestPeersOutlastANoisingInsider() throws { try network("noise") }
    @Test func fourHonestPeersOutlastAWeightLiar() throws { try network("claim:1e9") }
}
