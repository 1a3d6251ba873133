// The insider bounds of SPEC §5.3 as pure functions and decisions: the weight cap, the
// relative L2 distance read in place, the adaptive outlier bound, their counters in the peer's
// state, and the test attacker's distortions.
import GossipML
@testable import GossipNode
import GossipWire
import Testing

private func modelState(_ p: ParameterSet, _ arch: MLPArchitecture) throws -> ModelState {
    let payload = try WireCodec.encodeModel(architecture: arch, params: p, round: 0, step: 0, samples: 0)
    return try ModelState.decode(payload, limits: .default, expectedSchemaHash: p.schemaHash)
}

private func bounds(k: Double = 4, floor: Double = 0.05, warmup: Double = 0.75, window: Int = 16, minSamples: Int = 4) -> ExchangeBounds {
    var b = ExchangeBounds()
    b.k = k
    b.floor = floor
    b.warmup = warmup
    b.window = window
    b.minSamples = minSamples
    return b
}

@Suite struct WeightCapTests {
    /// SPEC §5.5: a push-sum node judges pushes with the floor raised to 0.25; the exchange's
    /// bounds are untouched, and a scaled or noised model is still far over it.
    @Test func pushSumRaisesTheFloorOnly() {
        let b = ExchangeBounds()
        #expect(b.effective(for: .sync) == b)
        let p = b.effective(for: .pushSum)
        #expect(p.floor == 0.25 && p.k == b.k && p.warmup == b.warmup && p.weightCap == b.weightCap)
        var bound = OutlierBound(policy: p)
        for _ in 0..<8 { bound.record(0.001) }
        #expect(bound.admits(0.2))
        #expect(!bound.admits(0.3), "a model scaled by 1.3 is refused")
    }

    @Test func aClaimOverTheCapIsLoweredToCapTimesOwn() {
        let w = ExchangeMath.cappedWeights(own: 360, incoming: 1e9, cap: 4)
        #expect(w.own == 360 && w.incoming == 1440 && w.incomingCapped)
        // The claimant's coefficient is then exactly cap / (1 + cap): it can never replace a model.
        let (ca, cb) = Averaging.coefficients(weight: w.own, other: w.incoming)
        #expect(ca == 0.2 && cb == 0.8)
    }

    @Test func honestWeightsWithinTheCapAreUsedAsTheyAre() {
        for (a, b) in [(360.0, 360.0), (360, 1440), (1440, 360), (375, 374), (1, 4)] {
            let w = ExchangeMath.cappedWeights(own: a, incoming: b, cap: 4)
            #expect(w.own == a && w.incoming == b && !w.incomingCapped, "\(a) \(b)")
        }
    }

    @Test func aTinyClaimLowersTheResponderOwnWeightSymmetrically() {
        // Neither side may count for more than cap x the other: a responder's own weight is
        // clamped too, and that is not a capped claim (the claimant only loses influence).
        let w = ExchangeMath.cappedWeights(own: 1500, incoming: 1, cap: 4)
        #expect(w.own == 4 && w.incoming == 1 && !w.incomingCapped)
    }

