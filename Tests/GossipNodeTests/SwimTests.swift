// The SWIM core (Swim.swift) in virtual time: a small in-test network of SwimStates with a
// delivery delay, seeded message loss and killed nodes. Detection, refutation by incarnation,
// no false death under 10% loss, the log N timeout, the update ordering rules, piggyback bounds.
@testable import GossipNode
import Testing

/// Members exchanging SwimMessages in virtual time.
struct SwimNet {
    var nodes: [String: SwimState] = [:]
    var order: [String] = []
    var dead: Set<String> = []
    /// Frozen nodes neither receive nor tick (their inbound messages are lost, like a SIGSTOP'd UDP socket's overflow).
    var frozen: Set<String> = []
    var loss: Double
    var delay: Duration = .milliseconds(5)
    var now: Duration = .zero
    var rng: SwimRandom
    var inflight: [(at: Duration, from: String, send: SwimSend)] = []
    var deadEvents: [(observer: String, member: String, at: Duration)] = []
    var suspectEvents = 0

    init(_ n: Int, config: SwimConfig = SwimConfig(), loss: Double = 0, seed: UInt64 = 1) {
        self.loss = loss
        rng = SwimRandom(seed: seed &* 7919)
        let ids = (0..<n).map { "127.0.0.1:\(7000 + $0)" }
        for (i, id) in ids.enumerated() {
            var s = SwimState(selfID: id, config: config, seed: seed &+ UInt64(i))
            s.join(ids, now: .zero)
            nodes[id] = s
        }
        order = ids
    }

    mutating func deliver(_ sends: [SwimSend], from: String) {
        for s in sends {
            if loss > 0, Double.random(in: 0..<1, using: &rng) < loss { continue }
            inflight.append((now + delay, from, s))
        }
    }

    /// Runs until `until`, in steps of `step`.
    mutating func run(until: Duration, step: Duration = .milliseconds(10)) {
        while now < until {
            now += step
            var due: [(at: Duration, from: String, send: SwimSend)] = []
            inflight.removeAll { e in
                if e.at <= now { due.append(e); return true }
                return false
            }
            for e in due {
                let to = e.send.to
                guard !dead.contains(to), !frozen.contains(to), !dead.contains(e.from), var s = nodes[to] else { continue }
                let out = s.receive(e.send.message, from: e.from, now: now)
                nodes[to] = s
                deliver(out, from: to)
            }
            for id in order where !dead.contains(id) && !frozen.contains(id) {
                var s = nodes[id]!
                let out = s.tick(now: now)
                for ev in s.takeEvents() {
                    if ev.status == .dead { deadEvents.append((id, ev.member, now)) }
                    if ev.status == .suspect { suspectEvents += 1 }
                }
                nodes[id] = s
                deliver(out, from: id)
            }
        }
    }

    /// True when every live node holds `member` dead or has forgotten it.
    func allDropped(_ member: String) -> Bool {
        order.allSatisfy { id in
            id == member || dead.contains(id) || nodes[id]!.member(member).map { $0.status == .dead } ?? true
        }
    }
}

@Suite struct SwimTests {
    @Test func timeoutFormulaGrowsWithLogN() {
        let c = SwimConfig()
        #expect(c.suspicionTimeout(members: 1) == .seconds(4))
        #expect(c.suspicionTimeout(members: 10) == .seconds(4))
        #expect(c.suspicionTimeout(members: 100) == .seconds(8))
        #expect(c.suspicionTimeout(members: 1000) == .seconds(12))
        #expect(c.suspicionTimeout(members: 10_000) == .seconds(16))
        #expect(c.retransmitLimit(members: 9) == 4)
        #expect(c.retransmitLimit(members: 10) == 8)
        #expect(c.retransmitLimit(members: 1000) == 16)
        #expect(c.problem() == nil)
        var bad = c
        bad.probeTimeout = .seconds(1)
        #expect(bad.problem() != nil)
    }

