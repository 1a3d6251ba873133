// Push-sum's mass accounting (SPEC §5.5) driven by a deterministic simulation of N nodes:
// pushes in flight, delivered in random order, some refused (taken back), some lost; models
// are small float vectors merged with the real averaging kernel. Plus the PushSum vectors.
import Foundation
import GossipML
import GossipNet
@testable import GossipNode
import GossipWire
import Testing

/// N simulated peers: a ledger and a de-biased model each, messages in flight between them.
private struct Simulation {
    struct Message { var from: Int; var to: Int; var mass: Double; var model: [Float] }
    var ledgers: [PushSumLedger]
    var models: [[Float]]
    var inFlight: [Message] = []
    var rng: SplitMix
    let names: [String]

    init(rows: [Double], dim: Int, seed: UInt64) {
        var g = SplitMix(seed: seed)
        ledgers = rows.map { PushSumLedger(rows: $0) }
        names = rows.indices.map { "127.0.0.1:\(7000 + $0)" }
        var models: [[Float]] = []
        for _ in rows {
            var m: [Float] = []
            for _ in 0..<dim { m.append(Float.random(in: -1...1, using: &g)) }
            models.append(m)
        }
        self.models = models
        self.rng = g
    }

    var totalRows: Double { ledgers.map(\.rows).reduce(0, +) }
    /// Mass held plus mass in flight, over all nodes.
    var totalMass: Double { ledgers.map { $0.mass + $0.massInFlight }.reduce(0, +) }

    /// Node `i` pushes to a random other node (lost with probability `loss`).
    mutating func push(from i: Int, loss: Double = 0) {
        var j = Int.random(in: 0..<(ledgers.count - 1), using: &rng)
        if j >= i { j += 1 }
        let lose = loss > 0 && Double.random(in: 0..<1, using: &rng) < loss
        if case .send(let m) = ledgers[i].beginPush(to: names[j], lose: lose) {
            inFlight.append(Message(from: i, to: j, mass: m, model: models[i]))
        }
    }

    /// Delivers a random message in flight; the receiver refuses it with probability `refuse`
    /// (the sender takes it back), or the answer is lost with probability `unknown` after it
    /// was added (the sender counts it unconfirmed).
    mutating func deliver(refuse: Double = 0, unknown: Double = 0) {
        guard !inFlight.isEmpty else { return }
        let k = Int.random(in: 0..<inFlight.count, using: &rng)
        let msg = inFlight.remove(at: k)
        if Double.random(in: 0..<1, using: &rng) < refuse {
            let own = ledgers[msg.from].mass
            if let m = ledgers[msg.from].pushRefused(to: names[msg.to]) {
                merge(into: msg.from, own: own, incoming: msg.model, weight: m)
            }
            return
        }
        guard case .accept(let own, let used, _) = ledgers[msg.to].receive(msg.mass) else { return }
        merge(into: msg.to, own: own, incoming: msg.model, weight: used)
        if Double.random(in: 0..<1, using: &rng) < unknown {
            ledgers[msg.from].pushUnconfirmed(to: names[msg.to])
        } else {
            ledgers[msg.from].pushConfirmed(to: names[msg.to])
        }
    }

    /// The real kernel (SPEC §5.3's averaging rule), as the node merges a push.
    mutating func merge(into i: Int, own: Double, incoming: [Float], weight: Double) {
        models[i].withUnsafeMutableBufferPointer { dst in
            incoming.withUnsafeBufferPointer { src in
                Averaging.weightedAverage(into: dst, weight: own, other: src, weight: weight)
            }
        }
    }

    /// Largest relative L2 distance of any model from `target`.
    func spread(from target: [Float]) -> Double {
        models.map { m in target.withUnsafeBufferPointer { t in m.withUnsafeBufferPointer { Averaging.relativeL2Distance(t, $0) } } }.max()!
    }
}

@Suite struct PushSumTests {
    /// The mass-weighted average of the initial models: where lossless push-sum converges.
    private func weightedMean(_ sim: Simulation) -> [Float] {
        var acc = [Double](repeating: 0, count: sim.models[0].count)
        for (l, m) in zip(sim.ledgers, sim.models) {
            for i in acc.indices { acc[i] += l.mass * Double(m[i]) }
        }
        return acc.map { Float($0 / sim.totalMass) }
    }

