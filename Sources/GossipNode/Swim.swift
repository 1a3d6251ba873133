// SWIM failure detection (Das, Gupta, Motivala 2002) with HashiCorp memberlist's refinements,
// as a pure state machine: no sockets, no clocks, no threads. SPEC §5.10 is normative.
//
// API (the simulator and the node drive exactly this):
//   var s = SwimState(selfID: "10.0.0.1:7000", config: SwimConfig(), seed: 42)
//   s.join(["10.0.0.2:7000"], now: t)               // members learnt elsewhere (lists, --join)
//   let sends = s.tick(now: t)                      // call at least every `s.nextDeadline`
//   let more  = s.receive(msg, from: "10.0.0.2:7000", now: t)   // every decoded message
//   for e in s.takeEvents() { ... }                 // .alive / .suspect / .dead transitions
//   s.member("10.0.0.2:7000"), s.counts, s.incarnation, s.memberIDs
//   // with awaitAddresses (the node, whose member ids may be host names):
//   for id in s.takeNewMembers() { ... s.addressReady(id) once it can be sent to }
// `now` is a Duration since any origin the driver picks (a node: ContinuousClock instant minus
// its start; the simulator: virtual time); it must never go backwards. Randomness comes only
// from `seed`, so a run is reproducible. Every `SwimSend` goes to one member id; the driver
// encodes it (WireCodec+Swim) and sends it as one datagram.
//
// The protocol, per node:
// - Each `probeInterval` probe one member: round-robin over a shuffled list of the members
//   (reshuffled at the end of each round; a new member goes to a random place in it), as
//   memberlist does, so every member is probed once per round.
// - No ack within `probeTimeout`: ask `indirectProbes` (k) random other members to probe it
//   (ProbeRequest); each forwards an ack it gets back. No ack at all by the end of the period:
//   the member becomes *suspect* and the suspicion is gossiped.
// - A suspect is declared *dead* after suspicionMult * max(1, log10(N)) * probeInterval
//   (memberlist's formula; N = members not dead, self included), unless it refutes first.
// - A member that hears it is suspected (or declared dead) refutes: it raises its incarnation
//   above the one in the rumour and gossips alive(self, incarnation).
// - Updates obey the paper's ordering (memberlist's code): alive(i) overrides alive/suspect(j)
//   when i > j; suspect(i) overrides alive(j) when i >= j and suspect(j) when i > j; dead(i)
//   overrides alive/suspect(j) when i >= j; nothing overrides dead except alive(i) with i > j.
// - Updates ride on every Probe, ProbeRequest and ack (at most `maxPiggyback`, and at most
//   `maxUpdateBytes` of them), those sent fewest times first; each is sent
//   retransmitMult * ceil(log10(N + 1)) times, then dropped. A newer update about a member
//   replaces the older one at once.
// - While updates wait, every `gossipInterval` (200 ms) they also go to `gossipNodes` (3)
//   random members as a gossip message (memberlist's gossip; an unsolicited ack, sequence 0).
// - Dead members are kept `deadRetention` (so that stale alive rumours cannot resurrect them),
//   then forgotten. A member we hold dead that contacts us is told so (dead(it) rides first on
//   our answer) so that it refutes with a higher incarnation and rejoins everywhere; a member
//   we hold suspect is told so on every message we send it.
// - Addresses (the node only, `awaitAddresses`): a member id may be a host name, and the driver
//   resolves names off the probe path (PeerSwim.swift). Until the driver calls `addressReady`
//   a new member is not chosen as probe target, indirect-probe helper or gossip target: a
//   probe we cannot send would fail through no fault of the member, and SWIM would spread a
//   false suspicion of it (the paper suspects a member only when it fails to answer). While
//   it waits it is passed over; one passed over is probed in the next round, once ready.
//   Answers to it (acks, indirect acks) are still produced: the driver holds them until the
//   address is known.
// Not implemented (said in SPEC): Lifeguard's local health multiplier, the shrinking suspicion
// timeout with independent confirmations, nacks, the TCP fallback probe and push-pull sync.
//
// Cost: tick and receive are O(k + piggybacked updates) amortized; reshuffling the probe list
// is O(N) once per N probes; suspicion deadlines sit in a heap; nothing scans all members per
// message (the simulator runs 10,000 members).

import Foundation

