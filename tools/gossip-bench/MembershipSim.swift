// membership-sim: an in-process, single-threaded discrete-event simulator of the membership
// and averaging logic at scale (issue 11 item 7). Virtual time, one priority queue of events,
// no sockets, no clocks, no threads: the same seed gives the same run.
//
// What runs is the peer's own logic, not a model of it:
// - membership: a `SimMembership` (the seam); `MembershipSimSwim.swift` plugs GossipNode's SWIM
//   state machine (`SwimState`, Sources/GossipNode/Swim.swift) into it. Every member holds one,
//   the simulator delivers what it sends after a network delay (or drops it) and ticks it.
// - averaging: GossipML's `Averaging` kernels (the exact float32 rule of SPEC §5.3) for the
//   synchronous pairwise exchange, and GossipNode's `PushSumLedger` (SPEC §5.5) for push-sum.
//   The model is a small vector per member (default 16 floats, random initial values): the
//   question is how fast the averaging agrees, not training.
//
// Network model: every message gets an independent delay drawn uniformly from
// [latency-min, latency-max] and is lost with probability `loss`; a crashed member neither
// sends nor answers, and messages to it vanish. Members are given the full member list at
// time 0 (a converged start; joining at scale is what n2's real-process bench measures).
//
// Cost: O(events × log(queued events)) for the engine, plus what the membership logic costs
// per call. Events are 32-byte values in a binary heap; message payloads sit in pools indexed
// by the event, so the heap never moves them.

import GossipML
import GossipNode

/// A member's view of another member, as the simulator tracks it from the logic's changes.
enum SimStatus: Sendable, Equatable { case alive, suspect, dead }

/// The seam between the engine and a membership protocol: a pure state machine driven with
/// virtual time. Sends are appended to `sends` (destination id, message).
protocol SimMembership {
    associatedtype Message
    /// Called once at time 0 with every other member's id.
    mutating func simJoin(_ ids: [String], now: Duration, sends: inout [(String, Message)])
    /// Timers: probes, timeouts, suspicion expiry.
    mutating func simTick(now: Duration, sends: inout [(String, Message)])
    /// One message from `from`.
    mutating func simReceive(_ m: Message, from: String, now: Duration, sends: inout [(String, Message)])
    /// Status changes since the last call: (member id, new status), in order.
    mutating func simTakeChanges(into changes: inout [(String, SimStatus)])
    /// The latest virtual time by which `simTick` must be called again (nil: none pending).
    var simNextDeadline: Duration? { get }
}

/// The simulator's settings.
struct MembershipSimOptions: Sendable {
    var members = 100
    var seed: UInt64 = 1
    var latencyMinMs = 1.0
    var latencyMaxMs = 10.0
    var loss = 0.0
    /// Members crashed, one every `killSpacingS` from `killAtS`.
    var kills = 5
    var killAtS = 20.0
    var killSpacingS = 1.0
    /// The run ends at this virtual time, or earlier once every crash was detected by every
    /// surviving member, both averagings agree, and `minDurationS` has passed.
    var durationS = 120.0
    var minDurationS = 60.0
    /// The probe period of the membership logic (for the false-positive rate's member-periods).
    var periodMs = 1000.0
    /// One averaging round: every member starts one sync exchange and one push per round.
    var roundMs = 1000.0
    /// An exchange or push not answered within this is given up.
    var exchangeTimeoutMs = 2000.0
    /// Floats per model.
    var dim = 16
    /// Agreement: every live model within this relative L2 distance of the live members' mean.
    var tolerance = 0.01
}

/// What one run measured.
struct MembershipSimResult: Sendable {
    var members = 0
    var simulatedS = 0.0
    var wallS = 0.0
    var events = 0
    /// Per crashed member: seconds from the crash until every surviving member marked it dead
    /// (nil: not by the end of the run).
    var detectAll: [Double?] = []
    /// Per (surviving member, crashed member): seconds until that member marked it dead.
    var detectEach: [Double] = []
    /// Per crashed member: seconds until the first member marked it dead.
    var detectFirst: [Double] = []
    /// Live members marked dead by at least one member, and all such declarations.
    var falseDeadMembers = 0
    var falseDeadDeclarations = 0
    /// Live members marked suspect (declarations), all refuted or not.
    var falseSuspicions = 0
    /// Members × probe periods simulated (before each member's crash, if any).
    var memberPeriods = 0.0
    var membershipMessages = 0
    var membershipMessagesLost = 0
    var averagingMessages = 0
    /// Rounds until every live model is within the tolerance of the live mean (nil: never).
    var syncRounds: Int?
    var pushSumRounds: Int?
    /// The largest relative distance at the end (after the last round measured).
    var syncFinalSpread = 0.0
    var pushSumFinalSpread = 0.0
    var exchangesDone = 0, exchangesBusy = 0, exchangesTimedOut = 0
    var pushesConfirmed = 0, pushesRefused = 0, pushesUnconfirmed = 0
}

