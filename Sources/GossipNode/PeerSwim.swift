// SWIM in the peer (SPEC §5.10): the driver that runs the pure state machine (Swim.swift) on a
// UDP socket bound to the TCP listener's port, seals datagrams with the network key
// (DatagramSeal, §13.13), and makes SWIM the source of truth for liveness: a member SWIM
// declares dead leaves the peer table (and the status `peers`), a member SWIM learns alive
// joins it, and every peer the table learns by other paths (Register replies, exchange peer
// lists, --join) is fed to SWIM once per probe period.
//
// Threads: the state machine, the seal's replay cache, the address cache and the socket are
// touched only on `queue` (one serial queue); the node's core lock is taken from there, never
// the other way round (status reads a snapshot behind its own small lock). Host names are
// resolved on a thread of their own (SwimAddressResolver), never on `queue`: a slow name
// server must not stall the probing of every other member (SPEC §5.10, "In the node").
//
// Addresses: a member's id is HOST:PORT. A numeric host is parsed on `queue` when SWIM learns
// the member (no DNS). A name goes to the resolver and the member waits: SwimState does not
// probe it, nor ask it to probe, nor gossip to it, until `addressReady` (see Swim.swift's
// header: probing a member we cannot send to would spread a false suspicion of it).
// Datagrams SWIM addresses to it meanwhile (acks, forwarded probes) wait, at most
// `maxWaiting` of them, and leave when the answer comes. A name that does not resolve, or
// whose answer takes longer than the suspicion timeout, is then probed like any member: its
// probes go nowhere, so SWIM suspects it and declares it dead, as it does an unreachable
// member (and a live one refutes once it is reachable). A failed name is asked again when
// SWIM next sends to it, at most once per probe interval.
import Dispatch
import Foundation
import GossipNet
import GossipSecure
import GossipWire
import Logging
import Synchronization

/// Runs SWIM for one peer. `@unchecked Sendable`: mutable state only on `queue`; `snapshot`
/// behind its own Mutex.
final class SwimRunner: @unchecked Sendable {
    let queue = DispatchQueue(label: "gossip.swim")
    let selfID: String
    private var state: SwimState
    private var seal: DatagramSeal?
    private var socket: DatagramSocket?
    private var timer: DispatchSourceTimer?
    private let origin = ContinuousClock.now
    private var addresses: [String: DatagramAddress] = [:]
    /// Names being resolved: since when, whether SWIM already probes them (the answer took
    /// too long), and the datagrams waiting for the address.
    private struct Pending { var since: Duration; var released = false; var waiting: [[UInt8]] = [] }
    private var pending: [String: Pending] = [:]
    /// Names whose resolution failed, and when.
    private var failed: [String: Duration] = [:]
    private let resolver: SwimAddressResolver
    /// Most datagrams held for one name being resolved; most names being resolved at once.
    static let maxWaiting = 8
    static let maxPending = 1024
    private var suspects: Set<String> = []
    private var lastSync: Duration?
    private var dropped = 0
    private var stopped = false
    private let logger: Logger
    /// The peer table, for the once-per-period sync: returns the endpoints it lists.
    private let members: @Sendable () -> [String]
    /// Applies SWIM's verdicts to the peer table: (alive now, dead now).
    private let apply: @Sendable (_ alive: [String], _ dead: [String]) -> Void
    private let snapshot = Mutex(StatusReport.Swim())

    /// Binds the UDP socket (same host and port number as the TCP listener).
    /// - Throws: `NodeError` when the UDP port cannot be bound.
    /// - Parameter resolve: turns a host name into an address (nil: it does not resolve); runs
    ///   on the resolver's own thread and may block. Injectable so tests can play a slow one.
    init(selfID: String, host: String, port: UInt16, config: SwimConfig, networkKey: NetworkKey?, logger: Logger,
         resolve: @escaping SwimAddressResolver.Resolve = { try? DatagramAddress.resolve($0) },
         members: @escaping @Sendable () -> [String], apply: @escaping @Sendable ([String], [String]) -> Void) throws {
        self.selfID = selfID
        state = SwimState(selfID: selfID, config: config, seed: UInt64.random(in: 0...UInt64.max), awaitAddresses: true)
        seal = networkKey.map { DatagramSeal(networkKey: $0) }
        self.logger = logger
        self.members = members
        self.apply = apply
        let q = queue
        resolver = SwimAddressResolver(resolve: resolve, queue: q)
        do throws(RPCError) {
            socket = try DatagramSocket(host: host, port: port, maxDatagram: SwimBody.maxDatagramBytes, queue: q) { [weak self] bytes, _ in
                self?.handle(bytes)
            }
        } catch {
            throw NodeError("SWIM (SPEC §5.10): \(error.message)")
        }
        resolver.deliver = { [weak self] id, address in self?.resolved(id, address) }
        snapshot.withLock {
            $0.intervalMs = Int(config.probeInterval.seconds * 1000)
            $0.sealed = networkKey != nil
        }
    }