/// The tuning of SWIM (SPEC §5.10). Defaults: memberlist's LAN profile.
public struct SwimConfig: Sendable, Equatable {
    /// One probe per period.
    public var probeInterval: Duration = .seconds(1)
    /// Wait this long for a direct ack before asking others (must be < probeInterval).
    public var probeTimeout: Duration = .milliseconds(500)
    /// k: members asked to probe indirectly.
    public var indirectProbes = 3
    /// Suspicion timeout = suspicionMult * max(1, log10(N)) * probeInterval.
    public var suspicionMult = 4
    /// Each update is piggybacked retransmitMult * ceil(log10(N + 1)) times.
    public var retransmitMult = 4
    /// Most updates piggybacked on one message.
    public var maxPiggyback = 16
    /// Most bytes of piggybacked updates on one message (keeps a datagram ≤ 1400 bytes).
    public var maxUpdateBytes = 800
    /// How long a dead member is remembered before it is forgotten.
    public var deadRetention: Duration = .seconds(30)
    /// Most members held (alive, suspect and dead); rumours about more are ignored.
    public var maxMembers = 100_000
    /// Most indirect probes this node runs for others at once.
    public var maxForwards = 256
    /// While updates wait to be spread, send them this often to `gossipNodes` random members
    /// as a gossip message (memberlist's GossipInterval: piggybacking alone spreads a
    /// refutation too slowly under loss).
    public var gossipInterval: Duration = .milliseconds(200)
    /// Members each gossip message goes to (memberlist's GossipNodes).
    public var gossipNodes = 3

    public init() {}

    /// The suspicion timeout for `n` members (self included): suspicionMult * max(1, log10(n)) * probeInterval.
    public func suspicionTimeout(members n: Int) -> Duration {
        let scale = max(1.0, log10(Double(max(1, n))))
        return probeInterval * (Double(suspicionMult) * scale)
    }

    /// How many times one update is sent when there are `n` members: retransmitMult * ceil(log10(n + 1)).
    public func retransmitLimit(members n: Int) -> Int {
        retransmitMult * Int(log10(Double(max(0, n) + 1)).rounded(.up))
    }

    /// A short description of what is wrong, or nil when the values are usable.
    public func problem() -> String? {
        if probeInterval <= .zero { return "the probe interval must be positive" }
        if probeTimeout <= .zero || probeTimeout >= probeInterval {
            return "the probe timeout must be positive and shorter than the probe interval"
        }
        if indirectProbes < 0 || indirectProbes > 16 { return "indirect probes must be 0...16" }
        if suspicionMult < 1 || suspicionMult > 100 { return "the suspicion multiplier must be 1...100" }
        if retransmitMult < 1 || retransmitMult > 100 { return "the retransmit multiplier must be 1...100" }
        if maxPiggyback < 0 || maxPiggyback > 255 { return "at most 255 piggybacked updates" }
        return nil
    }
}

/// A member's state as SWIM sees it.
public enum SwimStatus: UInt8, Sendable, Equatable, CustomStringConvertible {
    case alive = 0
    case suspect = 1
    case dead = 2

    public var description: String {
        switch self {
        case .alive: "alive"
        case .suspect: "suspect"
        case .dead: "dead"
        }
    }
}

/// One membership update ("member is status at incarnation"), as piggybacked.
public struct SwimUpdate: Sendable, Equatable, CustomStringConvertible {
    public var member: String
    public var status: SwimStatus
    public var incarnation: UInt32

    public init(_ member: String, _ status: SwimStatus, _ incarnation: UInt32) {
        self.member = member
        self.status = status
        self.incarnation = incarnation
    }

    /// Bytes on the wire (SPEC §5.10): u8 status, u32 incarnation, str member.
    public var encodedSize: Int { 1 + 4 + 2 + member.utf8.count }

    public var description: String { "\(status)(\(member), \(incarnation))" }
}

/// A SWIM message (SPEC §5.10). The sender's id travels next to it (the driver's envelope).
public struct SwimMessage: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// "ping": answer with an ack of the same `seq` if you are `target`.
        case probe
        /// The answer to a probe.
        case ack
        /// "ping-req": probe `target` for me and send me an `indirectAck` with `seq`.
        case probeRequest
        /// The answer to a probe request: `target` answered the intermediary.
        case indirectAck
    }

    public var kind: Kind
    /// The probe's sequence number (the frame's request id); an answer echoes it.
    public var seq: UInt32
    /// The member probed (probe, probeRequest, indirectAck); empty in an ack.
    public var target: String
    /// The sender's own incarnation: every message is direct evidence that its sender lives.
    public var incarnation: UInt32
    public var updates: [SwimUpdate]

    public init(_ kind: Kind, seq: UInt32, target: String = "", incarnation: UInt32, updates: [SwimUpdate] = []) {
        self.kind = kind
        self.seq = seq
        self.target = target
        self.incarnation = incarnation
        self.updates = updates
    }
}