    @Test func suspicionTimeoutOfTheStateMachineFollowsN() {
        for (n, expected) in [(10, Duration.seconds(4)), (100, .seconds(8))] {
            var s = SwimState(selfID: "127.0.0.1:1", seed: 3)
            s.join((2...n).map { "127.0.0.1:\($0)" }, now: .zero)
            let victim = "127.0.0.1:2"
            _ = s.receive(SwimMessage(.ack, seq: 0, incarnation: 0, updates: [SwimUpdate(victim, .suspect, 0)]), from: "127.0.0.1:3", now: .seconds(1))
            #expect(s.member(victim)?.status == .suspect)
            s.feedAcks(until: .seconds(1) + expected - .milliseconds(1))
            #expect(s.member(victim)?.status == .suspect, "N=\(n): still suspect just before the timeout")
            _ = s.tick(now: .seconds(1) + expected)
            #expect(s.member(victim)?.status == .dead, "N=\(n): dead at \(expected)")
        }
    }

    @Test func detectsAKilledMemberEverywhere() {
        var net = SwimNet(8, seed: 11)
        net.run(until: .seconds(5))
        #expect(net.deadEvents.isEmpty)
        let victim = net.order[3]
        net.dead.insert(victim)
        let killedAt = net.now
        // Bound: one round of probes (N-1 periods) until someone probes it, the period itself,
        // the suspicion timeout, then a few periods for the news to spread.
        let c = SwimConfig()
        let bound = c.probeInterval * 7 + c.probeInterval + c.suspicionTimeout(members: 8) + c.probeInterval * 3
        var detected: Duration?
        while net.now < killedAt + bound {
            net.run(until: net.now + .milliseconds(100))
            if net.allDropped(victim) { detected = net.now - killedAt; break }
        }
        #expect(detected != nil, "not every member dropped \(victim) within \(bound)")
        #expect(net.deadEvents.allSatisfy { $0.member == victim }, "only the victim died: \(net.deadEvents)")
    }

