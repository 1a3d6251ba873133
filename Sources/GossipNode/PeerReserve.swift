// Reserve before the weights travel, and never wait long on a peer (SPEC §5.6).
//
// The caller's side: before a GossipExchange, a small Reserve under a short adaptive deadline
// (8 x the median of recent Reserve round trips, at least `minExchangeTimeout`, at most the
// exchange deadline); the loop keeps training while it waits for the answer. Only a granted
// Reserve (or an older peer's UNIMPLEMENTED) lets the weights go out. A frozen peer is found in
// a fraction of a second, and is then backed off (Membership) so it is not chosen again soon.
//
// The responder's side: `handleReserve` answers at once on Dispatch's pool (never blocks):
// reserved (the slot is kept for the sender until the lease, capped by this node's exchange
// deadline, runs out), busy, or unavailable. The decisions are PeerState's.
import GossipML
import GossipNet
import GossipWire
import Logging
import Synchronization

/// Recent round-trip times of one kind of request (a bounded window) and the adaptive deadline
/// they give. A plain value: the node keeps it in `PeerState`.
struct RoundTrips: Sendable, Equatable {
    /// Most samples kept.
    static let window = 32
    /// The deadline is this multiple of the median.
    static let factor = 8.0
    private(set) var samples: [Duration] = []

    /// Records one successful round trip.
    mutating func record(_ d: Duration) {
        samples.append(max(d, .zero))
        if samples.count > RoundTrips.window { samples.removeFirst(samples.count - RoundTrips.window) }
    }

    /// The median of the recent samples; nil when there are none.
    var median: Duration? {
        guard !samples.isEmpty else { return nil }
        let s = samples.sorted()
        let n = s.count
        return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
    }

    /// `clamp(factor × median, floor, cap)`; `cap` alone while nothing was measured yet (the
    /// first contact may include a connection set-up and a handshake). `floor > cap` gives `cap`.
    func deadline(floor: Duration, cap: Duration) -> Duration {
        guard let m = median else { return cap }
        return min(cap, max(floor, m * RoundTrips.factor))
    }
}

extension PeerNode {
    /// The outcome of this node's Reserve.
    enum ReserveOutcome: Equatable {
        /// Reserved for this node (or an older peer without Reserve): send the weights.
        case granted
        /// The exchange is over before the weights travelled; the slot is released.
        case ended(ExchangeOutcome)
    }

    /// The Reserve deadline (SPEC §5.6, caller step 2). Before any round trip was measured:
    /// 2 s (within the floor and the cap), room for a first connection and its handshake.
    func reserveDeadline() -> Duration {
        let trips = core.withLock { $0.state.reserveTrips }
        if trips.median == nil { return min(config.exchangeTimeout, max(config.minExchangeTimeout, .seconds(2))) }
        return trips.deadline(floor: config.minExchangeTimeout, cap: config.exchangeTimeout)
    }

    /// The deadline of a reserved exchange (SPEC §5.6, caller step 3): 8 x the median of
    /// recent completed exchanges, at least 2 s, at most `exchangeTimeout`.
    func reservedExchangeDeadline() -> Duration {
        let trips = core.withLock { $0.state.exchangeTrips }
        return trips.deadline(floor: min(.seconds(2), config.exchangeTimeout), cap: config.exchangeTimeout)
    }

    /// Reserves `peer`'s slot for the exchange this node is about to start (loop thread). This
    /// node's own slot stays free while it waits (others may reserve it; training goes on). On
    /// `.granted` the slot is `.outgoing(peer)` (training paused) and the weights may go out;
    /// on `.ended` nothing is held and the outcome is counted (busy: the peer is alive; no
    /// answer in time: a failed contact, backed off).
    func reserve(_ ep: Endpoint, peer: String, schemaHash: UInt64, lease: Duration) -> ReserveOutcome {
        let ms = (lease.seconds * 1000).rounded(.up)
        let leaseMs = UInt32(ms.isFinite ? min(max(ms, 1), Double(UInt32.max)) : 1)
        let request: ByteSlice
        do {
            request = try WireCodec.encode(ReserveRequest(sender: endpoint.description, schemaHash: schemaHash, leaseMs: leaseMs))
        } catch {
            return .ended(.failed(.internal, "cannot encode a Reserve: \(error)"))
        }
        let deadline = reserveDeadline()
        let started = ContinuousClock.now
        let result = callWhileTraining(ep, .reserve, request, deadline: deadline)
        let took = ContinuousClock.now - started
        let me = endpoint.description
        switch result {
        case .success(let msg) where msg.payload.count == 0:
            let action = core.withLock { c in
                c.state.reserveTrips.record(took)
                c.state.membership.markSuccess(peer)
                return c.state.reserveGranted(peer: peer, me: me)
            }
            switch action {
            case .send: return .granted
            case .yield: return .ended(.localBusy)
            case .abandon:
                release(ep, peer: peer, schemaHash: schemaHash)
                return .ended(.localBusy)
            }
        case .success:
            let dropped = core.withLock { $0.state.countOutgoing(peer: peer, result: .failed) }
            if dropped { logger.notice("peer dropped", metadata: ["peer": "\(peer)", "after": "malformed Reserve reply"]) }
            return .ended(.failed(.internal, "\(peer) answered Reserve with a non-empty payload (SPEC §5.6)"))
        case .failure(let err) where err.remote && err.code == .unimplemented:
            // An older peer (SPEC §5.6, caller step 4): exchange without a reservation.
            let action = core.withLock { $0.state.reserveGranted(peer: peer, me: me) }
            return action == .send ? .granted : .ended(.localBusy)
        case .failure(let err):
            let timedOut = err.code == .deadlineExceeded && !err.remote
            let outcome: PeerState.OutgoingResult = err.code == .aborted ? .remoteBusy
                : err.code == .failedPrecondition ? .incompatible
                : err.code == .cancelled ? .notSent : timedOut ? .timedOutSoft : .failed
            let dropped = core.withLock { c in
                if timedOut { c.state.countReserveTimeout() }
                return c.state.countOutgoing(peer: peer, result: outcome)
            }
            // The peer may still grant it late (it was frozen, say): release it at once.
            if timedOut { release(ep, peer: peer, schemaHash: schemaHash) }
            if outcome == .remoteBusy {
                logger.debug("peer busy (Reserve)", metadata: ["peer": "\(peer)"])
                return .ended(.remoteBusy)
            }
            if outcome != .notSent {
                logger.info("Reserve failed", metadata: ["with": "\(peer)", "status": "\(err.code.name)", "why": "\(err.message)",
                                                        "deadline_ms": "\(Int(deadline.seconds * 1000))"])
            }
            if dropped { logger.notice("peer dropped", metadata: ["peer": "\(peer)", "after": "\(err.code.name)"]) }
            return .ended(.failed(err.code, err.message))
        }
    }