    private var now: Duration { ContinuousClock.now - origin }

    /// Starts reading and probing.
    func start() {
        socket?.start()
        queue.async { [self] in
            let t = DispatchSource.makeTimerSource(queue: queue)
            let step = max(Duration.milliseconds(10), min(.milliseconds(100), state.config.probeInterval / 10))
            let ns = Int(step.seconds * 1e9)
            t.schedule(deadline: .now(), repeating: .nanoseconds(ns), leeway: .milliseconds(5))
            t.setEventHandler { [weak self] in self?.onTimer() }
            timer = t
            t.resume()
        }
    }

    /// Stops probing and closes the socket. Idempotent.
    func stop() {
        queue.sync {
            guard !stopped else { return }
            stopped = true
            timer?.cancel()
            timer = nil
            socket?.close()
            resolver.stop()
            pending.removeAll()
        }
    }

    /// The `swim` object of status (a snapshot; never waits for the SWIM queue).
    var status: StatusReport.Swim { snapshot.withLock { $0 } }

    // MARK: - on `queue`

    private func onTimer() {
        guard !stopped else { return }
        let t = now
        if lastSync == nil || t - lastSync! >= state.config.probeInterval {
            lastSync = t
            state.join(members(), now: t)
        }
        learn()
        // A name whose answer is overdue: SWIM probes it now (its datagrams keep waiting for
        // the answer), so that a hung name server cannot keep a member from ever being suspected.
        let overdue = state.suspicionTimeout
        for (id, p) in pending where !p.released && t - p.since >= overdue {
            pending[id]?.released = true
            state.addressReady(id)
        }
        transmit(state.tick(now: t))
        afterChange()
    }

    private func handle(_ bytes: [UInt8]) {
        guard !stopped else { return }
        var frame = bytes
        if seal != nil {
            do throws(DatagramSealError) { frame = try seal!.open(bytes, nowMs: DatagramSeal.wallClockMs()) } catch {
                drop("datagram refused: \(error)")
                return
            }
        }
        let decoded: (body: MessageBody, seq: UInt32)
        do throws(WireError) { decoded = try SwimDatagram.decode(frame) } catch {
            drop("malformed SWIM datagram: \(error)")
            return
        }
        let kind: SwimMessage.Kind
        let b: SwimBody
        switch decoded.body {
        case .probe(let x): (kind, b) = (.probe, x)
        case .probeAck(let x): (kind, b) = (.ack, x)
        case .indirectProbe(let x): (kind, b) = (.probeRequest, x)
        case .indirectProbeAck(let x): (kind, b) = (.indirectAck, x)
        default: drop("not a SWIM message"); return
        }
        // Member ids are endpoints (SPEC §5.10): anything else is refused whole.
        guard Membership.isEndpoint(b.sender), b.target.isEmpty || Membership.isEndpoint(b.target),
              b.updates.allSatisfy({ Membership.isEndpoint($0.member) }) else {
            drop("SWIM datagram names a member that is not HOST:PORT")
            return
        }
        let updates = b.updates.map { SwimUpdate($0.member, SwimStatus(rawValue: $0.status) ?? .alive, $0.incarnation) }
        let m = SwimMessage(kind, seq: decoded.seq, target: b.target, incarnation: b.incarnation, updates: updates)
        let answers = state.receive(m, from: b.sender, now: now)
        learn()
        transmit(answers)
        afterChange()
    }

    private func drop(_ why: String) {
        dropped += 1
        if dropped <= 10 || dropped % 1000 == 0 { logger.debug("swim: \(why)", metadata: ["dropped": "\(dropped)"]) }
    }

    private func transmit(_ sends: [SwimSend]) {
        guard let socket else { return }
        for s in sends {
            let m = s.message
            func body(_ updates: [SwimUpdate]) -> MessageBody {
                let b = SwimBody(sender: selfID, incarnation: m.incarnation, target: m.target,
                                 updates: updates.map { SwimWireUpdate(status: $0.status.rawValue, incarnation: $0.incarnation, member: $0.member) })
                switch m.kind {
                case .probe: return .probe(b)
                case .ack: return .probeAck(b)
                case .probeRequest: return .indirectProbe(b)
                case .indirectAck: return .indirectProbeAck(b)
                }
            }
            var frame: [UInt8]
            do throws(WireError) { frame = try SwimDatagram.encode(body(m.updates), seq: m.seq) } catch {
                // Too large (long ids): send it without piggybacked updates rather than not at all.
                guard let f = try? SwimDatagram.encode(body([]), seq: m.seq) else { drop("cannot encode: \(error)"); continue }
                frame = f
            }
            if let seal { frame = seal.seal(frame, nowMs: DatagramSeal.wallClockMs()) }
            if let to = addresses[s.to] ?? numericAddress(s.to) {
                socket.send(frame, to: to)
            } else {
                wait(frame, for: s.to)
            }
        }
    }