/// One event: 32 bytes, ordered by (time, seq) so that equal times keep their scheduling order.
struct SimEvent {
    var time: Int64
    var seq: UInt64
    var kind: Kind
    var a: Int32
    var b: Int32
    var c: Int32

    enum Kind: UInt8 {
        case deliverMembership   // a = to, b = from, c = membership pool slot
        case tick                // a = member (stale unless it is the member's next tick)
        case join                // a = member: it is given every other member's id
        case crash               // a = member
        case round               // a = member: start a sync exchange and a push
        case syncRequest         // a = to, b = from, c = exchange id
        case syncReply           // a = to, b = from, c = avg pool slot (empty model: busy)
        case syncTimeout         // a = member, c = exchange id
        case pushRequest         // a = to, b = from, c = avg pool slot (model + mass)
        case pushReply           // a = to, b = from, c = 1 accepted, 0 refused
        case pushTimeout         // a = member, b = target
        case check               // a = round number
    }

    @inline(__always) static func < (l: SimEvent, r: SimEvent) -> Bool {
        l.time != r.time ? l.time < r.time : l.seq < r.seq
    }
}

/// A binary min-heap of events.
struct SimEventQueue {
    private(set) var heap: [SimEvent] = []
    private var seq: UInt64 = 0
    var count: Int { heap.count }

    mutating func push(_ time: Int64, _ kind: SimEvent.Kind, _ a: Int32, _ b: Int32 = 0, _ c: Int32 = 0) {
        seq &+= 1
        heap.append(SimEvent(time: time, seq: seq, kind: kind, a: a, b: b, c: c))
        var i = heap.count - 1
        let e = heap[i]
        while i > 0 {
            let p = (i - 1) >> 1
            if !(e < heap[p]) { break }
            heap[i] = heap[p]
            i = p
        }
        heap[i] = e
    }

    mutating func pop() -> SimEvent? {
        guard let top = heap.first else { return nil }
        let last = heap.removeLast()
        if heap.isEmpty { return top }
        let n = heap.count
        var i = 0
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            let r = l + 1
            let m = (r < n && heap[r] < heap[l]) ? r : l
            if !(heap[m] < last) { break }
            heap[i] = heap[m]
            i = m
        }
        heap[i] = last
        return top
    }
}

/// A pool of values indexed by Int32, with a free list.
struct SimPool<T> {
    private var slots: [T?] = []
    private var free: [Int32] = []
    mutating func put(_ v: T) -> Int32 {
        if let i = free.popLast() { slots[Int(i)] = v; return i }
        slots.append(v)
        return Int32(slots.count - 1)
    }
    mutating func take(_ i: Int32) -> T {
        let v = slots[Int(i)]!
        slots[Int(i)] = nil
        free.append(i)
        return v
    }
}

/// The simulator: N members, each with its membership logic and two models (one per averaging).
struct MembershipSimulator<L: SimMembership> {
    let o: MembershipSimOptions
    let n: Int
    let ids: [String]
    private var index: [String: Int32] = [:]
    private var logic: [L]
    private var queue = SimEventQueue()
    private var rng: SeededGenerator
    private var membershipPool = SimPool<L.Message>()
    private var avgPool = SimPool<AvgPayload>()
    private var sends: [(String, L.Message)] = []
    private var changes: [(String, SimStatus)] = []

