// Reserve before the weights travel, and never wait on a peer (SPEC §5.6): the slot states of
// PeerState (reserved, lease expiry, release, what a granted Reserve leads to), the adaptive
// deadline, membership backoff and the Reserve codec, driven by events and explicit instants
// (no sockets, no timing); then a real PeerNode as responder and as caller of an older peer.
@testable import GossipNode
import GossipNet
import GossipWire
import Synchronization
import Testing

private let a = "127.0.0.1:2", b = "127.0.0.1:3", c = "127.0.0.1:4"

private func ready() -> PeerState {
    var s = PeerState(membership: Membership(selfEndpoint: "127.0.0.1:1"))
    s.membership.merge([a, b, c])
    s.modelInstalled()
    return s
}

@Suite struct ReserveStateTests {
    let t0 = ContinuousClock.now

    @Test func aReservationKeepsTrainingAndRefusesOthers() {
        var s = ready()
        let d = s.beginReserve(sender: a, lease: .seconds(2), now: t0)
        #expect(d == .reserved(until: t0 + .seconds(2)))
        #expect(s.slot == .reserved(sender: a, until: t0 + .seconds(2)))
        #expect(s.mayTrain, "a reservation must not pause training")
        // Others: busy, for Reserve and for a GossipExchange; no own exchange either.
        do { let v = s.beginReserve(sender: b, lease: .seconds(2), now: t0 + .milliseconds(10)); #expect(v == .busy) }
        do { let v = s.beginIncoming(sender: b, now: t0 + .milliseconds(10)); #expect(v == .busy) }
        do { let v = s.mayStartExchange(now: t0 + .milliseconds(10)); #expect(!v) }
        do { let v = s.beginOutgoing(peer: b, now: t0 + .milliseconds(10)); #expect(!v) }
        #expect(s.exchanges.reserveBusy == 1)
        #expect(s.exchanges.refused == 1)
        // The reserved sender's weights take the slot; training pauses now.
        do { let v = s.beginIncoming(sender: a, now: t0 + .milliseconds(20)); #expect(v == .accept) }
        #expect(s.slot == .incoming(sender: a))
        #expect(!s.mayTrain)
        s.finishIncoming(sender: a, applied: true)
        #expect(s.slot == .idle)
        #expect(s.exchanges.done == 1)
    }

    @Test func anExpiredLeaseFreesTheSlot() {
        var s = ready()
        _ = s.beginReserve(sender: a, lease: .milliseconds(500), now: t0)
        do { let v = s.beginIncoming(sender: b, now: t0 + .milliseconds(499)); #expect(v == .busy) }
        // At the lease's end the slot is idle again: another sender may reserve or exchange.
        do { let v = s.beginReserve(sender: b, lease: .seconds(1), now: t0 + .milliseconds(500)); #expect(v == .reserved(until: t0 + .milliseconds(1500))) }
        // The late weights of the first sender are now refused as busy (its lease ran out).
        do { let v = s.beginIncoming(sender: a, now: t0 + .milliseconds(600)); #expect(v == .busy) }
        // And this node's own exchange may start once that lease has run out too.
        do { let v = s.mayStartExchange(now: t0 + .milliseconds(1499)); #expect(!v) }
        do { let v = s.mayStartExchange(now: t0 + .milliseconds(1500)); #expect(v) }
    }

    @Test func theSameSenderRenewsItsReservation() {
        var s = ready()
        _ = s.beginReserve(sender: a, lease: .seconds(1), now: t0)
        do { let v = s.beginReserve(sender: a, lease: .seconds(1), now: t0 + .milliseconds(300)); #expect(v == .reserved(until: t0 + .milliseconds(1300))) }
        #expect(s.exchanges.reserveBusy == 0)
    }

    @Test func anExchangeWithoutReservationIsServedWhenIdle() {
        var s = ready()
        do { let v = s.beginIncoming(sender: b, now: t0); #expect(v == .accept, "an old caller (no Reserve) keeps working") }
        do { let v = s.beginReserve(sender: a, lease: .seconds(1), now: t0); #expect(v == .busy, "a Reserve during an exchange is busy") }
        s.finishIncoming(sender: b, applied: true)
    }

    @Test func twoPeersReservingEachOtherMakeOneExchange() {
        // x (127.0.0.1:2) and y (127.0.0.1:3) each sent a Reserve to the other; each granted the
        // other's (waiting for an answer takes nothing). Then both grants arrive: the smaller
        // endpoint sends, the other yields and keeps its slot for those weights.
        let xe = a, ye = b
        var x = PeerState(membership: Membership(selfEndpoint: xe)), y = PeerState(membership: Membership(selfEndpoint: ye))
        x.membership.merge([ye]); y.membership.merge([xe])
        x.modelInstalled(); y.modelInstalled()
        do { let v = x.mayStartExchange(now: t0), w = y.mayStartExchange(now: t0); #expect(v && w) }
        #expect(x.mayTrain && y.mayTrain, "waiting for a Reserve's answer must not pause training")
        do { let v = x.beginReserve(sender: ye, lease: .seconds(2), now: t0); #expect(v == .reserved(until: t0 + .seconds(2))) }
        do { let v = y.beginReserve(sender: xe, lease: .seconds(2), now: t0); #expect(v == .reserved(until: t0 + .seconds(2))) }
        do { let v = x.reserveGranted(peer: ye, me: xe, now: t0); #expect(v == .send) }
        do { let v = y.reserveGranted(peer: xe, me: ye, now: t0); #expect(v == .yield) }
        #expect(x.slot == .outgoing(peer: ye))
        #expect(y.slot == .reserved(sender: xe, until: t0 + .seconds(2)))
        // x's weights arrive at y and take its slot; y's never travel.
        do { let v = y.beginIncoming(sender: xe, now: t0); #expect(v == .accept) }
        y.finishIncoming(sender: xe, applied: true)
        do { let v = x.finishOutgoing(peer: ye, result: .installed); #expect(!v) }
        #expect(x.exchanges.done == 1 && y.exchanges.done == 1)
        #expect(x.slot == .idle && y.slot == .idle)
    }

    @Test func aGrantForASlotTakenMeanwhileIsAbandoned() {
        var s = ready()
        do { let v = s.mayStartExchange(now: t0); #expect(v) }
        // While this node waited for a's answer, b reserved it.
        _ = s.beginReserve(sender: b, lease: .seconds(2), now: t0)
        do { let v = s.reserveGranted(peer: a, me: "127.0.0.1:1", now: t0); #expect(v == .abandon) }
        #expect(s.slot == .reserved(sender: b, until: t0 + .seconds(2)), "b keeps its reservation")
        // A release by someone else changes nothing; b's own release frees the slot.
        s.releaseReservation(sender: c)
        #expect(s.slot == .reserved(sender: b, until: t0 + .seconds(2)))
        s.releaseReservation(sender: b)
        #expect(s.slot == .idle)
        // Once the lease has run out, a late grant finds the slot idle and sends.
        _ = s.beginReserve(sender: b, lease: .seconds(1), now: t0)
        do { let v = s.reserveGranted(peer: a, me: "127.0.0.1:1", now: t0 + .seconds(1)); #expect(v == .send) }
    }

    @Test func aGrantedReservationPausesTrainingUntilTheReply() {
        var s = ready()
        do { let v = s.mayStartExchange(now: t0); #expect(v) }
        #expect(s.slot == .idle)
        do { let v = s.reserveGranted(peer: a, me: "127.0.0.1:1", now: t0); #expect(v == .send) }
        #expect(s.slot == .outgoing(peer: a))
        #expect(!s.mayTrain, "the weights are on the wire: they must not change until the reply")
        do { let v = s.finishOutgoing(peer: a, result: .installed); #expect(!v) }
        #expect(s.mayTrain)
        #expect(s.exchanges.done == 1)
    }

    @Test func aReserveThatTimesOutBacksThePeerOffAndCounts() {
        var s = ready()
        s.countReserveTimeout()
        do { let v = s.countOutgoing(peer: a, result: .failed); #expect(!v) }
        #expect(s.exchanges.reserveTimeouts == 1 && s.exchanges.failed == 1)
        #expect(s.membership.isBackedOff(a))
        #expect(!s.membership.choosable().contains(a))
        // Busy says the peer is alive: no backoff.
        do { let v = s.countOutgoing(peer: b, result: .remoteBusy); #expect(!v) }
        #expect(!s.membership.isBackedOff(b))
    }

    @Test func stoppingOrOnboardingRefusesReserves() {
        var s = PeerState(membership: Membership(selfEndpoint: "127.0.0.1:1"))
        guard case .unavailable = s.beginReserve(sender: a, lease: .seconds(1), now: t0) else {
            Issue.record("an onboarding peer must answer UNAVAILABLE"); return
        }
        s.modelInstalled()
        _ = s.beginReserve(sender: a, lease: .seconds(5), now: t0)
        s.requestStop()
        guard case .unavailable = s.beginReserve(sender: b, lease: .seconds(1), now: t0) else {
            Issue.record("a stopping peer must answer UNAVAILABLE"); return
        }
        #expect(!s.slotHoldsModel, "a reservation must not hold up the last checkpoint")
    }
}

@Suite struct BackoffTests {
    @Test func backoffDoublesUpToTheMaximumAndResetsOnSuccess() {
        var m = Membership(selfEndpoint: "127.0.0.1:1", dropAfter: 10)
        m.backoffBase = .seconds(1)
        m.backoffMax = .seconds(30)
        #expect(m.backoff(afterFailures: 1) == .seconds(1))
        #expect(m.backoff(afterFailures: 2) == .seconds(2))
        #expect(m.backoff(afterFailures: 3) == .seconds(4))
        #expect(m.backoff(afterFailures: 5) == .seconds(16))
        #expect(m.backoff(afterFailures: 6) == .seconds(30))
        #expect(m.backoff(afterFailures: 1000) == .seconds(30))
        let t0 = ContinuousClock.now
        m.merge([a, b])
        do { let v = m.markFailure(a, now: t0); #expect(!v) }
        #expect(m.choosable(now: t0) == [b])
        #expect(m.choosable(now: t0 + .milliseconds(999)) == [b])
        #expect(m.choosable(now: t0 + .seconds(1)) == [a, b])
        do { let v = m.markFailure(a, now: t0 + .seconds(1)); #expect(!v) }
        #expect(m.isBackedOff(a, now: t0 + .milliseconds(2999)))
        #expect(!m.isBackedOff(a, now: t0 + .seconds(3)))
        m.markSuccess(a, now: t0 + .seconds(3))
        #expect(m.records[a]?.consecutiveFailures == 0)
        #expect(!m.isBackedOff(a, now: t0 + .seconds(3)))
        do { let v = m.markFailure(a, now: t0 + .seconds(4)); #expect(!v) }
        #expect(m.isBackedOff(a, now: t0 + .milliseconds(4999)), "after a success the backoff starts again at the base")
        #expect(!m.isBackedOff(a, now: t0 + .seconds(5)))
    }

    @Test func aBackedOffPeerIsStillDroppedAfterDropAfterFailures() {
        var m = Membership(selfEndpoint: "127.0.0.1:1", dropAfter: 3)
        m.merge([a])
        let t0 = ContinuousClock.now
        do { let v = m.markFailure(a, now: t0); #expect(!v) }
        do { let v = m.markFailure(a, now: t0 + .seconds(1)); #expect(!v) }
        do { let v = m.markFailure(a, now: t0 + .seconds(3)); #expect(v) }
        #expect(m.endpoints.isEmpty)
        #expect(m.choosable(now: t0 + .seconds(100)).isEmpty)
    }
}

@Suite struct RoundTripTests {
    @Test func theDeadlineIsEightMediansClamped() {
        var r = RoundTrips()
        #expect(r.deadline(floor: .milliseconds(250), cap: .seconds(10)) == .seconds(10), "nothing measured: the cap")
        for ms in [1, 2, 3, 100, 2] { r.record(.milliseconds(ms)) }
        #expect(r.median == .milliseconds(2))
        #expect(r.deadline(floor: .milliseconds(250), cap: .seconds(10)) == .milliseconds(250))
        for _ in 0..<10 { r.record(.milliseconds(100)) }
        #expect(r.median == .milliseconds(100))
        #expect(r.deadline(floor: .milliseconds(250), cap: .seconds(10)) == .milliseconds(800))
        #expect(r.deadline(floor: .milliseconds(250), cap: .milliseconds(500)) == .milliseconds(500))
        for _ in 0..<RoundTrips.window { r.record(.seconds(5)) }
        #expect(r.samples.count == RoundTrips.window)
        #expect(r.deadline(floor: .milliseconds(250), cap: .seconds(10)) == .seconds(10))
    }
}

@Suite struct ReserveCodecTests {
    @Test func theCodecRefusesAnotherSchemaAndBadLengths() throws {
        let ok = try WireCodec.encode(ReserveRequest(sender: a, schemaHash: 42, leaseMs: 1000))
        #expect(try WireCodec.decodeReserveRequest(ok, expectedSchemaHash: 42) == ReserveRequest(sender: a, schemaHash: 42, leaseMs: 1000))
        do {
            _ = try WireCodec.decodeReserveRequest(ok, expectedSchemaHash: 43)
            Issue.record("another schema must be refused")
        } catch {
            #expect(statusAndText(error).0 == .failedPrecondition)
        }
        // lease 0 is a release (SPEC §5.6): it decodes.
        let zero = try WireCodec.encode(ReserveRequest(sender: a, schemaHash: 42, leaseMs: 0))
        #expect(try WireCodec.decodeReserveRequest(zero, expectedSchemaHash: 42).leaseMs == 0)
        // Truncated and trailing bytes: refused, never a crash.
        let bytes = ok.array
        for cut in 0..<bytes.count {
            let slice = ByteSlice(ByteStorage(copying: Array(bytes[..<cut])))
            #expect(throws: (any Error).self) { _ = try WireCodec.decodeReserveRequest(slice, expectedSchemaHash: 42) }
        }
        let long = ByteSlice(ByteStorage(copying: bytes + [0]))
        #expect(throws: (any Error).self) { _ = try WireCodec.decodeReserveRequest(long, expectedSchemaHash: 42) }
    }
}

/// A real PeerNode (SPEC §5.6, responder steps): reserved for one sender, another sender's
/// Reserve and GossipExchange are ABORTED at once while the node keeps training; the reserved
/// sender's exchange is served; a release frees the slot; another schema is refused.
@Suite struct ReserveNodeTests {
    private func reserve(_ sender: String, _ hash: UInt64, leaseMs: UInt32) -> [UInt8] {
        strBytes(sender) + u64Bytes(hash) + (0..<4).map { UInt8(truncatingIfNeeded: leaseMs >> (8 * $0)) }
    }

    @Test func aReservedPeerRefusesOthersAndServesTheHolder() throws {
        let p = try RunningPeer()
        defer { p.stop() }
        let own = try ModelState.decode(try p.call(.getModel, u64Bytes(0)).get().payload)
        let hash = own.table.schemaHash
        let x = "127.0.0.1:9", y = "127.0.0.1:10"
        let exchange = { (sender: String) in
            try GossipExchangeRequest(sender: sender, weight: 1, model: own).encode().withUnsafeBytes { Array($0) }
        }
        // Another schema: FAILED_PRECONDITION, nothing reserved.
        guard case .failure(let e0) = p.call(.reserve, reserve(x, hash ^ 1, leaseMs: 5000)) else {
            Issue.record("a Reserve for another schema was granted"); return
        }
        #expect(e0.code == .failedPrecondition)
        // Reserved for x (lease 5 s, under the node's 5 s exchange deadline).
        let granted = p.call(.reserve, reserve(x, hash, leaseMs: 60_000))
        guard case .success(let ok) = granted else { Issue.record("Reserve refused: \(granted)"); return }
        #expect(ok.payload.count == 0)
        let before = p.node.status()
        // y is busy-refused, for a Reserve and for the weights themselves.
        guard case .failure(let e1) = p.call(.reserve, reserve(y, hash, leaseMs: 1000)) else { Issue.record("y reserved too"); return }
        #expect(e1.code == .aborted)
        guard case .failure(let e2) = p.call(.gossipExchange, try exchange(y)) else { Issue.record("y's exchange served"); return }
        #expect(e2.code == .aborted)
        // Training goes on while the slot is reserved.
        let trained = waitUntil("the reserved peer to keep training") { p.node.status().step > before.step + 3 }
        #expect(trained)
        let mid = p.node.status()
        #expect(mid.exchanges.reserveBusy >= 1)
        // x's weights are served (they take the reservation).
        guard case .success(let reply) = p.call(.gossipExchange, try exchange(x)) else { Issue.record("the holder's exchange was refused"); return }
        #expect(try GossipExchangeReply.decode(reply.payload).model.table.schemaHash == hash)
        // Reserve for y now succeeds; y's release frees it, so x can reserve again.
        guard case .success = p.call(.reserve, reserve(y, hash, leaseMs: 60_000)) else { Issue.record("idle slot not reserved"); return }
        guard case .success = p.call(.reserve, reserve(y, hash, leaseMs: 0)) else { Issue.record("release refused"); return }
        guard case .success = p.call(.reserve, reserve(x, hash, leaseMs: 1000)) else { Issue.record("slot not freed by the release"); return }
        // Malformed: truncated payload, refused cleanly.
        guard case .failure(let e3) = p.call(.reserve, Array(reserve(x, hash, leaseMs: 1).dropLast())) else { Issue.record("truncated Reserve accepted"); return }
        #expect(e3.code != .unimplemented && e3.remote)
    }
}

extension ReserveNodeTests {
    /// SPEC §5.6, caller step 4: an older peer answers Reserve UNIMPLEMENTED (it has no
    /// handler); the caller then sends its GossipExchange directly, and that peer's answer
    /// (here: busy) is what the triggered exchange reports.
    @Test func anOlderPeerWithoutReserveStillGetsTheExchange() throws {
        let p = try RunningPeer()
        defer { p.stop() }
        let old = RPCServer()
        let got = Mutex<[MessageType]>([])
        old.register(.gossipExchange) { m, r in
            got.withLock { $0.append(m.type) }
            r.fail(.aborted, "busy (an old peer)")
        }
        let ep = try old.start(host: "127.0.0.1", port: 0)
        defer { old.shutdown(grace: .zero) }
        let result = p.control(.triggerGossip, strBytes(ep.description))
        guard case .failure(let e) = result else { Issue.record("the old peer's busy answer was not reported: \(result)"); return }
        #expect(e.code == .aborted, "\(e)")
        #expect(got.withLock { $0 } == [.gossipExchange], "the exchange did not reach the old peer after its UNIMPLEMENTED")
    }
}

extension BackoffTests {
    /// A soft failure (a Reserve's short deadline missed) backs off but drops the peer only
    /// once it has been failing for `softDropAfter`; a success in between starts afresh.
    @Test func softFailuresDropOnlyAfterLongSilence() {
        var m = Membership(selfEndpoint: "127.0.0.1:1", dropAfter: 3)
        m.softDropAfter = .seconds(10)
        m.merge([a, b])
        let t0 = ContinuousClock.now
        do { let v = m.markFailure(a, now: t0, soft: true); #expect(!v) }
        do { let v = m.markFailure(a, now: t0 + .seconds(1), soft: true); #expect(!v) }
        do { let v = m.markFailure(a, now: t0 + .seconds(3), soft: true); #expect(!v, "three soft failures within 10 s must not drop") }
        #expect(m.isBackedOff(a, now: t0 + .seconds(6)))
        do { let v = m.markFailure(a, now: t0 + .seconds(10), soft: true); #expect(v, "failing for 10 s: dropped") }
        #expect(m.endpoints == [b])
        // A success resets the run: soft failures start counting anew.
        do { let v = m.markFailure(b, now: t0, soft: true); #expect(!v) }
        m.markSuccess(b, now: t0 + .seconds(9))
        do { let v = m.markFailure(b, now: t0 + .seconds(11), soft: true); #expect(!v) }
        do { let v = m.markFailure(b, now: t0 + .seconds(12), soft: true); #expect(!v) }
        do { let v = m.markFailure(b, now: t0 + .seconds(14), soft: true); #expect(!v) }
        // A hard failure (unreachable) keeps today's rule: dropAfter in a row.
        do { let v = m.markFailure(b, now: t0 + .seconds(15)); #expect(v) }
    }
}