/// One message to send: `message` to member `to`.
public struct SwimSend: Sendable, Equatable {
    public var to: String
    public var message: SwimMessage
}

/// A membership transition, drained with `SwimState.takeEvents()`.
public struct SwimEvent: Sendable, Equatable, CustomStringConvertible {
    public var member: String
    /// The new status: `.alive` for a new member or a refuted suspicion.
    public var status: SwimStatus
    public var incarnation: UInt32
    /// When it happened (the `now` of the call that caused it).
    public var at: Duration

    public var description: String { "\(member) \(status) #\(incarnation)" }
}

/// What this node holds about one member.
public struct SwimMember: Sendable, Equatable {
    public var id: String
    public var status: SwimStatus
    public var incarnation: UInt32
    /// When the status last changed.
    public var since: Duration
}

/// A seeded generator (SplitMix64): the simulator's runs are reproducible.
public struct SwimRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The SWIM state machine of one node. Not thread-safe: its owner serialises access.
public struct SwimState: Sendable {
    /// Longest member id accepted (the driver's codec checks ids further, e.g. HOST:PORT).
    public static let maxIDBytes = 255
    public let selfID: String
    public let config: SwimConfig
    /// This node's incarnation; raised to refute a suspicion.
    public private(set) var incarnation: UInt32 = 0
    private var rng: SwimRandom

    /// One member as the table holds it: a `SwimMember` without the id (the key) and with the
    /// member's index in `ids`, so that one dictionary does the work of two. Memory matters:
    /// the simulator holds N members in each of N states (32 bytes a value, not 40 plus a
    /// second dictionary of id -> index).
    private struct Entry {
        var since: Duration
        var incarnation: UInt32
        var slot: Int32
        var status: SwimStatus
    }
    private var table: [String: Entry] = [:]
    /// Every member id in `table`, for O(1) random choice (swap-remove via `Entry.slot`).
    private var ids: [String] = []
    public private(set) var counts: (alive: Int, suspect: Int, dead: Int) = (0, 0, 0)

    // Round-robin probing over a shuffled list.
    private var probeList: [String] = []
    private var probeIndex = 0
    private var nextProbeAt: Duration?
    private var nextGossipAt: Duration?

    private struct Outstanding {
        var target: String
        var seq: UInt32
        var start: Duration
        var indirectSent = false
    }
    private var outstanding: Outstanding?
    private var seq: UInt32

    /// Indirect probes this node runs for others: our seq -> (requester, their seq, target).
    private struct Forward { var requester: String; var seq: UInt32; var target: String; var deadline: Duration }
    private var forwards: [UInt32: Forward] = [:]
    private var forwardOrder: [UInt32] = []
    private var forwardHead = 0

    /// Suspicion deadlines (a min-heap; stale entries are skipped when popped).
    private var suspicions = DeadlineHeap()
    /// Dead members in the order they died, forgotten after `deadRetention`.
    private var graveyard: [(id: String, incarnation: UInt32, at: Duration)] = []
    private var graveHead = 0

    // Piggyback queue: the newest update per member, bucketed by how often it was sent.
    private struct Broadcast { var update: SwimUpdate; var transmits: Int; var version: UInt64 }
    private var broadcasts: [String: Broadcast] = [:]
    private var buckets: [[(id: String, version: UInt64)]] = [[]]
    private var broadcastVersion: UInt64 = 0

    private var events: [SwimEvent] = []

    /// Whether new members wait for `addressReady` before they are probed (see the header).
    public let awaitAddresses: Bool
    /// Members held that the driver cannot send to yet (empty unless `awaitAddresses`).
    private var unaddressed: Set<String> = []
    /// Members added since the last `takeNewMembers` (only with `awaitAddresses`).
    private var newMembers: [String] = []