    private var crashed: [Bool]
    /// The time of each member's pending tick (.max: none): ticks follow `simNextDeadline`.
    private var tickAt: [Int64]
    private var crashTime: [Int64]
    /// Members each member has marked dead (partners are never chosen among them).
    private var believedDead: [Set<Int32>]
    /// Victim number per member (-1: never crashed) and their kill times.
    private var victimOf: [Int32]
    private var victims: [Int32] = []
    private var victimKill: [Int64] = []
    private var seenDead: [[Bool]] = []
    private var seenDeadCount: [Int] = []
    private var detectAllAt: [Int64?] = []
    private var firstDeadAt: [Int64?] = []
    private var survivors = 0
    private var falseDeadSet = Set<Int32>()

    // Sync pairwise averaging (SPEC §5.3): models, the exchange in flight per member.
    private var syncModel: [Float]
    private var syncPending: [Int32]     // exchange id, -1 none
    private var nextExchange: Int32 = 0
    // Push-sum (SPEC §5.5): the de-biased models, the ledgers, the snapshots of pushes in flight.
    private var pushModel: [Float]
    private var ledgers: [PushSumLedger]
    private var pushSnapshots: [[Int32: [Float]]]
    private var averagingDone = false

    private(set) var result = MembershipSimResult()

    /// An averaging message's payload: a model, a mass (push-sum) and the exchange id (sync).
    struct AvgPayload {
        var model: [Float]
        var mass: Double
        var exchange: Int32
    }

    /// Milliseconds to nanoseconds of virtual time.
    private func ns(_ ms: Double) -> Int64 { Int64((ms * 1e6).rounded()) }

    /// `make(i, id)` builds member i's membership logic.
    init(options: MembershipSimOptions, make: (Int, String) -> L) {
        o = options
        n = options.members
        let names = (0..<options.members).map { memberID($0) }
        ids = names
        for (i, id) in names.enumerated() { index[id] = Int32(i) }
        logic = (0..<options.members).map { make($0, names[$0]) }
        rng = SeededGenerator(seed: options.seed ^ 0x6D65_6D62_6572)   // "member"
        crashed = Array(repeating: false, count: n)
        tickAt = Array(repeating: .max, count: n)
        crashTime = Array(repeating: .max, count: n)
        believedDead = Array(repeating: [], count: n)
        victimOf = Array(repeating: -1, count: n)
        syncModel = Array(repeating: 0, count: n * options.dim)
        pushModel = syncModel
        syncPending = Array(repeating: -1, count: n)
        ledgers = Array(repeating: PushSumLedger(rows: 1), count: n)
        pushSnapshots = Array(repeating: [:], count: n)
        // Initial models: uniform in [0, 2) per float, the same for both averagings.
        var mrng = SeededGenerator(seed: options.seed ^ 0x6D6F_6465_6C)       // "model"
        for i in 0..<syncModel.count { syncModel[i] = 2 * mrng.nextFloat() }
        pushModel = syncModel
    }

    /// Runs to the end and returns the measurements.
    mutating func run() -> MembershipSimResult {
        let t0 = now()
        result.members = n
        let kills = min(o.kills, n - 2)
        // Victims: distinct random members, crashed one every killSpacing from killAt.
        var order = Array(0..<n)
        rng.shuffle(&order)
        for k in 0..<max(0, kills) {
            let v = Int32(order[k])
            victimOf[Int(v)] = Int32(k)
            victims.append(v)
            let at = ns(1000 * (o.killAtS + Double(k) * o.killSpacingS))
            victimKill.append(at)
            queue.push(at, .crash, v)
        }
        survivors = n - victims.count
        seenDead = Array(repeating: Array(repeating: false, count: n), count: victims.count)
        seenDeadCount = Array(repeating: 0, count: victims.count)
        detectAllAt = Array(repeating: nil, count: victims.count)
        firstDeadAt = Array(repeating: nil, count: victims.count)

        // Time 0: everyone knows everyone. Each member joins at a random instant of the first
        // probe period (so probes are not in lockstep); averaging rounds start at random phases.
        let round = max(1, ns(o.roundMs)), period = max(1, ns(o.periodMs))
        for i in 0..<n {
            queue.push(Int64(rng.nextInt(below: Int(period))), .join, Int32(i))
            queue.push(Int64(rng.nextInt(below: Int(round))), .round, Int32(i))
        }
        queue.push(round, .check, 1)

        let end = ns(1000 * o.durationS), minEnd = ns(1000 * o.minDurationS)
        var t: Int64 = 0
        while let e = queue.pop() {
            if e.time > end { break }
            t = e.time
            result.events += 1
            handle(e, round: round)
            if t >= minEnd && averagingDone && detectAllAt.allSatisfy({ $0 != nil }) && e.kind == .check { break }
        }
        finish(at: t)
        result.wallS = now() - t0
        return result
    }