    @Test func theReplyWeightCheckMatchesTheResponderClampBitForBit() {
        // An honest responder reports the weight it used, min(own, cap x caller's): always admitted.
        for (own, sent) in [(1500.0, 1.0), (360, 360), (1e6, 3), (7, 5e11)] {
            let used = ExchangeMath.cappedWeights(own: own, incoming: sent, cap: 4).own
            #expect(ExchangeMath.replyWeightWithinCap(used, sent: sent, cap: 4), "\(own) \(sent)")
        }
        #expect(ExchangeMath.replyWeightWithinCap(1440, sent: 360, cap: 4))
        #expect(!ExchangeMath.replyWeightWithinCap(1440.0.nextUp, sent: 360, cap: 4))
        #expect(!ExchangeMath.replyWeightWithinCap(1e9, sent: 360, cap: 4))
        for bad in [0.0, -1, .nan, .infinity] { #expect(!ExchangeMath.replyWeightWithinCap(bad, sent: 360, cap: 4)) }
    }

    @Test func aCappedAverageKeepsAFifthOfTheOwnModel() throws {
        let arch = try MLPArchitecture(parsing: "6,4,2")
        let own = arch.makeParameters(seed: 1), other = arch.makeParameters(seed: 2)
        let w = ExchangeMath.cappedWeights(own: 300, incoming: 1e9, cap: 4)
        var out = [Float](repeating: 0, count: own.storage.count)
        ExchangeMath.average(own: own.storage, ownWeight: w.own, incoming: try modelState(other, arch),
                             incomingWeight: w.incoming, into: &out)
        for i in out.indices {
            let px: Float = own.storage[i] * 0.2, py: Float = other.storage[i] * 0.8
            #expect(out[i].bitPattern == (px + py).bitPattern)
        }
    }
}

@Suite struct OutlierBoundTests {
    /// SPEC §5.3: an external trainer's push that moved the node's model by c keeps both
    /// bounds at least min(WARMUP, 2c): idle external peers that only met identical models
    /// (median 0, bound FLOOR) still admit a partner's first trained model.
    @Test func ownPushesKeepTheBoundAtTwiceTheLargestMove() {
        var b = OutlierBound(policy: bounds())
        for _ in 0..<8 { b.record(0) }
        #expect(b.bound == 0.05)
        #expect(!b.admits(0.29))
        b.recordOwnMove(0.2)
        #expect(b.bound == 0.4)
        #expect(b.admits(0.29))
        #expect(!b.admits(0.41))
        #expect(b.explanation.contains("push"))
        b.recordOwnMove(5)               // capped at WARMUP
        #expect(b.bound == 0.75)
        b.recordOwnMove(.nan)            // ignored
        b.recordOwnMove(-1)
        #expect(b.bound == 0.75)
        for _ in 0..<16 { b.recordOwnMove(0.01) }   // the window forgets old moves
        #expect(b.bound == 0.05)
        var fresh = OutlierBound(policy: bounds())
        fresh.recordOwnMove(0.5)         // during warm-up: max(WARMUP, 2c) capped at WARMUP
        #expect(fresh.bound == 0.75)
    }

    @Test func theWarmupBoundHoldsUntilEnoughExchangesWereAccepted() {
        var b = OutlierBound(policy: bounds())
        #expect(b.bound == 0.75)
        #expect(b.admits(0.75) && !b.admits(0.7501))
        for d in [0.01, 0.02, 0.03] { b.record(d) }
        #expect(b.bound == 0.75, "three samples: still warming up")
        b.record(0.04)
        #expect(b.bound == 0.1, "4 x median(0.01, 0.02, 0.03, 0.04) = 4 x 0.025")
        #expect(b.explanation.contains("median 0.025"))
    }

    @Test func theMedianOfTheLastWindowDrivesTheBound() {
        var b = OutlierBound(policy: bounds(window: 5, minSamples: 1))
        for d in [0.5, 0.5, 0.5, 0.02, 0.03, 0.04, 0.05, 0.06] { b.record(d) }
        #expect(b.recent == [0.02, 0.03, 0.04, 0.05, 0.06], "only the last 5 are recent")
        #expect(b.median == 0.04)
        #expect(abs(b.bound - 0.16) < 1e-15)
    }

    @Test func theBoundNeverFallsBelowTheFloor() {
        var b = OutlierBound(policy: bounds(minSamples: 1))
        for _ in 0..<20 { b.record(1e-6) }
        #expect(b.bound == 0.05)
        #expect(b.admits(0.05) && !b.admits(0.051))
    }

    @Test func nanAndInfinityAreNeverAdmittedNorRecorded() {
        var b = OutlierBound(policy: bounds())
        #expect(!b.admits(.nan) && !b.admits(.infinity))
        b.record(.nan)
        b.record(.infinity)
        b.record(-1)
        #expect(b.recent.isEmpty)
    }

    @Test func distancesAreReadInPlaceAndMatchTheKernel() throws {
        let arch = try MLPArchitecture(parsing: "6,4,2")
        let own = arch.makeParameters(seed: 1), other = arch.makeParameters(seed: 2)
        let d = ExchangeMath.relativeDistance(own: own.storage, incoming: try modelState(other, arch))
        #expect(d == Averaging.relativeL2Distance(own, other))
        #expect(ExchangeMath.relativeDistance(own: own.storage, incoming: try modelState(own, arch)) == 0)
    }