    /// Counters for status and tests.
    public private(set) var probesSent = 0
    public private(set) var probeRequestsSent = 0
    public private(set) var acksReceived = 0
    public private(set) var refutations = 0
    public private(set) var gossipSent = 0
    /// Messages ignored: a probe for another target, an ack matching no probe, a full table.
    public private(set) var ignored = 0

    /// - Parameters:
    ///   - selfID: this node's member id (its endpoint HOST:PORT).
    ///   - seed: the only source of randomness.
    ///   - awaitAddresses: a new member is not probed (nor asked to probe, nor gossiped to)
    ///     until `addressReady(id)`: for a driver that resolves host names off the probe path.
    public init(selfID: String, config: SwimConfig = SwimConfig(), seed: UInt64, awaitAddresses: Bool = false) {
        self.selfID = selfID
        self.config = config
        self.awaitAddresses = awaitAddresses
        rng = SwimRandom(seed: seed)
        seq = UInt32(truncatingIfNeeded: rng.next())
        enqueue(SwimUpdate(selfID, .alive, 0))
    }

    // MARK: - Queries

    /// What this node holds about `id` (nil: unknown or forgotten).
    public func member(_ id: String) -> SwimMember? {
        table[id].map { SwimMember(id: id, status: $0.status, incarnation: $0.incarnation, since: $0.since) }
    }

    /// All member ids held (any status), in no particular order. O(N): for status, not per message.
    public var memberIDs: [String] { ids }

    /// All members held. O(N).
    public var members: [SwimMember] { ids.compactMap { member($0) } }

    /// Members not dead, self included: the N of the timeout formulas.
    public var liveCount: Int { counts.alive + counts.suspect + 1 }

    /// The current suspicion timeout.
    public var suspicionTimeout: Duration { config.suspicionTimeout(members: liveCount) }

    /// Updates waiting to be piggybacked.
    public var pendingBroadcasts: Int { broadcasts.count }

    /// The latest instant by which `tick` must be called again (nil: nothing scheduled).
    public var nextDeadline: Duration? {
        var d = nextProbeAt
        if let o = outstanding, !o.indirectSent { d = min(d ?? o.start + config.probeTimeout, o.start + config.probeTimeout) }
        if let s = suspicions.peek { d = min(d ?? s, s) }
        if let g = nextGossipAt, !broadcasts.isEmpty { d = min(d ?? g, g) }
        return d
    }

    /// False for a member that waits for `addressReady` (only with `awaitAddresses`).
    public func hasAddress(_ id: String) -> Bool { unaddressed.isEmpty || !unaddressed.contains(id) }

    /// Drains the transitions since the last call.
    public mutating func takeEvents() -> [SwimEvent] {
        defer { events.removeAll(keepingCapacity: true) }
        return events
    }

    /// Drains the members added since the last call (any path: join, a message's sender or
    /// updates), for the driver to resolve. Empty unless `awaitAddresses`.
    public mutating func takeNewMembers() -> [String] {
        defer { newMembers.removeAll(keepingCapacity: true) }
        return newMembers
    }

    /// The driver can send to `id` now (its address is known, or will never be and SWIM
    /// should find it unreachable as it would any member): it may be probed from now on.
    public mutating func addressReady(_ id: String) {
        unaddressed.remove(id)
    }

    // MARK: - Inputs

    /// Adds members learnt elsewhere (peer lists, --join) as alive at incarnation 0 unless
    /// already held. Nothing is gossiped about them: their own messages carry the truth.
    public mutating func join(_ newIDs: [String], now: Duration) {
        for id in newIDs where id != selfID && table[id] == nil {
            add(id, .alive, 0, now: now)
        }
        if nextProbeAt == nil { nextProbeAt = now }
    }