    @Test func massIsConservedExactlyWhenNothingIsLost() {
        var sim = Simulation(rows: [449, 450, 449, 449, 120, 880], dim: 24, seed: 7)
        let total = sim.totalRows
        let target = weightedMean(sim)
        for step in 0..<6000 {
            if Int.random(in: 0..<3, using: &sim.rng) == 0 {
                sim.deliver(refuse: 0.1)
            } else {
                sim.push(from: Int.random(in: 0..<sim.ledgers.count, using: &sim.rng))
            }
            let err = abs(sim.totalMass - total) / total
            #expect(err <= 1e-9, "step \(step): total mass \(sim.totalMass) != \(total)")
            if err > 1e-9 { return }
        }
        while !sim.inFlight.isEmpty { sim.deliver(refuse: 0.1) }
        // Quiescent: every node's mass is its own again, the sum exact.
        #expect(abs(sim.ledgers.map(\.mass).reduce(0, +) - total) / total <= 1e-9)
        #expect(sim.ledgers.allSatisfy { $0.inFlight.isEmpty })
        #expect(sim.ledgers.map(\.returned).reduce(0, +) > 0, "the simulation never exercised a refused push")
        // And the de-biased models reached the mass-weighted average of the initial ones.
        for _ in 0..<400 {
            for i in sim.ledgers.indices { sim.push(from: i) }
            while !sim.inFlight.isEmpty { sim.deliver() }
        }
        #expect(sim.spread(from: target) < 1e-4, "models did not reach the weighted average: spread \(sim.spread(from: target))")
    }