    @Test func theAttacksLandFarOutsideTheBoundAndTheClaimNeedsTheCap() throws {
        let arch = try MLPArchitecture(parsing: "64,32,10")
        let own = arch.makeParameters(seed: 1)
        var rng = SeededGenerator(seed: 7)
        let scaled = Misbehaviour.scale(50).distort(own, rng: &rng)
        let noise = Misbehaviour.noise.distort(own, rng: &rng)
        let claim = Misbehaviour.claim(1e9).distort(own, rng: &rng)
        let dScaled = ExchangeMath.relativeDistance(own: own.storage, incoming: try modelState(scaled, arch))
        let dNoise = ExchangeMath.relativeDistance(own: own.storage, incoming: try modelState(noise, arch))
        #expect(abs(dScaled - 49) < 1e-3, "x50 of the same model is at distance 49, got \(dScaled)")
        #expect(dNoise > 1.3 && dNoise < 1.5, "noise of the model's RMS is at about sqrt(2), got \(dNoise)")
        #expect(claim == own, "a weight claim sends the model as it is")
        #expect(Misbehaviour.claim(1e9).weight(honest: 360) == 1e9 && Misbehaviour.noise.weight(honest: 360) == 360)
        // Per-tensor RMS of the noise matches the model's, tensor by tensor.
        for spec in own.specs where spec.count > 100 {
            func rms(_ p: ParameterSet) -> Double {
                (spec.range.reduce(0.0) { $0 + Double(p.storage[$1] * p.storage[$1]) } / Double(spec.count)).squareRoot()
            }
            #expect(abs(rms(noise) / rms(own) - 1) < 0.15, "\(spec.name)")
        }
        let b = OutlierBound(policy: ExchangeBounds())
        #expect(!b.admits(dScaled) && !b.admits(dNoise), "refused even while warming up")
    }

    @Test func misbehaviourParsesItsThreeFormsAndRefusesOthers() throws {
        #expect(try Misbehaviour(parsing: "scale:50") == .scale(50))
        #expect(try Misbehaviour(parsing: "noise") == .noise)
        #expect(try Misbehaviour(parsing: "claim:1e9") == .claim(1e9))
        for bad in ["", "scale", "scale:x", "claim:-1", "claim:inf", "noise:1", "lie:3"] {
            #expect(throws: NodeError.self, "\(bad)") { _ = try Misbehaviour(parsing: bad) }
        }
    }
}

@Suite struct RejectionStateTests {
    private func ready(_ b: ExchangeBounds = ExchangeBounds()) -> PeerState {
        var s = PeerState(membership: Membership(selfEndpoint: "127.0.0.1:1"), bounds: b)
        s.membership.merge(["127.0.0.1:2", "127.0.0.1:3"])
        s.modelInstalled()
        return s
    }

    @Test func anOutlierIsCountedByPeerAndLeavesTheHistoryAlone() {
        var s = ready()
        guard case .outlier(let d, let bound, let why) = s.judgeModel(.request, distance: 49, from: "127.0.0.1:3") else {
            Issue.record("x50 must be refused")
            return
        }
        #expect(d == 49 && bound == 0.75 && why.contains("warm-up"))
        let v = s.judgeModel(.reply, distance: 0.2, from: "127.0.0.1:2")
        #expect(v == .accept)
        s.recordAccepted(.reply, distance: 0.2)
        #expect(s.rejected.modelsRejected == 1 && s.rejected.weightCapped == 0)
        #expect(s.rejected.byPeer == ["127.0.0.1:3": 1])
        #expect(s.requestBound.recent.isEmpty, "a refused distance never enters the history")
        #expect(s.replyBound.recent == [0.2], "each direction keeps its own history")
        s.weightCapped(from: "127.0.0.1:3")
        #expect(s.rejected.weightCapped == 1 && s.rejected.byPeer == ["127.0.0.1:3": 2])
    }

    @Test func theBoundTightensAsAcceptedDistancesShrink() {
        var s = ready()
        for _ in 0..<4 { s.recordAccepted(.request, distance: 0.05) }
        let atBound = s.judgeModel(.request, distance: 0.2, from: "a:1")
        let over = s.judgeModel(.request, distance: 0.21, from: "a:1")
        let reply = s.judgeModel(.reply, distance: 0.7, from: "a:1")
        #expect(atBound == .accept && over != .accept)
        #expect(reply == .accept, "replies are still warming up")
    }

