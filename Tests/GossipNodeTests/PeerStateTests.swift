// The peer's decision state, driven by events with no sockets and no timing: the exchange
// slot (begin, apply incoming, install, finish), triggers, stopping, and peer lists.
@testable import GossipNode
import Testing

private func ready() -> PeerState {
    var s = PeerState(membership: Membership(selfEndpoint: "127.0.0.1:1"))
    s.membership.merge(["127.0.0.1:2", "127.0.0.1:3"])
    s.modelInstalled()
    return s
}

@Suite struct PeerStateTests {
    @Test func onboardingRefusesExchangesAndTriggers() {
        var s = PeerState(membership: Membership(selfEndpoint: "127.0.0.1:1"))
        #expect(s.phase == .onboarding)
        #expect(!s.mayTrain)
        guard case .unavailable = s.beginIncoming(sender: "127.0.0.1:2") else {
            Issue.record("an onboarding peer must answer UNAVAILABLE")
            return
        }
        guard case .unavailable = s.requestTrigger(peer: "") else {
            Issue.record("an onboarding peer must refuse triggers")
            return
        }
        do { let v = s.beginOutgoing(peer: "127.0.0.1:2"); #expect(!v) }
        #expect(s.exchanges.refused == 1)
        s.modelInstalled()
        #expect(s.phase == .training)
        #expect(s.mayTrain)
    }

    @Test func oneExchangeHoldsTheSlotAndTrainingWaits() {
        var s = ready()
        do { let v = s.beginIncoming(sender: "127.0.0.1:2"); #expect(v == .accept) }
        #expect(s.slot == .incoming(sender: "127.0.0.1:2"))
        #expect(!s.mayTrain, "training must pause while an exchange holds the model")
        do { let v = s.beginIncoming(sender: "127.0.0.1:3"); #expect(v == .busy) }
        do { let v = s.beginOutgoing(peer: "127.0.0.1:3"); #expect(!v) }
        s.finishIncoming(sender: "127.0.0.1:2", applied: true)
        #expect(s.slot == .idle)
        #expect(s.mayTrain)
        #expect(s.exchanges.done == 1)
        #expect(s.exchanges.refused == 1)
        #expect(s.membership.records["127.0.0.1:2"]?.exchanges == 1)
    }

    @Test func anIncomingExchangeNotAppliedCountsAsRefused() {
        var s = ready()
        do { let v = s.beginIncoming(sender: "127.0.0.1:2"); #expect(v == .accept) }
        s.finishIncoming(sender: "127.0.0.1:2", applied: false)
        #expect(s.exchanges.done == 0)
        #expect(s.exchanges.refused == 1)
        #expect(s.membership.records["127.0.0.1:2"]?.exchanges == 0)
    }

    @Test func outgoingOutcomesUpdateMembership() {
        var s = ready()
        do { let v = s.beginOutgoing(peer: "127.0.0.1:2"); #expect(v) }
        do { let v = s.beginIncoming(sender: "127.0.0.1:3"); #expect(v == .busy) }
        do { let v = s.finishOutgoing(peer: "127.0.0.1:2", result: .installed, learned: ["127.0.0.1:9"]); #expect(v == false) }
        #expect(s.membership.endpoints.contains("127.0.0.1:9"))
        #expect(s.exchanges.done == 1)

        do { let v = s.beginOutgoing(peer: "127.0.0.1:3"); #expect(v) }
        do { let v = s.finishOutgoing(peer: "127.0.0.1:3", result: .remoteBusy); #expect(v == false) }
        #expect(s.exchanges.busy == 1)

        for i in 0..<3 {
            do { let v = s.beginOutgoing(peer: "127.0.0.1:3"); #expect(v) }
            let dropped = s.finishOutgoing(peer: "127.0.0.1:3", result: .failed)
            #expect(dropped == (i == 2), "dropped after the third failed contact in a row")
        }
        #expect(!s.membership.endpoints.contains("127.0.0.1:3"))

        do { let v = s.beginOutgoing(peer: "127.0.0.1:9"); #expect(v) }
        do { let v = s.finishOutgoing(peer: "127.0.0.1:9", result: .incompatible); #expect(v) }
        #expect(!s.membership.endpoints.contains("127.0.0.1:9"))
        #expect(s.exchanges.failed == 4)
    }

    @Test func stoppingAnswersUnavailableAndBlocksNewWork() {
        var s = ready()
        do { let v = s.requestStop(); #expect(v) }
        do { let v = s.requestStop(); #expect(!v, "only the first request counts") }
        #expect(!s.mayTrain)
        do { let v = s.beginIncoming(sender: "127.0.0.1:2"); #expect(v == .unavailable("this peer is stopping; try another peer")) }
        do { let v = s.beginOutgoing(peer: "127.0.0.1:2"); #expect(!v) }
        guard case .unavailable = s.requestTrigger(peer: "") else {
            Issue.record("a stopping peer must refuse triggers")
            return
        }
        s.beginStopping()
        #expect(s.phase == .stopping)
        s.stopped()
        #expect(s.phase == .stopped)
    }

    @Test func triggersQueueOneAtATime() {
        var s = ready()
        do { let v = s.requestTrigger(peer: "127.0.0.1:2"); #expect(v == .queued) }
        do { let v = s.requestTrigger(peer: "127.0.0.1:3"); #expect(v == .alreadyPending) }
        do { let v = s.takeTrigger(); #expect(v == "127.0.0.1:2") }
        do { let v = s.takeTrigger(); #expect(v == nil) }
        do { let v = s.requestTrigger(peer: ""); #expect(v == .alreadyPending, "refused while the taken one runs") }
        s.finishTrigger()
        do { let v = s.requestTrigger(peer: ""); #expect(v == .queued) }
        do { let v = s.cancelTrigger(); #expect(v) }
        do { let v = s.cancelTrigger(); #expect(!v) }
    }

    @Test func roundsAndPhases() {
        var s = ready()
        do { let v = s.completeRound(loss: 0.5); #expect(v == 1) }
        do { let v = s.completeRound(loss: 0.25); #expect(v == 2) }
        #expect(s.lastLoss == 0.25)
        s.enterAveraging()
        #expect(s.phase == .averaging)
        var r = PeerState(membership: Membership(selfEndpoint: "127.0.0.1:1"))
        r.modelInstalled(resumedAt: 40)
        #expect(r.round == 40 && r.resumedFromRound == 40 && r.checkpointRound == 40)
    }

    @Test func peerListsFitTheWireLimit() {
        var s = PeerState(membership: Membership(selfEndpoint: "127.0.0.1:1", capacity: 5000))
        s.membership.merge((2..<3002).map { "127.0.0.1:\($0)" })
        let list = s.peerSample(excluding: "127.0.0.1:7", me: "127.0.0.1:1", limit: 1024)
        #expect(list.count == 1024)
        #expect(list.first == "127.0.0.1:1")
        #expect(!list.contains("127.0.0.1:7"))
        #expect(Set(list).count == list.count)
        var r2 = ready()
        let small = r2.peerSample(excluding: "127.0.0.1:2", me: "127.0.0.1:1", limit: 1024)
        #expect(small == ["127.0.0.1:1", "127.0.0.1:3"])
    }
}
