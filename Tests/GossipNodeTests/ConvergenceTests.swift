// Convergence detection and votes (SPEC §5.7-§5.9) as values: synthetic loss sequences and
// distances drive the detector; the vote set's bounds and quorum rule; the hook in
// PeerState.recordAccepted; the Votes and WaitConverged codecs.
import Foundation
import Testing
@testable import GossipNode
import GossipWire

@Suite struct ConvergenceTests {
    static func config(window: Int = 4, delta: Double = 0.01, distance: Double = 0.01) -> ConvergenceConfig {
        var c = ConvergenceConfig()
        c.window = window
        c.lossDelta = delta
        c.distance = distance
        return c
    }

    /// Feeds `window` rounds of loss `loss`, meeting models at `distance` each round.
    static func feed(_ d: inout ConvergenceDetector, loss: Double, distance: Double?, rounds: Int) -> [ConvergenceAction] {
        var out: [ConvergenceAction] = []
        for _ in 0..<rounds {
            if let distance { d.modelMet(distance: distance) }
            let a = d.roundCompleted(loss: loss)
            if a != .none { out.append(a) }
        }
        return out
    }

    @Test func improvingLossNeverConverges() {
        var d = ConvergenceDetector(config: Self.config(), mayReduceRate: true)
        var loss = 1.0
        for _ in 0..<200 {
            d.modelMet(distance: 0.001)
            #expect(d.roundCompleted(loss: loss) == .none)
            loss *= 0.99   // 4 % better per window of 4
        }
        #expect(!d.converged)
        #expect(d.reductionsDone == 0)
        #expect(d.windowsJudged == 50)
    }

    @Test func plateauHalvesTheRateTwiceThenConvergesWhenModelsAreClose() {
        var d = ConvergenceDetector(config: Self.config(), mayReduceRate: true)
        // First window: no previous one to compare with.
        #expect(Self.feed(&d, loss: 0.5, distance: 0.005, rounds: 4) == [])
        // Flat: a plateau -> halve (1), again (2), then converged.
        #expect(Self.feed(&d, loss: 0.5, distance: 0.005, rounds: 4) == [.setLearningRateScale(0.5)])
        #expect(Self.feed(&d, loss: 0.5, distance: 0.005, rounds: 4) == [.setLearningRateScale(0.25)])
        #expect(!d.converged)
        #expect(Self.feed(&d, loss: 0.5, distance: 0.005, rounds: 4) == [.converged])
        #expect(d.converged)
        // Sticky: nothing more happens.
        #expect(Self.feed(&d, loss: 9, distance: 0.9, rounds: 8) == [])
        #expect(d.converged)
    }

    @Test func farModelsKeepLoweringTheRateUntilTheFloor() {
        var c = Self.config()
        c.minLRScale = 1.0 / 8
        var d = ConvergenceDetector(config: c, mayReduceRate: true)
        let actions = Self.feed(&d, loss: 0.5, distance: 0.05, rounds: 4 * 4)
        #expect(actions == [.setLearningRateScale(0.5), .setLearningRateScale(0.25), .setLearningRateScale(0.125)])
        #expect(!d.converged)
        #expect(d.lastDistance == 0.05)
        // At the floor, the next plateau ends it anyway (relaxed): the network must end.
        #expect(Self.feed(&d, loss: 0.5, distance: 0.05, rounds: 4) == [.converged])
        #expect(d.converged && d.relaxed)
    }

    @Test func tooFewModelsMetIsNotConvergence() {
        var d = ConvergenceDetector(config: Self.config(), mayReduceRate: false)
        _ = Self.feed(&d, loss: 0.5, distance: nil, rounds: 4)
        d.modelMet(distance: 0.001)
        d.modelMet(distance: 0.001)   // 2 < minModelsMet (3)
        #expect(Self.feed(&d, loss: 0.5, distance: nil, rounds: 4) == [])
        #expect(d.lastDistance == nil)
        #expect(d.lastModelsMet == 2)
        // With enough models (no reductions allowed: --rounds-like), it converges at once.
        #expect(Self.feed(&d, loss: 0.5, distance: 0.001, rounds: 4) == [.converged])
    }