    /// Releases the reservation `peer` may hold for this node: a Reserve with lease 0, sent
    /// without waiting for its answer (SPEC §5.6).
    func release(_ ep: Endpoint, peer: String, schemaHash: UInt64) {
        guard let payload = try? WireCodec.encode(ReserveRequest(sender: endpoint.description, schemaHash: schemaHash, leaseMs: 0)) else { return }
        client.call(ep, type: .reserve, payload: payload, deadline: config.exchangeTimeout) { _ in }
    }

    /// Like `callBlocking`, but the loop thread keeps training while it waits (SPEC §5.6: a
    /// pending Reserve does not pause training). Steps done here count toward the next round
    /// (`model.roundSteps`), so a round still has `localSteps` steps.
    func callWhileTraining(_ ep: Endpoint, _ type: MessageType, _ payload: ByteSlice, deadline: Duration) -> Result<InboundMessage, RPCError> {
        callBlocking(ep, type, payload, deadline: deadline, trainWhileWaiting: true)
    }

    /// One SGD step of the next round while the loop waits on the network; false when none
    /// may run (not in the training phase, training rounds done, the next round's steps all
    /// but one done, or the slot holds the model).
    func trainOneStepWhileWaiting() -> Bool {
        core.withLock { c in
            guard c.state.phase == .training, c.state.mayTrain, let t = model.trainer, !t.isHolder,
                  config.rounds.map({ c.state.round < $0 }) ?? true,
                  model.roundSteps < config.localSteps - 1 else { return false }
            _ = t.train(steps: 1)
            model.roundSteps += 1
            return true
        }
    }

    /// Answers a Reserve at once (Dispatch's pool; never blocks): SPEC §5.6, responder steps.
    func handleReserve(_ msg: InboundMessage, _ responder: RPCResponder) {
        if config.averaging == .pushSum {
            // The same answer as a GossipExchange gets (SPEC §5.5: one mode per network).
            responder.fail(.unavailable, "this peer averages by push-sum (SPEC §5.5), not by synchronous exchange; every peer of a network must use the same --averaging")
            return
        }
        guard let expected: UInt64 = core.withLock({ c in c.state.hasModel ? model.trainer?.parameters.schemaHash : nil }) else {
            responder.fail(.unavailable, "peer is still onboarding and has no model yet; try another peer")
            return
        }
        let request: ReserveRequest
        do {
            request = try WireCodec.decodeReserveRequest(msg.payload, expectedSchemaHash: expected)
        } catch {
            let (code, text) = statusAndText(error)
            logger.info("Reserve refused", metadata: ["from": "\(responder.peerAddress)", "error": "\(text)"])
            responder.fail(code, text)
            return
        }
        if request.leaseMs == 0 {
            // A release: the sender gave up its reservation (SPEC §5.6).
            core.withLock { $0.state.releaseReservation(sender: request.sender) }
            responder.reply(ByteSlice(ByteStorage(count: 0)))
            wake.signal()
            return
        }
        // A peer's number never holds the slot longer than this node's own exchange deadline.
        let lease = min(Duration.milliseconds(Int64(request.leaseMs)), config.exchangeTimeout)
        let decision = core.withLock { $0.state.beginReserve(sender: request.sender, lease: lease) }
        switch decision {
        case .reserved:
            // Like an exchange's sender (SPEC §5.3): a member that reserves is alive and known.
            if Membership.isEndpoint(request.sender) { core.withLock { $0.state.membership.markSuccess(request.sender) } }
            responder.reply(ByteSlice(ByteStorage(count: 0)))
        case .busy:
            responder.fail(.aborted, "busy: the exchange slot of \(endpoint) is taken; try another peer")
        case .unavailable(let why):
            responder.fail(.unavailable, why)
        }
    }
}