    /// Advances time: ends the current probe period (suspects an unanswered member), sends
    /// indirect probes, starts the next probe, turns timed-out suspects dead, forgets the long dead.
    public mutating func tick(now: Duration) -> [SwimSend] {
        var out: [SwimSend] = []
        if nextProbeAt == nil { nextProbeAt = now }
        // Suspects whose time is up.
        while let d = suspicions.peek, d <= now {
            let e = suspicions.pop()!
            if let m = table[e.id], m.status == .suspect, m.incarnation == e.incarnation {
                apply(SwimUpdate(e.id, .dead, e.incarnation), now: now)
            }
        }
        // Indirect probes of the current target.
        if var o = outstanding, !o.indirectSent, now >= o.start + config.probeTimeout {
            o.indirectSent = true
            outstanding = o
            for helper in randomMembers(config.indirectProbes, excluding: o.target) {
                out.append(send(to: helper, SwimMessage(.probeRequest, seq: o.seq, target: o.target, incarnation: incarnation)))
                probeRequestsSent += 1
            }
        }
        // The next period.
        if let next = nextProbeAt, now >= next {
            if let o = outstanding {
                outstanding = nil
                if let m = table[o.target], m.status == .alive {
                    apply(SwimUpdate(o.target, .suspect, m.incarnation), now: now)
                }
            }
            nextProbeAt = now - next >= config.probeInterval ? now + config.probeInterval : next + config.probeInterval
            if let target = nextProbeTarget() {
                nextSeq()
                outstanding = Outstanding(target: target, seq: seq, start: now)
                out.append(send(to: target, SwimMessage(.probe, seq: seq, target: target, incarnation: incarnation)))
                probesSent += 1
            }
        }
        // Gossip pending updates (an unsolicited ack with sequence 0: updates only).
        if nextGossipAt.map({ now >= $0 }) ?? true {
            nextGossipAt = now + config.gossipInterval
            if !broadcasts.isEmpty {
                for member in randomMembers(config.gossipNodes, excluding: "") {
                    let g = send(to: member, SwimMessage(.ack, seq: 0, incarnation: incarnation))
                    if g.message.updates.isEmpty { break }
                    out.append(g)
                    gossipSent += 1
                }
            }
        }
        expireForwards(now: now)
        // Forget the long dead.
        while graveHead < graveyard.count, now - graveyard[graveHead].at >= config.deadRetention {
            let g = graveyard[graveHead]
            graveHead += 1
            if let m = table[g.id], m.status == .dead, m.incarnation == g.incarnation { remove(g.id) }
        }
        if graveHead > 1024, graveHead * 2 > graveyard.count {
            graveyard.removeFirst(graveHead)
            graveHead = 0
        }
        return out
    }

    /// Handles one decoded message from member `from`; returns what to send in answer.
    public mutating func receive(_ m: SwimMessage, from: String, now: Duration) -> [SwimSend] {
        guard from != selfID else { ignored += 1; return [] }
        var out: [SwimSend] = []
        // The sender lives at its incarnation (unless we hold it dead at >= that: then tell it).
        var toldDead: SwimUpdate?
        if let held = table[from], held.status == .dead, held.incarnation >= m.incarnation {
            toldDead = SwimUpdate(from, .dead, held.incarnation)
        } else {
            apply(SwimUpdate(from, .alive, m.incarnation), now: now)
        }
        for u in m.updates { apply(u, now: now) }
        switch m.kind {
        case .probe:
            guard m.target == selfID else { ignored += 1; return [] }
            var ack = SwimMessage(.ack, seq: m.seq, incarnation: incarnation)
            if let t = toldDead { ack.updates = [t] }
            out.append(send(to: from, ack))
        case .ack:
            if m.seq == 0 {
                // Gossip: only its updates count (applied above).
            } else if let o = outstanding, o.seq == m.seq, o.target == from {
                outstanding = nil
                acksReceived += 1
            } else if let f = forwards.removeValue(forKey: m.seq), f.target == from {
                out.append(send(to: f.requester, SwimMessage(.indirectAck, seq: f.seq, target: f.target, incarnation: incarnation)))
            } else {
                ignored += 1
            }
        case .probeRequest:
            guard m.target != selfID, m.target != from, forwards.count < config.maxForwards else {
                // Asked to probe ourselves: we are alive, answer directly.
                if m.target == selfID {
                    out.append(send(to: from, SwimMessage(.indirectAck, seq: m.seq, target: selfID, incarnation: incarnation)))
                } else {
                    ignored += 1
                }
                return out
            }
            nextSeq()
            forwards[seq] = Forward(requester: from, seq: m.seq, target: m.target, deadline: now + config.probeTimeout)
            forwardOrder.append(seq)
            out.append(send(to: m.target, SwimMessage(.probe, seq: seq, target: m.target, incarnation: incarnation)))
        case .indirectAck:
            if let o = outstanding, o.seq == m.seq, o.target == m.target {
                outstanding = nil
                acksReceived += 1
            } else {
                ignored += 1
            }
        }
        return out
    }

    // MARK: - Updates

