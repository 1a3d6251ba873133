// SWIM in the peer (SPEC §5.10): the driver that runs the pure state machine (Swim.swift) on a
// UDP socket bound to the TCP listener's port, seals datagrams with the network key
// (DatagramSeal, §13.13), and makes SWIM the source of truth for liveness: a member SWIM
// declares dead leaves the peer table (and the status `peers`), a member SWIM learns alive
// joins it, and every peer the table learns by other paths (Register replies, exchange peer
// lists, --join) is fed to SWIM once per probe period.
//
// Threads: the state machine, the seal's replay cache, the address cache and the socket are
// touched only on `queue` (one serial queue); the node's core lock is taken from there, never
// the other way round (status reads a snapshot behind its own small lock).
import Dispatch
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
    init(selfID: String, host: String, port: UInt16, config: SwimConfig, networkKey: NetworkKey?, logger: Logger,
         members: @escaping @Sendable () -> [String], apply: @escaping @Sendable ([String], [String]) -> Void) throws {
        self.selfID = selfID
        state = SwimState(selfID: selfID, config: config, seed: UInt64.random(in: 0...UInt64.max))
        seal = networkKey.map { DatagramSeal(networkKey: $0) }
        self.logger = logger
        self.members = members
        self.apply = apply
        let q = queue
        do throws(RPCError) {
            socket = try DatagramSocket(host: host, port: port, maxDatagram: SwimBody.maxDatagramBytes, queue: q) { [weak self] bytes, _ in
                self?.handle(bytes)
            }
        } catch {
            throw NodeError("SWIM (SPEC §5.10): \(error.message)")
        }
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
        transmit(state.receive(m, from: b.sender, now: now))
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
            guard let to = address(s.to) else { drop("cannot resolve \(s.to)"); continue }
            socket.send(frame, to: to)
        }
    }

    private func address(_ id: String) -> DatagramAddress? {
        if let a = addresses[id] { return a }
        guard let ep = try? Endpoint(parsing: id), let a = try? DatagramAddress.resolve(ep) else { return nil }
        if addresses.count >= 4096 { addresses.removeAll(keepingCapacity: true) }
        addresses[id] = a
        return a
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