    /// Gives the members SWIM learnt since the last call an address: a cached or numeric one
    /// at once (they may be probed at once), a host name through the resolver.
    private func learn() {
        for id in state.takeNewMembers() {
            if addresses[id] != nil || numericAddress(id) != nil {
                state.addressReady(id)
            } else {
                request(id)
            }
        }
    }

    /// The address of a member whose host is numeric (parsed, no DNS), cached; nil for a name.
    private func numericAddress(_ id: String) -> DatagramAddress? {
        guard let ep = try? Endpoint(parsing: id), let a = DatagramAddress.numeric(ep) else { return nil }
        cache(id, a)
        return a
    }

    private func cache(_ id: String, _ a: DatagramAddress) {
        if addresses.count >= 4096 { addresses.removeAll(keepingCapacity: true) }
        addresses[id] = a
    }

    /// Asks the resolver for `id`'s address unless it is asked already (or failed within the
    /// last probe interval, or too many are asked: then SWIM probes it and finds it unreachable).
    private func request(_ id: String) {
        guard pending[id] == nil else { return }
        if let f = failed[id], now - f < state.config.probeInterval {
            state.addressReady(id)
            return
        }
        guard pending.count < Self.maxPending, (try? Endpoint(parsing: id)) != nil else {
            state.addressReady(id)
            return
        }
        pending[id] = Pending(since: now)
        resolver.request(id)
    }

    /// Holds `frame` for `id` until its address is known (asking for it if nobody has).
    private func wait(_ frame: [UInt8], for id: String) {
        request(id)
        guard pending[id] != nil else { drop("cannot resolve \(id)"); return }
        if pending[id]!.waiting.count >= Self.maxWaiting {
            pending[id]!.waiting.removeFirst()
            drop("datagram for \(id) dropped while its name is resolved")
        }
        pending[id]!.waiting.append(frame)
    }

    /// The resolver's answer for `id` (on `queue`): sends what waited and lets SWIM probe it,
    /// or, when the name does not resolve, drops what waited and lets SWIM probe it anyway
    /// (it will find it unreachable).
    private func resolved(_ id: String, _ address: DatagramAddress?) {
        guard !stopped, let p = pending.removeValue(forKey: id) else { return }
        if let address {
            cache(id, address)
            failed[id] = nil
            for f in p.waiting { socket?.send(f, to: address) }
        } else {
            if failed.count >= 4096 { failed.removeAll(keepingCapacity: true) }
            failed[id] = now
            drop("cannot resolve \(id)")
            dropped += p.waiting.count
        }
        state.addressReady(id)
    }

    private func afterChange() {
        let events = state.takeEvents()
        if !events.isEmpty {
            var alive: [String] = [], dead: [String] = []
            for e in events {
                switch e.status {
                case .alive:
                    if suspects.remove(e.member) != nil {
                        logger.info("swim: suspicion refuted", metadata: ["member": "\(e.member)", "incarnation": "\(e.incarnation)"])
                    }
                    alive.append(e.member)
                case .suspect:
                    if suspects.insert(e.member).inserted {
                        logger.info("swim: member suspect", metadata: ["member": "\(e.member)", "incarnation": "\(e.incarnation)"])
                    }
                case .dead:
                    suspects.remove(e.member)
                    logger.notice("swim: member dead", metadata: ["member": "\(e.member)", "incarnation": "\(e.incarnation)"])
                    dead.append(e.member)
                }
            }
            // Removed at once from the peer table; SWIM's later alive (a refutation with a
            // higher incarnation) re-adds it.
            apply(alive, dead)
        }
        let c = state.counts
        let sent = socket?.sent.load(ordering: .relaxed) ?? 0
        let received = socket?.received.load(ordering: .relaxed) ?? 0
        let sendDropped = (socket?.sendDropped.load(ordering: .relaxed) ?? 0) + (socket?.truncated.load(ordering: .relaxed) ?? 0)
        let st = state
        let sus = suspects
        let d = dropped
        snapshot.withLock { s in
            s.alive = c.alive
            s.suspect = c.suspect
            s.dead = c.dead
            s.incarnation = st.incarnation
            if s.suspects.count != sus.count || Set(s.suspects) != sus { s.suspects = sus.sorted() }
            s.suspicionTimeoutMs = Int(st.suspicionTimeout.seconds * 1000)
            s.probes = st.probesSent
            s.probeRequests = st.probeRequestsSent
            s.acks = st.acksReceived
            s.refutations = st.refutations
            s.datagramsIn = received
            s.datagramsOut = sent
            s.dropped = d + sendDropped
        }
    }
}