    /// Applies one update under the incarnation rules; records events and gossips what changed.
    private mutating func apply(_ u: SwimUpdate, now: Duration) {
        if u.member == selfID {
            // Refute suspect/dead at our incarnation or above (older rumours are already
            // refuted), and alive above it (memberlist).
            if (u.status != .alive && u.incarnation >= incarnation) || u.incarnation > incarnation {
                incarnation = max(incarnation, u.incarnation) &+ 1
                refutations += 1
                enqueue(SwimUpdate(selfID, .alive, incarnation))
            }
            return
        }
        guard let held = table[u.member] else {
            // Unknown: alive adds it; suspect or dead about someone unknown is ignored
            // (memberlist), except dead is not worth holding either.
            if u.status == .alive {
                guard !u.member.isEmpty, u.member.utf8.count <= SwimState.maxIDBytes else { ignored += 1; return }
                add(u.member, .alive, u.incarnation, now: now)
                enqueue(u)
            }
            return
        }
        switch (u.status, held.status) {
        case (.alive, .alive), (.alive, .suspect):
            guard u.incarnation > held.incarnation else { return }
        case (.alive, .dead):
            guard u.incarnation > held.incarnation else { return }
        case (.suspect, .alive):
            guard u.incarnation >= held.incarnation else { return }
        case (.suspect, .suspect):
            guard u.incarnation > held.incarnation else { return }
        case (.suspect, .dead):
            return
        case (.dead, .alive), (.dead, .suspect):
            guard u.incarnation >= held.incarnation else { return }
        case (.dead, .dead):
            return
        }
        set(u.member, u.status, u.incarnation, now: now)
        enqueue(u)
    }

    private mutating func add(_ id: String, _ status: SwimStatus, _ inc: UInt32, now: Duration) {
        guard table.count < config.maxMembers else { ignored += 1; return }
        table[id] = Entry(since: now, incarnation: inc, slot: Int32(ids.count), status: status)
        ids.append(id)
        bump(status, +1)
        // A random place in the probe list (memberlist): append, then swap.
        probeList.append(id)
        let j = Int.random(in: 0..<probeList.count, using: &rng)
        probeList.swapAt(j, probeList.count - 1)
        events.append(SwimEvent(member: id, status: status, incarnation: inc, at: now))
        if status == .suspect { startSuspicion(id, inc, now: now) }
        if status == .dead { graveyard.append((id, inc, now)) }
        if awaitAddresses {
            unaddressed.insert(id)
            newMembers.append(id)
        }
    }

    private mutating func set(_ id: String, _ status: SwimStatus, _ inc: UInt32, now: Duration) {
        guard var m = table[id] else { return }
        let changed = m.status != status
        if changed {
            bump(m.status, -1)
            bump(status, +1)
            m.since = now
        }
        m.status = status
        m.incarnation = inc
        table[id] = m
        if changed || status != .alive {
            events.append(SwimEvent(member: id, status: status, incarnation: inc, at: now))
        }
        if status == .suspect { startSuspicion(id, inc, now: now) }
        if status == .dead {
            graveyard.append((id, inc, now))
            if outstanding?.target == id { outstanding = nil }
        }
    }

    private mutating func remove(_ id: String) {
        guard let m = table.removeValue(forKey: id) else { return }
        let i = Int(m.slot)
        bump(m.status, -1)
        unaddressed.remove(id)
        let last = ids.removeLast()
        if i < ids.count {
            ids[i] = last
            table[last]?.slot = Int32(i)
        }
        // The probe list drops it at the next reshuffle; nextProbeTarget skips it meanwhile.
    }

    private mutating func bump(_ s: SwimStatus, _ d: Int) {
        switch s {
        case .alive: counts.alive += d
        case .suspect: counts.suspect += d
        case .dead: counts.dead += d
        }
    }

    private mutating func startSuspicion(_ id: String, _ inc: UInt32, now: Duration) {
        suspicions.push(now + suspicionTimeout, id: id, incarnation: inc)
    }

    // MARK: - Probing

    /// The next sequence number; 0 is never used (it marks gossip).
    private mutating func nextSeq() {
        seq &+= 1
        if seq == 0 { seq = 1 }
    }

    private mutating func nextProbeTarget() -> String? {
        for _ in 0..<2 {
            while probeIndex < probeList.count {
                let id = probeList[probeIndex]
                probeIndex += 1
                // Not yet addressed: passed over this round (see the header).
                if let m = table[id], m.status != .dead, hasAddress(id) { return id }
            }
            // End of a round: rebuild from the members not dead, reshuffle.
            probeList = ids.filter { table[$0]?.status != .dead }
            probeList.shuffle(using: &rng)
            probeIndex = 0
            if probeList.isEmpty { return nil }
        }
        return nil
    }