    private func tight() -> PeerState {
        var s = ready()
        for _ in 0..<16 {
            s.recordAccepted(.request, distance: 0.01)
            s.recordAccepted(.reply, distance: 0.01)
        }
        return s
    }

    @Test func oneInsiderNeverLoosensTheBound() {
        var s = tight()
        for _ in 0..<50 {
            let v = s.judgeModel(.reply, distance: 0.6, from: "127.0.0.1:66")
            #expect(v != .accept && v != .acceptAfterReset)
            let ok = s.judgeModel(.reply, distance: 0.01, from: "127.0.0.1:2")
            #expect(ok == .accept)
        }
        // One peer refusing this node's model, however often, is no reason to doubt it.
        for _ in 0..<20 {
            let began = s.beginOutgoing(peer: "127.0.0.1:66")
            _ = s.finishOutgoing(peer: "127.0.0.1:66", result: .rejectedByPeer)
            #expect(began)
        }
        // Requests name their sender themselves: forged names never trigger the self-check.
        for i in 0..<50 {
            let v = s.judgeModel(.request, distance: 0.6, from: "10.9.9.9:\(i)")
            #expect(v != .accept && v != .acceptAfterReset)
        }
        #expect(s.rejected.boundResets == 0)
        #expect(s.replyBound.bound == 0.05 && s.requestBound.bound == 0.05)
    }

    @Test func repliesOfTwoPeersRefusedMakeThisNodeTheOutlierAndResetItsBounds() {
        // This node drifted away (it was partitioned, or resumed an old checkpoint while its
        // history was already tight): the others agree with each other, not with it.
        var s = tight()
        let first = s.judgeModel(.reply, distance: 0.6, from: "127.0.0.1:2")
        #expect(first != .accept && first != .acceptAfterReset)
        let second = s.judgeModel(.reply, distance: 0.6, from: "127.0.0.1:3")
        #expect(second == .acceptAfterReset, "judged anew under the warm-up bound")
        #expect(s.rejected.boundResets == 1 && s.rejected.modelsRejected == 1)
        #expect(s.requestBound.recent.isEmpty && s.replyBound.recent.isEmpty)
        #expect(s.requestBound.bound == 0.75)
        // A MODEL_REJECTED from a dialed peer counts too: in a split, both sides refuse each
        // other's requests and no reply is ever judged.
        var t = tight()
        for peer in ["127.0.0.1:2", "127.0.0.1:2", "127.0.0.1:3"] {
            let began = t.beginOutgoing(peer: peer)
            _ = t.finishOutgoing(peer: peer, result: .rejectedByPeer)
            #expect(began)
        }
        #expect(t.rejected.boundResets == 1 && t.requestBound.bound == 0.75)
        // After a reset the warm-up bound still refuses gross outliers.
        let gross = s.judgeModel(.reply, distance: 49, from: "127.0.0.1:2")
        #expect(gross != .accept && gross != .acceptAfterReset)
    }

    @Test func byPeerStaysBoundedWhateverSendersClaim() {
        var s = ready()
        for i in 0..<(PeerState.maxRejectedPeers + 500) { s.weightCapped(from: "10.0.0.1:\(i)") }
        #expect(s.rejected.byPeer.count == PeerState.maxRejectedPeers)
        #expect(s.rejected.byPeer["other"] == 501)
        s.weightCapped(from: "10.0.0.1:5")
        #expect(s.rejected.byPeer["10.0.0.1:5"] == 2, "a peer already listed keeps counting under its own key")
    }

    @Test func aPeerThatRefusesOurModelIsAliveAndKept() {
        var s = ready()
        for _ in 0..<10 {
            let began = s.beginOutgoing(peer: "127.0.0.1:2")
            let dropped = s.finishOutgoing(peer: "127.0.0.1:2", result: .rejectedByPeer)
            #expect(began && !dropped)
        }
        #expect(s.membership.endpoints.contains("127.0.0.1:2"), "MODEL_REJECTED says the peer is alive")
        #expect(s.exchanges.failed == 10)
    }
}