extension PeerNode {
    /// Starts SWIM on the TCP listener's port (called by `start()` once the port is bound).
    /// - Throws: `NodeError` when the UDP port is taken.
    func startSwim(host: String, port: UInt16, selfID: String) throws {
        guard let config = config.swim else { return }
        let runner = try SwimRunner(
            selfID: selfID, host: host, port: port, config: config, networkKey: self.config.security.networkKey, logger: logger,
            members: { [weak self] in self?.core.withLock { $0.state.membership.endpoints } ?? [] },
            apply: { [weak self] alive, dead in
                guard let self else { return }
                self.core.withLock { c in
                    for p in dead { c.state.membership.remove(p) }
                    for p in alive { c.state.membership.markSuccess(p) }
                }
                if !dead.isEmpty { self.wake.signal() }
            })
        swimBox.withLock { $0 = runner }
        runner.start()
        logger.info("swim", metadata: ["udp": "\(host):\(port)", "interval_ms": "\(Int(config.probeInterval.seconds * 1000))",
                                       "sealed": "\(self.config.security.isSecure)"])
    }

    /// Stops SWIM (called when the node stops).
    func stopSwim() {
        let r = swimBox.withLock { b -> SwimRunner? in defer { b = nil }; return b }
        r?.stop()
    }

    /// The `swim` object of status; nil when SWIM is off.
    func swimStatus() -> StatusReport.Swim? {
        swimBox.withLock { $0 }?.status
    }
}

extension SwimConfig {
    /// The configuration gossipd's `--swim-*` options give; nil for `--swim-mode off`.
    /// - Throws: `NodeError` naming the option that is out of range (gossipd exits 64).
    public init?(mode: String, intervalMs: Int, timeoutMs: Int, indirect: Int, suspicionMult: Int, retransmitMult: Int) throws {
        switch mode {
        case "off": return nil
        case "on": break
        default: throw NodeError("--swim-mode must be on or off, not '\(mode)'")
        }
        guard (10...600_000).contains(intervalMs), timeoutMs > 0, timeoutMs < intervalMs else {
            throw NodeError("--swim-interval-ms must be within 10...600000 and --swim-timeout-ms positive and below it")
        }
        self.init()
        probeInterval = .milliseconds(intervalMs)
        probeTimeout = .milliseconds(timeoutMs)
        indirectProbes = indirect
        self.suspicionMult = suspicionMult
        self.retransmitMult = retransmitMult
        if let p = problem() { throw NodeError("--swim-*: \(p) (--swim-indirect 0...16, --swim-suspicion-mult and --swim-retransmit-mult 1...100)") }
    }
}

/// Resolves SWIM member ids that are host names on one thread of its own, one at a time in
/// the order asked (`getaddrinfo` may block without bound: never on the SWIM queue, never on
/// Dispatch's pool), and hands each answer to `deliver` on `queue`. The thread starts with the
/// first name (a cluster of numeric endpoints never starts it) and ends at `stop` (after the
/// lookup in progress, whose answer is dropped). `@unchecked Sendable`: state behind `cond`.
final class SwimAddressResolver: @unchecked Sendable {
    /// Turns an endpoint with a host name into an address; nil when it does not resolve.
    typealias Resolve = @Sendable (Endpoint) -> DatagramAddress?
    private let resolve: Resolve
    private let queue: DispatchQueue
    private let cond = NSCondition()
    private var fifo: [String] = []
    private var started = false
    private var stopped = false
    /// Called on `queue` with each answer; set once before the first `request`.
    var deliver: @Sendable (_ id: String, _ address: DatagramAddress?) -> Void = { _, _ in }

    init(resolve: @escaping Resolve, queue: DispatchQueue) {
        self.resolve = resolve
        self.queue = queue
    }

    /// Queues `id` (HOST:PORT) for resolution.
    func request(_ id: String) {
        cond.lock()
        defer { cond.unlock() }
        guard !stopped else { return }
        fifo.append(id)
        if !started {
            started = true
            let t = Thread { [self] in run() }
            t.name = "gossip.swim.resolve"
            t.start()
        }
        cond.signal()
    }

    /// Ends the thread (after the lookup in progress); later requests are ignored.
    func stop() {
        cond.lock()
        stopped = true
        fifo.removeAll()
        cond.broadcast()
        cond.unlock()
    }

    private func run() {
        while true {
            cond.lock()
            while fifo.isEmpty && !stopped { cond.wait() }
            if stopped { cond.unlock(); return }
            let id = fifo.removeFirst()
            let deliver = self.deliver
            cond.unlock()
            let address = (try? Endpoint(parsing: id)).flatMap { resolve($0) }
            queue.async { deliver(id, address) }
        }
    }
}