    /// Up to `k` distinct random members, alive, neither self nor `excluding`.
    private mutating func randomMembers(_ k: Int, excluding: String) -> [String] {
        var chosen: [String] = []
        guard k > 0, !ids.isEmpty else { return chosen }
        var tries = 0
        while chosen.count < k, tries < 4 * k + 8 {
            tries += 1
            let id = ids[Int.random(in: 0..<ids.count, using: &rng)]
            if id == excluding || chosen.contains(id) || table[id]?.status != .alive || !hasAddress(id) { continue }
            chosen.append(id)
        }
        return chosen
    }

    private mutating func expireForwards(now: Duration) {
        while forwardHead < forwardOrder.count {
            let s = forwardOrder[forwardHead]
            if let f = forwards[s], f.deadline > now { break }
            forwards.removeValue(forKey: s)
            forwardHead += 1
        }
        if forwardHead > 256, forwardHead * 2 > forwardOrder.count {
            forwardOrder.removeFirst(forwardHead)
            forwardHead = 0
        }
    }

    // MARK: - Piggybacking

    private mutating func enqueue(_ u: SwimUpdate) {
        broadcastVersion &+= 1
        broadcasts[u.member] = Broadcast(update: u, transmits: 0, version: broadcastVersion)
        buckets[0].append((u.member, broadcastVersion))
    }

    /// `message` to `to` with updates piggybacked (fewest-sent first, newest first among equals).
    private mutating func send(to: String, _ message: SwimMessage) -> SwimSend {
        var m = message
        // A member we hold suspect is told so directly on everything we send it (memberlist
        // does the same): it refutes at once instead of waiting for the rumour to reach it.
        if let t = table[to], t.status == .suspect, !m.updates.contains(where: { $0.member == to }) {
            m.updates.insert(SwimUpdate(to, .suspect, t.incarnation), at: 0)
        }
        var budget = config.maxUpdateBytes - m.updates.reduce(0) { $0 + $1.encodedSize }
        let limit = max(1, config.retransmitLimit(members: liveCount))
        var taken: [(String, Int)] = []
        var skipped: [(Int, (id: String, version: UInt64))] = []
        var b = 0
        while b < buckets.count, m.updates.count < config.maxPiggyback {
            guard let e = buckets[b].popLast() else { b += 1; continue }
            guard let cast = broadcasts[e.id], cast.version == e.version, cast.transmits == b else { continue }
            if cast.update.encodedSize > budget || m.updates.contains(where: { $0.member == e.id }) {
                skipped.append((b, e))
                continue
            }
            budget -= cast.update.encodedSize
            m.updates.append(cast.update)
            taken.append((e.id, cast.transmits + 1))
        }
        for (b, e) in skipped { buckets[b].append(e) }
        for (id, t) in taken {
            guard var cast = broadcasts[id] else { continue }
            if t >= limit {
                broadcasts.removeValue(forKey: id)
                continue
            }
            cast.transmits = t
            broadcasts[id] = cast
            while buckets.count <= t { buckets.append([]) }
            buckets[t].append((id, cast.version))
        }
        return SwimSend(to: to, message: m)
    }
}

/// A binary min-heap of suspicion deadlines.
struct DeadlineHeap: Sendable {
    struct Entry: Sendable { var deadline: Duration; var id: String; var incarnation: UInt32 }
    private var a: [Entry] = []

    var peek: Duration? { a.first?.deadline }
    var count: Int { a.count }

    mutating func push(_ d: Duration, id: String, incarnation: UInt32) {
        a.append(Entry(deadline: d, id: id, incarnation: incarnation))
        var i = a.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if a[p].deadline <= a[i].deadline { break }
            a.swapAt(p, i)
            i = p
        }
    }

    mutating func pop() -> Entry? {
        guard !a.isEmpty else { return nil }
        a.swapAt(0, a.count - 1)
        let top = a.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < a.count, a[l].deadline < a[m].deadline { m = l }
            if r < a.count, a[r].deadline < a[m].deadline { m = r }
            if m == i { break }
            a.swapAt(i, m)
            i = m
        }
        return top
    }
}