    @Test func noFalseDeathUnderTenPercentLoss() {
        var net = SwimNet(10, loss: 0.10, seed: 5)
        net.run(until: .seconds(200))
        #expect(net.deadEvents.isEmpty, "false deaths: \(net.deadEvents.prefix(5))")
        #expect(net.suspectEvents > 0, "10% loss should cause some suspicions that are then refuted")
        for id in net.order { #expect(net.nodes[id]!.counts.alive + net.nodes[id]!.counts.suspect == 9, "\(id): \(net.nodes[id]!.counts)") }
    }

    @Test func aSuspectRefutesByIncarnation() {
        var net = SwimNet(5, seed: 2)
        net.run(until: .seconds(3))
        let x = net.order[2]
        // Somebody tells node 0 that x is suspect at x's current incarnation.
        var a = net.nodes[net.order[0]]!
        _ = a.receive(SwimMessage(.ack, seq: 0, incarnation: 0, updates: [SwimUpdate(x, .suspect, 0)]), from: net.order[1], now: net.now)
        #expect(a.member(x)?.status == .suspect)
        net.nodes[net.order[0]] = a
        net.run(until: net.now + .seconds(3))
        #expect(net.nodes[x]!.incarnation == 1, "x refuted once")
        #expect(net.nodes[x]!.refutations == 1)
        for id in net.order where id != x {
            #expect(net.nodes[id]!.member(x) == SwimMember(id: x, status: .alive, incarnation: 1, since: net.nodes[id]!.member(x)!.since))
        }
        #expect(net.deadEvents.isEmpty)
    }

    @Test func aFrozenMemberShorterThanTheTimeoutSurvives() {
        var net = SwimNet(6, seed: 9)
        net.run(until: .seconds(3))
        let x = net.order[4]
        net.frozen.insert(x)
        net.run(until: net.now + SwimConfig().suspicionTimeout(members: 6) - .seconds(1))
        net.frozen.remove(x)
        net.run(until: net.now + .seconds(10))
        #expect(net.deadEvents.isEmpty, "\(net.deadEvents)")
        for id in net.order { #expect(net.nodes[id]!.counts.alive == 5) }
    }

    @Test func incarnationOrderingRules() {
        // (held status, held inc, update status, update inc, expected status, expected inc)
        let cases: [(SwimStatus, UInt32, SwimStatus, UInt32, SwimStatus, UInt32)] = [
            (.alive, 3, .alive, 2, .alive, 3), (.alive, 3, .alive, 4, .alive, 4),
            (.alive, 3, .suspect, 2, .alive, 3), (.alive, 3, .suspect, 3, .suspect, 3),
            (.suspect, 3, .alive, 3, .suspect, 3), (.suspect, 3, .alive, 4, .alive, 4),
            (.suspect, 3, .suspect, 3, .suspect, 3), (.suspect, 3, .suspect, 4, .suspect, 4),
            (.alive, 3, .dead, 2, .alive, 3), (.alive, 3, .dead, 3, .dead, 3),
            (.suspect, 3, .dead, 3, .dead, 3), (.dead, 3, .alive, 3, .dead, 3),
            (.dead, 3, .alive, 4, .alive, 4), (.dead, 3, .suspect, 9, .dead, 3),
            (.dead, 3, .dead, 9, .dead, 3),
        ]
        let x = "127.0.0.1:9", other = "127.0.0.1:8"
        for (hs, hi, us, ui, es, ei) in cases {
            var s = SwimState(selfID: "127.0.0.1:1", seed: 1)
            s.join([other], now: .zero)
            _ = s.receive(SwimMessage(.ack, seq: 0, incarnation: 0, updates: [SwimUpdate(x, .alive, hi)]), from: other, now: .zero)
            if hs != .alive {
                _ = s.receive(SwimMessage(.ack, seq: 0, incarnation: 0, updates: [SwimUpdate(x, hs, hi)]), from: other, now: .zero)
            }
            #expect(s.member(x)?.status == hs && s.member(x)?.incarnation == hi)
            _ = s.receive(SwimMessage(.ack, seq: 0, incarnation: 0, updates: [SwimUpdate(x, us, ui)]), from: other, now: .zero)
            #expect(s.member(x)?.status == es && s.member(x)?.incarnation == ei, "\(hs)(\(hi)) + \(us)(\(ui))")
        }
        // Suspect or dead about an unknown member is ignored; alive adds it.
        var s = SwimState(selfID: "127.0.0.1:1", seed: 1)
        _ = s.receive(SwimMessage(.ack, seq: 0, incarnation: 0, updates: [SwimUpdate("127.0.0.1:5", .suspect, 0), SwimUpdate("127.0.0.1:6", .dead, 0)]), from: other, now: .zero)
        #expect(s.member("127.0.0.1:5") == nil && s.member("127.0.0.1:6") == nil)
        #expect(s.member(other)?.status == .alive, "the sender itself is alive")
    }

    @Test func refutesRumoursAboutItself() {
        var s = SwimState(selfID: "127.0.0.1:1", seed: 1)
        let other = "127.0.0.1:2"
        _ = s.receive(SwimMessage(.ack, seq: 0, incarnation: 0, updates: [SwimUpdate(s.selfID, .suspect, 0)]), from: other, now: .zero)
        #expect(s.incarnation == 1)
        _ = s.receive(SwimMessage(.ack, seq: 0, incarnation: 0, updates: [SwimUpdate(s.selfID, .dead, 5)]), from: other, now: .zero)
        #expect(s.incarnation == 6)
        _ = s.receive(SwimMessage(.ack, seq: 0, incarnation: 0, updates: [SwimUpdate(s.selfID, .alive, 6)]), from: other, now: .zero)
        #expect(s.incarnation == 6, "alive at our own incarnation needs no refutation")
        // The refutation rides on the next message.
        let out = s.receive(SwimMessage(.probe, seq: 7, target: s.selfID, incarnation: 0), from: other, now: .zero)
        #expect(out.count == 1 && out[0].message.kind == .ack && out[0].message.seq == 7)
        #expect(out[0].message.updates.contains(SwimUpdate(s.selfID, .alive, 6)))
    }

    @Test func probesIgnoreOtherTargetsAndUnknownAcks() {
        var s = SwimState(selfID: "127.0.0.1:1", seed: 1)
        let other = "127.0.0.1:2"
        let r1 = s.receive(SwimMessage(.probe, seq: 1, target: "127.0.0.1:3", incarnation: 0), from: other, now: .zero)
        let r2 = s.receive(SwimMessage(.ack, seq: 99, incarnation: 0), from: other, now: .zero)
        #expect(r1.isEmpty && r2.isEmpty)
        #expect(s.ignored == 2)
        let r3 = s.receive(SwimMessage(.probe, seq: 1, target: s.selfID, incarnation: 0), from: s.selfID, now: .zero)
        #expect(r3.isEmpty)
    }

    @Test func roundRobinProbesEveryMemberOncePerRound() {
        var s = SwimState(selfID: "127.0.0.1:1", seed: 4)
        let others = (2...11).map { "127.0.0.1:\($0)" }
        s.join(others, now: .zero)
        var probed: [String] = []
        var t = Duration.zero
        for _ in 0..<20 {
            for send in s.tick(now: t) where send.message.kind == .probe {
                probed.append(send.to)
                _ = s.receive(SwimMessage(.ack, seq: send.message.seq, incarnation: 0), from: send.to, now: t)
            }
            t += .seconds(1)
        }
        #expect(probed.count == 20)
        #expect(Set(probed[0..<10]) == Set(others))
        #expect(Set(probed[10..<20]) == Set(others))
    }

    @Test func aMemberWithoutAnAddressIsNotProbedUntilItHasOne() {
        var s = SwimState(selfID: "127.0.0.1:1", seed: 4, awaitAddresses: true)
        let ready = (2...6).map { "127.0.0.1:\($0)" }
        let slow = "slow.example:7"
        s.join(ready + [slow], now: .zero)
        #expect(Set(s.takeNewMembers()) == Set(ready + [slow]))
        #expect(s.takeNewMembers().isEmpty)
        for id in ready { s.addressReady(id) }
        #expect(!s.hasAddress(slow) && s.hasAddress(ready[0]))
        // Three rounds while the name is resolved: only the others are probed, asked to help
        // or gossiped to, and the waiting member is not suspected.
        var probed: [String] = []
        var t = Duration.zero
        for _ in 0..<15 {
            for send in s.tick(now: t) {
                #expect(send.to != slow, "\(send.message.kind) sent to a member without an address")
                if send.message.kind == .probe {
                    probed.append(send.to)
                    _ = s.receive(SwimMessage(.ack, seq: send.message.seq, incarnation: 0), from: send.to, now: t)
                }
            }
            t += .seconds(1)
        }
        #expect(probed.count == 15 && Set(probed) == Set(ready))
        #expect(s.member(slow)?.status == .alive && s.counts.suspect == 0)
        // Its address known, it is probed within the next round.
        s.addressReady(slow)
        var reached = false
        for _ in 0..<12 where !reached {
            for send in s.tick(now: t) where send.message.kind == .probe {
                reached = reached || send.to == slow
                _ = s.receive(SwimMessage(.ack, seq: send.message.seq, incarnation: 0), from: send.to, now: t)
            }
            t += .seconds(1)
        }
        #expect(reached)
        // Members learnt from a message (its sender, its updates) wait too; the answer to the
        // sender is still produced (the driver holds it until the address is known).
        let r = s.receive(SwimMessage(.probe, seq: 9, target: s.selfID, incarnation: 0, updates: [SwimUpdate("other.example:8", .alive, 0)]),
                          from: "new.example:9", now: t)
        #expect(r.count == 1 && r[0].to == "new.example:9" && r[0].message.kind == .ack)
        #expect(Set(s.takeNewMembers()) == ["new.example:9", "other.example:8"])
        #expect(!s.hasAddress("new.example:9") && !s.hasAddress("other.example:8"))
        // Without awaitAddresses (the simulator) nothing waits.
        var plain = SwimState(selfID: "127.0.0.1:1", seed: 4)
        plain.join([slow], now: .zero)
        #expect(plain.takeNewMembers().isEmpty && plain.hasAddress(slow))
    }

    @Test func indirectProbeThroughAHelper() {
        var a = SwimState(selfID: "127.0.0.1:1", seed: 1)
        var b = SwimState(selfID: "127.0.0.1:2", seed: 2)
        var c = SwimState(selfID: "127.0.0.1:3", seed: 3)
        a.join([b.selfID, c.selfID], now: .zero)
        b.join([a.selfID, c.selfID], now: .zero)
        // a probes somebody; the direct ack is lost.
        let probe = a.tick(now: .zero).first { $0.message.kind == .probe }!
        let target = probe.to
        let helperID = target == b.selfID ? c.selfID : b.selfID
        let reqs = a.tick(now: .milliseconds(500)).filter { $0.message.kind == .probeRequest }
        #expect(reqs.count == 1 && reqs[0].to == helperID && reqs[0].message.target == target)
        var helper = helperID == b.selfID ? b : c
        var tgt = target == b.selfID ? b : c
        let fwd = helper.receive(reqs[0].message, from: a.selfID, now: .milliseconds(510))
        #expect(fwd.count == 1 && fwd[0].to == target && fwd[0].message.kind == .probe)
        let ack = tgt.receive(fwd[0].message, from: helperID, now: .milliseconds(520))
        #expect(ack.count == 1 && ack[0].message.kind == .ack)
        let back = helper.receive(ack[0].message, from: target, now: .milliseconds(530))
        #expect(back.count == 1 && back[0].to == a.selfID && back[0].message.kind == .indirectAck && back[0].message.seq == probe.message.seq)
        _ = a.receive(back[0].message, from: helperID, now: .milliseconds(540))
        #expect(a.acksReceived == 1)
        _ = a.tick(now: .seconds(1))
        #expect(a.member(target)?.status == .alive, "answered through the helper: not suspected")
    }

    @Test func piggybackIsBoundedAndRetransmittedALimitedNumberOfTimes() {
        var config = SwimConfig()
        config.maxPiggyback = 4
        config.maxUpdateBytes = 200
        var s = SwimState(selfID: "127.0.0.1:1", config: config, seed: 1)
        let other = "127.0.0.1:2"
        // 30 members learnt by rumour: 30 updates to spread (plus our own alive).
        let rumours = (100..<130).map { SwimUpdate("127.0.0.1:\($0)", .alive, 1) }
        _ = s.receive(SwimMessage(.ack, seq: 0, incarnation: 0, updates: rumours), from: other, now: .zero)
        let n = s.liveCount
        let limit = config.retransmitLimit(members: n)
        var sent: [String: Int] = [:]
        for i in 0..<1000 {
            let out = s.receive(SwimMessage(.probe, seq: UInt32(i), target: s.selfID, incarnation: 0), from: other, now: .zero)
            let ups = out[0].message.updates
            #expect(ups.count <= 4)
            #expect(ups.reduce(0) { $0 + $1.encodedSize } <= 200)
            for u in ups { sent[u.member, default: 0] += 1 }
        }
        #expect(s.pendingBroadcasts == 0)
        for r in rumours { #expect(sent[r.member] == limit, "\(r.member) sent \(sent[r.member] ?? 0) times, limit \(limit)") }
    }

    @Test func aDeadMemberThatReturnsIsToldAndRejoins() {
        var s = SwimState(selfID: "127.0.0.1:1", seed: 1)
        let x = "127.0.0.1:2", other = "127.0.0.1:3"
        s.join([x, other], now: .zero)
        _ = s.receive(SwimMessage(.ack, seq: 0, incarnation: 0, updates: [SwimUpdate(x, .dead, 0)]), from: other, now: .zero)
        #expect(s.member(x)?.status == .dead)
        // x restarted at incarnation 0 and probes us: we answer and tell it it is dead.
        let out = s.receive(SwimMessage(.probe, seq: 5, target: s.selfID, incarnation: 0), from: x, now: .seconds(1))
        #expect(out[0].message.updates.first == SwimUpdate(x, .dead, 0))
        #expect(s.member(x)?.status == .dead)
        // x refutes with incarnation 1: alive again.
        var xs = SwimState(selfID: x, seed: 2)
        _ = xs.receive(out[0].message, from: s.selfID, now: .seconds(1))
        #expect(xs.incarnation == 1)
        _ = s.receive(SwimMessage(.ack, seq: 0, incarnation: xs.incarnation), from: x, now: .seconds(2))
        #expect(s.member(x)?.status == .alive && s.member(x)?.incarnation == 1)
    }

    @Test func deadMembersAreForgottenAfterTheRetention() {
        var s = SwimState(selfID: "127.0.0.1:1", seed: 1)
        let x = "127.0.0.1:2"
        s.join([x], now: .zero)
        _ = s.receive(SwimMessage(.ack, seq: 0, incarnation: 0, updates: [SwimUpdate(x, .dead, 0)]), from: "127.0.0.1:3", now: .zero)
        _ = s.tick(now: .seconds(29))
        #expect(s.member(x)?.status == .dead)
        _ = s.tick(now: .seconds(31))
        #expect(s.member(x) == nil)
        #expect(s.counts.dead == 0)
        let kinds = s.takeEvents().map(\.status)
        #expect(kinds.contains(.dead))
    }
}

extension SwimState {
    /// Ticks every 100 ms until `until`, answering every probe with an ack (all members alive but the suspect).
    mutating func feedAcks(until: Duration) {
        var t = Duration.seconds(1)
        while t <= until {
            for send in tick(now: t) where send.message.kind == .probe {
                _ = receive(SwimMessage(.ack, seq: send.message.seq, incarnation: 0), from: send.to, now: t)
            }
            t += .milliseconds(100)
        }
    }
}