    private mutating func handle(_ e: SimEvent, round: Int64) {
        let t = e.time
        switch e.kind {
        case .deliverMembership:
            let m = membershipPool.take(e.c)
            let to = Int(e.a)
            guard !crashed[to] else { return }
            sends.removeAll(keepingCapacity: true)
            logic[to].simReceive(m, from: ids[Int(e.b)], now: .nanoseconds(t), sends: &sends)
            dispatchSends(from: e.a, at: t)
            collectChanges(of: e.a, at: t)
            scheduleTick(e.a, after: t)
        case .tick:
            let i = Int(e.a)
            guard !crashed[i], tickAt[i] == t else { return }
            tickAt[i] = .max
            sends.removeAll(keepingCapacity: true)
            logic[i].simTick(now: .nanoseconds(t), sends: &sends)
            dispatchSends(from: e.a, at: t)
            collectChanges(of: e.a, at: t)
            scheduleTick(e.a, after: t)
        case .join:
            var others = ids
            others.remove(at: Int(e.a))
            sends.removeAll(keepingCapacity: true)
            logic[Int(e.a)].simJoin(others, now: .nanoseconds(t), sends: &sends)
            dispatchSends(from: e.a, at: t)
            collectChanges(of: e.a, at: t)
            scheduleTick(e.a, after: t - 1)
        case .crash:
            crashed[Int(e.a)] = true
            crashTime[Int(e.a)] = t
        case .round:
            guard !crashed[Int(e.a)], !averagingDone else { return }
            startSync(e.a, at: t)
            startPush(e.a, at: t)
            queue.push(t + round, .round, e.a)
        case .syncRequest: syncRequest(to: e.a, from: e.b, id: e.c, at: t)
        case .syncReply: syncReply(to: e.a, from: e.b, slot: e.c)
        case .syncTimeout:
            if syncPending[Int(e.a)] == e.c {
                syncPending[Int(e.a)] = -1
                result.exchangesTimedOut += 1
            }
        case .pushRequest: pushRequest(to: e.a, from: e.b, slot: e.c, at: t)
        case .pushReply: pushReply(to: e.a, from: e.b, accepted: e.c == 1)
        case .pushTimeout:
            let i = Int(e.a), target = ids[Int(e.b)]
            if ledgers[i].inFlight[target] != nil {
                ledgers[i].pushUnconfirmed(to: target)
                pushSnapshots[i][e.b] = nil
                result.pushesUnconfirmed += 1
            }
        case .check:
            if !averagingDone { check(roundNumber: Int(e.a)) }
            queue.push(t + round, .check, e.a + 1)
        }
    }

    // MARK: membership

    /// Schedules member i's next tick at its logic's deadline (at least 1 ns after `t`).
    private mutating func scheduleTick(_ i: Int32, after t: Int64) {
        guard let d = logic[Int(i)].simNextDeadline else { return }
        let c = d.components
        let at = max(t + 1, c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000)
        if at < tickAt[Int(i)] {
            tickAt[Int(i)] = at
            queue.push(at, .tick, i)
        }
    }

    private mutating func dispatchSends(from: Int32, at t: Int64) {
        for (to, m) in sends {
            result.membershipMessages += 1
            guard let j = index[to] else { continue }
            if o.loss > 0 && rng.nextDouble() < o.loss {
                result.membershipMessagesLost += 1
                continue
            }
            queue.push(t + delay(), .deliverMembership, j, from, membershipPool.put(m))
        }
    }

    private mutating func delay() -> Int64 {
        let lo = ns(o.latencyMinMs), hi = ns(o.latencyMaxMs)
        return hi > lo ? lo + Int64(rng.nextInt(below: Int(hi - lo + 1))) : lo
    }