    @Test func theQuantileToleratesOneFarModelInTen() {
        var d = ConvergenceDetector(config: Self.config(window: 10), mayReduceRate: false)
        _ = Self.feed(&d, loss: 0.5, distance: nil, rounds: 10)
        for i in 0..<10 { d.modelMet(distance: i == 3 ? 0.5 : 0.002) }
        #expect(Self.feed(&d, loss: 0.5, distance: nil, rounds: 10) == [.converged])
        var e = ConvergenceDetector(config: Self.config(window: 10), mayReduceRate: false)
        _ = Self.feed(&e, loss: 0.5, distance: nil, rounds: 10)
        for i in 0..<10 { e.modelMet(distance: i < 2 ? 0.5 : 0.002) }   // two in ten: no
        #expect(Self.feed(&e, loss: 0.5, distance: nil, rounds: 10) == [])
    }

    @Test func noisyButImprovingLossIsJudgedOnWindowMeans() {
        var d = ConvergenceDetector(config: Self.config(window: 10, delta: 0.01), mayReduceRate: true)
        var g = SplitMix(seed: 7)
        var base = 1.0
        for _ in 0..<100 {
            let noise = Double(g.next() % 1000) / 1000 * 0.2 - 0.1   // ±10 % per round
            d.modelMet(distance: 0.001)
            #expect(d.roundCompleted(loss: base * (1 + noise)) == .none)
            base *= 0.99   // ~10 % better per window
        }
        #expect(d.reductionsDone == 0)
    }

    @Test func nonFiniteInputsAreIgnored() {
        var d = ConvergenceDetector(config: Self.config(), mayReduceRate: true)
        d.modelMet(distance: .nan)
        d.modelMet(distance: -1)
        d.modelMet(distance: .infinity)
        #expect(d.roundCompleted(loss: .nan) == .none)
        #expect(d.windowsJudged == 0)
    }

    @Test func resumedReductionsAreBounded() {
        var d = ConvergenceDetector(config: Self.config(), mayReduceRate: true)
        d.resume(learningRateScale: 0.25, reductions: 2)
        #expect(d.learningRateScale == 0.25 && d.reductionsDone == 2)
        // Enough reductions already: the first plateau with close models converges.
        _ = Self.feed(&d, loss: 0.5, distance: 0.001, rounds: 4)
        #expect(Self.feed(&d, loss: 0.5, distance: 0.001, rounds: 4) == [.converged])
        var e = ConvergenceDetector(config: Self.config(), mayReduceRate: true)
        e.resume(learningRateScale: 1e-9, reductions: 1 << 40)
        #expect(e.learningRateScale == ConvergenceConfig().minLRScale && e.reductionsDone == 64)
        e.resume(learningRateScale: .nan, reductions: 0)
        #expect(e.reductionsDone == 64)
    }

    @Test func disabledDetectorNeverActs() {
        var c = Self.config()
        c.enabled = false
        var d = ConvergenceDetector(config: c, mayReduceRate: true)
        #expect(Self.feed(&d, loss: 0.5, distance: 0, rounds: 40) == [])
    }

    // MARK: - votes

    @Test func voteSetIsBoundedAndKeepsOnlyEndpoints() {
        var v = VoteSet(capacity: 3)
        #expect(v.merge(["127.0.0.1:1", "not an endpoint", "127.0.0.1:0", "127.0.0.1:1", "127.0.0.1:2"]) == 2)
        #expect(v.merge(["127.0.0.1:3", "127.0.0.1:4"]) == 1)
        #expect(v.sorted == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
    }

    @Test func votesCoverEveryMemberPlusSelfOrTheQuorum() {
        var v = VoteSet(capacity: 16)
        let members = ["127.0.0.1:2", "127.0.0.1:3"]
        v.merge(["127.0.0.1:2", "127.0.0.1:3"])
        #expect(!v.covers(members: members, me: "127.0.0.1:1", quorum: nil))   // self not yet
        #expect(v.covers(members: members, me: "127.0.0.1:1", quorum: 2))
        #expect(!v.covers(members: members, me: "127.0.0.1:1", quorum: 3))
        v.merge(["127.0.0.1:1"])
        #expect(v.covers(members: members, me: "127.0.0.1:1", quorum: nil))
        // A member that joins later must vote too.
        #expect(!v.covers(members: members + ["127.0.0.1:4"], me: "127.0.0.1:1", quorum: nil))
        #expect(VoteSet.needed(members: members, me: "127.0.0.1:1", quorum: nil) == 3)
        #expect(v.counted(members: members + ["127.0.0.1:4"], me: "127.0.0.1:1") == 3)
    }