    @Test func withLossesModelsStayConvexAndStillReachConsensus() {
        var sim = Simulation(rows: [450, 450, 450, 450], dim: 16, seed: 11)
        let lo = (0..<16).map { i in sim.models.map { $0[i] }.min()! }
        let hi = (0..<16).map { i in sim.models.map { $0[i] }.max()! }
        for _ in 0..<300 {
            for i in sim.ledgers.indices { sim.push(from: i, loss: 0.3) }
            while !sim.inFlight.isEmpty { sim.deliver(unknown: 0.05) }
        }
        let lost = sim.ledgers.map(\.massLost).reduce(0, +) + sim.ledgers.map(\.massUnconfirmed).reduce(0, +)
        #expect(lost > 0)
        // Mass only decreased (never created); every node kept some mass.
        #expect(sim.totalMass < sim.totalRows)
        #expect(sim.ledgers.allSatisfy { $0.mass > 0 })
        // Every model is a convex combination of the initial ones (within float32 rounding).
        for m in sim.models {
            for i in m.indices { #expect(m[i] >= lo[i] - 1e-5 && m[i] <= hi[i] + 1e-5) }
        }
        // Consensus: all models agree (on some weighted average).
        let spread = sim.spread(from: sim.models[0])
        #expect(spread < 1e-3, "models disagree after 300 rounds with 30% loss: \(spread)")
    }

    @Test func theFloorStopsAPeerWhosePushesAreAllLostExceptForProbes() {
        var l = PushSumLedger(rows: 1000)
        var pushes = 0
        for _ in 0..<100 { if case .lose = l.beginPush(to: "a:1", lose: true) { pushes += 1 } }
        // 11 halvings reach the floor (1000/2^10 is still at it); then one probe per 16 attempts.
        #expect(pushes == 11 + (100 - 11) / PushSumLedger.probeEvery, "\(pushes) pushes")
        #expect(l.beginPush(to: "a:1") == .skip("mass \(l.mass) is under the floor"))
        // A received push refills it and sets the scale the floor follows.
        _ = l.receive(200)
        #expect(l.floor == 400 * PushSumLedger.floorFraction)
        if case .skip = l.beginPush(to: "a:1") { Issue.record("a refilled peer still skips") }
    }

    @Test func aNetworkThatLostMostOfItsMassKeepsMixing() {
        // 30% loss, long enough that every mass falls far below rows x 2^-10: pushes go on.
        var sim = Simulation(rows: [300, 300, 300], dim: 8, seed: 3)
        for _ in 0..<400 {
            for i in sim.ledgers.indices { sim.push(from: i, loss: 0.3) }
            while !sim.inFlight.isEmpty { sim.deliver() }
        }
        #expect(sim.ledgers.allSatisfy { $0.mass < $0.rows * PushSumLedger.floorFraction })
        let before = sim.ledgers.map(\.sent)
        for _ in 0..<10 {
            for i in sim.ledgers.indices { sim.push(from: i, loss: 0.3) }
            while !sim.inFlight.isEmpty { sim.deliver() }
        }
        #expect(zip(sim.ledgers, before).allSatisfy { $0.sent >= $1 + 5 }, "mixing stopped")
    }

    @Test func oneInFlightPerTargetAndDrainingRefuses() {
        var l = PushSumLedger(rows: 400)
        #expect(l.beginPush(to: "a:1") == .send(mass: 200))
        #expect(l.beginPush(to: "a:1") == .skip("a push to a:1 is in flight"))
        #expect(l.beginPush(to: "b:1") == .send(mass: 100))
        l.beginDraining()
        #expect(l.beginPush(to: "c:1") == .skip("stopping"))
        if case .accept = l.receive(10) { Issue.record("a draining ledger accepted a push") }
        // A refusal while draining still lets the in-flight mass come back.
        #expect(l.pushRefused(to: "a:1") == 200)
        #expect(l.mass == 300)
        #expect(l.massInFlight == 100)
    }

    /// An external peer's ledger (SPEC §5.12): mass 1, and the most samples its trainer pushed
    /// stand for its rows in the cap, so the network's pushes are not cut to 4.
    @Test func anExternalPeersCapFollowsItsTrainersLargestPush() {
        var l = PushSumLedger(rows: 1, weightCap: 4)
        l.trainerSamples(1280)
        if case .accept(_, let used, let cut) = l.receive(300) {
            #expect(used == 300 && cut == 0)
        } else { Issue.record("refused") }
        l.trainerSamples(32)                        // a smaller push does not shrink the cap back
        #expect(l.rows == 1280)
        #expect(l.mass == 301 && l.massCapped == 0)
        var fixed = PushSumLedger(rows: 1, weightCap: 4)   // what rows = 1 did: 296 of 300 dropped
        _ = fixed.receive(300)
        #expect(fixed.massCapped == 296)
    }

    @Test func anOutlierPeerYieldsItsMassToTheNetworksScale() {
        var l = PushSumLedger(rows: 400)
        #expect(l.yieldToNetwork() == 0, "nothing received yet: the scale says nothing")
        _ = l.receive(1e-6)                        // the others' masses are tiny (a lossy network)
        let before = l.mass
        #expect(l.yieldToNetwork() == before - 4e-6)
        #expect(l.mass == 4e-6 && l.discarded == 1)
        #expect(l.yieldToNetwork() == 0, "never below cap x the scale, never mass created")
        #expect(l.mass == 4e-6)
    }

    @Test func incomingMassIsCappedAndTheExcessCounted() {
        var l = PushSumLedger(rows: 100, weightCap: 4)
        // Honest: half of a peer's mass, below 4 x max(own mass, rows).
        #expect(l.receive(150) == .accept(own: 100, used: 150, capped: 0))
        // A claim far over the cap: 4 x max(250, 100) = 1000 used, the rest dropped and counted.
        #expect(l.receive(1e9) == .accept(own: 250, used: 1000, capped: 1e9 - 1000))
        #expect(l.capped == 1 && l.massCapped == 1e9 - 1000 && l.mass == 1250)
    }

    /// SPEC §5.5: push_sum_request.hex is a PushSum request the node's codec reads (sender,
    /// mass, the 3,2 model), and push_sum_reply.hex is the empty reply the node sends.
    @Test func pushSumVectorsDecodeWithTheNodeCodec() throws {
        let (vm, body) = try vectorMessage("push_sum_request")
        #expect(vm.type == .pushSum && vm.type.rawValue == 8)
        guard case .pushSumRequest(let req) = body else {
            Issue.record("not a PushSum request: \(body)")
            return
        }
        let decoded = try WireCodec.decodePushSum(vm.payload, expectedSchemaHash: req.model.table.schemaHash)
        #expect(decoded.sender == "127.0.0.1:7001" && decoded.mass == 300)
        #expect(decoded.model.architecture == "3,2")
        #expect(throws: WireError.self) { _ = try WireCodec.decodePushSum(vm.payload, expectedSchemaHash: 1) }
        let (rm, reply) = try vectorMessage("push_sum_reply")
        #expect(reply == .pushSumReply && rm.payload.count == 0)
        #expect(WireCodec.pushSumReply.count == 0)
    }

    @Test func statusCarriesThePushSumObject() throws {
        var l = PushSumLedger(rows: 64)
        _ = l.beginPush(to: "a:1")
        var s = StatusReport(role: "peer", endpoint: "x:1", phase: "training", architecture: "3,2", schemaHash: 1)
        s.pushSum = l.report
        let json = s.json()
        #expect(json.contains(#""push_sum":{"#) && json.contains(#""mass_in_flight":32"#))
        #expect(try StatusReport.parse(json).pushSum == l.report)
        var sync = s
        sync.pushSum = nil
        #expect(sync.json().contains(#""push_sum":null"#))
    }
}

/// A real push-sum PeerNode answering hostile and honest PushSum requests (SPEC §5.5).
@Suite struct PushSumHandlerTests {
    private func push(_ model: ModelState, mass: Double, sender: String = "127.0.0.1:9") throws -> [UInt8] {
        try PushSumRequest(sender: sender, mass: mass, model: model).encode().withUnsafeBytes { Array($0) }
    }