    private mutating func collectChanges(of observer: Int32, at t: Int64) {
        changes.removeAll(keepingCapacity: true)
        logic[Int(observer)].simTakeChanges(into: &changes)
        for (id, status) in changes {
            guard let target = index[id], target != observer else { continue }
            let ti = Int(target)
            switch status {
            case .dead:
                believedDead[Int(observer)].insert(target)
                if crashed[ti] {
                    let v = Int(victimOf[ti])
                    if v >= 0 && !seenDead[v][Int(observer)] {
                        seenDead[v][Int(observer)] = true
                        if firstDeadAt[v] == nil { firstDeadAt[v] = t }
                        if victimOf[Int(observer)] < 0 {
                            result.detectEach.append(Double(t - victimKill[v]) / 1e9)
                            seenDeadCount[v] += 1
                            if seenDeadCount[v] == survivors { detectAllAt[v] = t }
                        }
                    }
                } else {
                    result.falseDeadDeclarations += 1
                    falseDeadSet.insert(target)
                }
            case .suspect:
                if !crashed[ti] { result.falseSuspicions += 1 }
            case .alive:
                believedDead[Int(observer)].remove(target)
            }
        }
    }

    /// A random member `i` believes alive (suspects included, as the peer does), or nil.
    private mutating func partner(of i: Int32) -> Int32? {
        let dead = believedDead[Int(i)]
        guard n - 1 - dead.count > 0 else { return nil }
        for _ in 0..<64 {
            let j = Int32(rng.nextInt(below: n))
            if j != i && !dead.contains(j) { return j }
        }
        return nil
    }

    // MARK: sync pairwise averaging (SPEC §5.3; both sides end with the same average)

    private mutating func startSync(_ i: Int32, at t: Int64) {
        guard syncPending[Int(i)] < 0, let j = partner(of: i) else { return }
        nextExchange &+= 1
        syncPending[Int(i)] = nextExchange
        send(t, .syncRequest, j, i, nextExchange)
        queue.push(t + ns(o.exchangeTimeoutMs), .syncTimeout, i, 0, nextExchange)
    }

    private mutating func syncRequest(to j: Int32, from i: Int32, id: Int32, at t: Int64) {
        guard !crashed[Int(j)] else { return }
        // The initiator's model cannot change while its exchange is pending (it refuses
        // others meanwhile), so reading it now is reading the snapshot it sent.
        guard syncPending[Int(j)] < 0 else {
            result.exchangesBusy += 1
            send(t, .syncReply, i, j, avgPool.put(AvgPayload(model: [], mass: 0, exchange: id)))
            return
        }
        let d = o.dim, a = Int(j) * d, b = Int(i) * d
        syncModel.withUnsafeMutableBufferPointer { m in
            let own = UnsafeMutableBufferPointer(rebasing: m[a..<a + d])
            Averaging.weightedAverage(into: own, weight: 1, other: UnsafeBufferPointer(rebasing: m[b..<b + d]), weight: 1)
        }
        send(t, .syncReply, i, j, avgPool.put(AvgPayload(model: Array(syncModel[a..<a + d]), mass: 1, exchange: id)))
    }

    private mutating func syncReply(to i: Int32, from j: Int32, slot: Int32) {
        _ = j
        let payload = avgPool.take(slot)
        // A reply to an exchange already given up (timed out) installs nothing.
        guard !crashed[Int(i)], syncPending[Int(i)] == payload.exchange else { return }
        syncPending[Int(i)] = -1
        guard !payload.model.isEmpty else { return }   // busy: try again next round
        let a = Int(i) * o.dim
        syncModel.replaceSubrange(a..<a + o.dim, with: payload.model)
        result.exchangesDone += 1
    }

    // MARK: push-sum (SPEC §5.5: half the mass and the de-biased model, merged by mass)

    private mutating func startPush(_ i: Int32, at t: Int64) {
        guard let j = partner(of: i) else { return }
        switch ledgers[Int(i)].beginPush(to: ids[Int(j)]) {
        case .send(let mass):
            let a = Int(i) * o.dim
            let snapshot = Array(pushModel[a..<a + o.dim])
            pushSnapshots[Int(i)][j] = snapshot
            send(t, .pushRequest, j, i, avgPool.put(AvgPayload(model: snapshot, mass: mass, exchange: 0)))
            queue.push(t + ns(o.exchangeTimeoutMs), .pushTimeout, i, j)
        case .lose, .skip: return
        }
    }