    @Test func acceptedModelsReachTheDetectorThroughRecordAccepted() {
        var s = PeerState(membership: Membership(selfEndpoint: "127.0.0.1:1", dropAfter: 3))
        var c = Self.config()
        c.minModelsMet = 2
        s.convergence = PeerConvergenceState(config: c, mayReduceRate: false, voteCapacity: 8)
        s.recordAccepted(.request, distance: 0.004)
        s.recordAccepted(.reply, distance: 0.006)
        for _ in 0..<4 { _ = s.convergence.detector.roundCompleted(loss: 1) }
        #expect(s.convergence.detector.lastModelsMet == 2)
        #expect(s.convergence.detector.lastDistance == 0.006)
    }

    @Test func finalAndDonePhases() {
        var s = PeerState(membership: Membership(selfEndpoint: "127.0.0.1:1", dropAfter: 3))
        s.modelInstalled()
        #expect(s.phase == .training)
        s.enterFinal()
        #expect(s.phase == .final)
        #expect(s.beginIncoming(sender: "127.0.0.1:2") == .accept)   // final averaging goes on
        s.finishIncoming(sender: "127.0.0.1:2", applied: true)
        s.enterDone()
        #expect(s.phase == .done)
        #expect(s.beginIncoming(sender: "127.0.0.1:2") == .busy)     // the final model stays
        let started = s.beginOutgoing(peer: "127.0.0.1:2")
        #expect(!started)                                              // and it starts none
    }

    // MARK: - codecs

    @Test func votesRoundTripAndBounds() throws {
        let m = VotesMessage(sender: "127.0.0.1:7001", flags: 1, voters: ["127.0.0.1:7001", "127.0.0.1:7002"])
        #expect(try VotesMessage.decode(try m.encode()) == m)
        #expect(m.finished)
        // An undefined flag bit is refused both ways.
        #expect(throws: WireError.self) { _ = try VotesMessage(sender: "a:1", flags: 2, voters: []).encode() }
        var bytes = try m.encode().array
        bytes[2 + 14] = 0x80
        #expect(throws: WireError.self) { _ = try VotesMessage.decode(ByteSlice(ByteStorage(copying: bytes))) }
        // A count past the limit, or one that cannot fit, is refused before reserving.
        var limits = Limits()
        limits.maxPeers = 1
        #expect(throws: WireError.self) { _ = try VotesMessage.decode(try m.encode(), limits: limits) }
        var huge = Array(try VotesMessage(sender: "a:1", flags: 0, voters: []).encode().array)
        huge.replaceSubrange(6..<10, with: [0xff, 0xff, 0x00, 0x00])
        #expect(throws: WireError.self) { _ = try VotesMessage.decode(ByteSlice(ByteStorage(copying: huge))) }
    }

    @Test func waitConvergedRequestAndReply() throws {
        let r = WaitConvergedRequest(timeoutMs: 60000)
        #expect(try WaitConvergedRequest.decode(r.encode()) == r)
        #expect(throws: WireError.self) { _ = try WaitConvergedRequest.decode(WaitConvergedRequest(timeoutMs: 0).encode()) }
        let result = WaitConvergedResult(endpoint: "127.0.0.1:7001", phase: "done", round: 120, accuracy: 0.95,
                                         finalModel: "/tmp/x/final.safetensors", voters: 4)
        #expect(try WireCodec.decodeWaitConvergedReply(try WireCodec.encodeWaitConvergedReply(result)) == result)
        let empty = WaitConvergedResult(endpoint: "127.0.0.1:7001", phase: "stopping", round: 3, accuracy: nil, finalModel: nil, voters: 1)
        #expect(try WaitConvergedResult(json: empty.json()) == empty)
        #expect(throws: NodeError.self) { _ = try WaitConvergedResult(json: #"{"phase":"done"}"#) }
    }

    @Test func statusCarriesTheConvergenceObject() throws {
        var s = StatusReport(role: "peer", endpoint: "127.0.0.1:1", phase: "final", architecture: "64,10", schemaHash: 1)
        var c = StatusReport.Convergence()
        c.enabled = true
        c.converged = true
        c.voters = ["127.0.0.1:1"]
        c.votesNeeded = 4
        c.learningRate = 0.05
        c.distance = 0.004
        s.convergence = c
        let json = s.json()
        #expect(json.contains(#""convergence":{"#))
        #expect(json.contains(#""votes_needed":4"#))
        #expect(json.contains(#""max_distance":0.004"#))
        #expect(try StatusReport.parse(json) == s)
        // A bootstrap's (or an older peer's) document has no such key.
        let b = StatusReport(role: "bootstrap", endpoint: "127.0.0.1:2", phase: "serving", architecture: "64,10", schemaHash: 1)
        #expect(!b.json().contains("convergence"))
    }
}