    /// The payload with its f64 mass (after `str sender`) replaced by `v`.
    private func withMass(_ bytes: [UInt8], _ v: Double, senderBytes: Int) -> [UInt8] {
        var b = bytes
        let at = 2 + senderBytes
        withUnsafeBytes(of: v.bitPattern.littleEndian) { for i in 0..<8 { b[at + i] = $0[i] } }
        return b
    }

    private func code(_ r: Result<InboundMessage, RPCError>) -> StatusCode? {
        if case .failure(let e) = r { return e.remote ? e.code : .unknown }
        return nil
    }

    @Test func aPushSumPeerRefusesHostilePushesAndAddsHonestOnes() throws {
        let p = try RunningPeer(averaging: .pushSum)
        defer { p.stop() }
        let own = try ModelState.decode(try p.call(.getModel, u64Bytes(0)).get().payload)
        let before = try #require(p.node.status().pushSum)
        // Masses out of (0, 1e12] and non-finite ones: INVALID_ARGUMENT, nothing added.
        let good = try push(own, mass: 10)
        for bad in [0.0, -1, 2e12, .nan, .infinity] {
            let c = code(p.call(.pushSum, withMass(good, bad, senderBytes: 11)))
            #expect(c == .invalidArgument, "mass \(bad) answered \(c?.name ?? "OK")")
        }
        // NaN in the weights: INVALID_ARGUMENT; another schema: FAILED_PRECONDITION.
        var data = own.data.array
        data.withUnsafeMutableBytes { $0.storeBytes(of: Float.nan, toByteOffset: 0, as: Float.self) }
        let nanModel = ModelState(architecture: own.architecture, round: 0, step: 0, samples: 0, table: own.table,
                                  data: ByteSlice(ByteStorage(copying: data)))
        #expect(code(p.call(.pushSum, try push(nanModel, mass: 10))) == .invalidArgument)
        let other = try MLPArchitecture(parsing: "64,5,10").makeParameters(seed: 1)
        let otherModel = try ModelState.decode(try WireCodec.encodeModel(architecture: try MLPArchitecture(parsing: "64,5,10"),
                                                                        params: other, round: 0, step: 0, samples: 0))
        #expect(code(p.call(.pushSum, try push(otherModel, mass: 10))) == .failedPrecondition)
        // A scaled model is an outlier: MODEL_REJECTED.
        let scaled = own.data.array.withUnsafeBytes { raw in raw.bindMemory(to: Float.self).map { $0 * 100 } }
        let far = ModelState(architecture: own.architecture, round: 0, step: 0, samples: 0, table: own.table,
                             data: scaled.withUnsafeBytes { ByteSlice(ByteStorage(copying: $0)) })
        #expect(code(p.call(.pushSum, try push(far, mass: 10))) == .modelRejected)
        var mid = try #require(p.node.status().pushSum)
        #expect(mid.received == before.received && mid.massReceived == before.massReceived, "a refused push added mass")
        // An honest push is added: OK with an empty reply.
        let ok = try p.call(.pushSum, good).get()
        #expect(ok.payload.count == 0)
        mid = try #require(p.node.status().pushSum)
        #expect(mid.received == before.received + 1 && mid.massReceived == before.massReceived + 10)
        // A claim over the cap is merged with 4 x max(own mass, rows); the excess is counted.
        _ = try p.call(.pushSum, try push(own, mass: 1e11)).get()
        let after = try #require(p.node.status().pushSum)
        #expect(after.capped == 1 && after.massCapped > 1e11 - 1e5)
        #expect(p.node.status().rejected.weightCapped == 1)
        // A push-sum peer takes no synchronous exchange.
        let ex = try GossipExchangeRequest(sender: "127.0.0.1:9", weight: 1, model: own).encode().withUnsafeBytes { Array($0) }
        #expect(code(p.call(.gossipExchange, ex)) == .unavailable)
    }

    @Test func aSyncPeerRefusesPushes() throws {
        let p = try RunningPeer()
        defer { p.stop() }
        let own = try ModelState.decode(try p.call(.getModel, u64Bytes(0)).get().payload)
        #expect(code(p.call(.pushSum, try push(own, mass: 10))) == .failedPrecondition)
        #expect(p.node.status().pushSum == nil)
    }
}