    private mutating func pushRequest(to j: Int32, from i: Int32, slot: Int32, at t: Int64) {
        let p = avgPool.take(slot)
        guard !crashed[Int(j)] else { return }
        switch ledgers[Int(j)].receive(p.mass) {
        case .accept(let own, let used, _):
            merge(into: j, own: own, incoming: p.model, weight: used)
            send(t, .pushReply, i, j, 1)
        case .refuse:
            send(t, .pushReply, i, j, 0)
        }
    }

    private mutating func pushReply(to i: Int32, from j: Int32, accepted: Bool) {
        guard !crashed[Int(i)] else { return }
        let target = ids[Int(j)]
        guard ledgers[Int(i)].inFlight[target] != nil else { return }   // timed out already
        let snapshot = pushSnapshots[Int(i)].removeValue(forKey: j)
        if accepted {
            ledgers[Int(i)].pushConfirmed(to: target)
            result.pushesConfirmed += 1
        } else {
            let own = ledgers[Int(i)].mass
            if let m = ledgers[Int(i)].pushRefused(to: target), let snapshot {
                merge(into: i, own: own, incoming: snapshot, weight: m)
            }
            result.pushesRefused += 1
        }
    }

    private mutating func merge(into j: Int32, own: Double, incoming: [Float], weight: Double) {
        let a = Int(j) * o.dim, d = o.dim
        pushModel.withUnsafeMutableBufferPointer { m in
            incoming.withUnsafeBufferPointer { inc in
                Averaging.weightedAverage(into: UnsafeMutableBufferPointer(rebasing: m[a..<a + d]), weight: own,
                                          other: inc, weight: weight)
            }
        }
    }

    /// Schedules an averaging message after a network delay, or drops it.
    private mutating func send(_ t: Int64, _ kind: SimEvent.Kind, _ to: Int32, _ from: Int32, _ c: Int32) {
        result.averagingMessages += 1
        if o.loss > 0 && rng.nextDouble() < o.loss {
            if kind == .syncReply || kind == .pushRequest { _ = avgPool.take(c) }
            return
        }
        queue.push(t + delay(), kind, to, from, c)
    }

    // MARK: agreement

    /// The largest relative L2 distance of a live model from the live members' mean.
    private func spread(_ models: [Float]) -> Double {
        let d = o.dim
        var mean = [Double](repeating: 0, count: d)
        var live = 0
        for i in 0..<n where !crashed[i] {
            live += 1
            for k in 0..<d { mean[k] += Double(models[i * d + k]) }
        }
        guard live > 0 else { return 0 }
        let meanF = mean.map { Float($0 / Double(live)) }
        var worst = 0.0
        models.withUnsafeBufferPointer { m in
            meanF.withUnsafeBufferPointer { mp in
                for i in 0..<n where !crashed[i] {
                    worst = max(worst, Averaging.relativeL2Distance(mp, UnsafeBufferPointer(rebasing: m[i * d..<(i + 1) * d])))
                }
            }
        }
        return worst
    }

    private mutating func check(roundNumber r: Int) {
        let s = spread(syncModel), p = spread(pushModel)
        result.syncFinalSpread = s
        result.pushSumFinalSpread = p
        if result.syncRounds == nil && s <= o.tolerance { result.syncRounds = r }
        if result.pushSumRounds == nil && p <= o.tolerance { result.pushSumRounds = r }
        if result.syncRounds != nil && result.pushSumRounds != nil { averagingDone = true }
    }

    private mutating func finish(at t: Int64) {
        result.simulatedS = Double(t) / 1e9
        result.detectAll = detectAllAt.enumerated().map { k, at in at.map { Double($0 - victimKill[k]) / 1e9 } }
        result.detectFirst = firstDeadAt.enumerated().compactMap { k, at in at.map { Double($0 - victimKill[k]) / 1e9 } }
        result.falseDeadMembers = falseDeadSet.count
        var alive = 0.0
        for i in 0..<n { alive += Double(min(t, crashTime[i])) / 1e9 }
        result.memberPeriods = alive / (o.periodMs / 1000)
    }
}

/// Member i's id: an endpoint in 10.0.0.0/8, all on port 7000.
func memberID(_ i: Int) -> String {
    let k = i + 1
    return "10.\((k >> 16) & 255).\((k >> 8) & 255).\(k & 255):7000"
}
