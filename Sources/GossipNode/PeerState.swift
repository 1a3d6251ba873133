// The peer's state as one value: its phase, the single exchange slot, the pending triggered
// exchange, training counters and membership. Every decision the peer makes about a request
// or its own loop is a `mutating func` here that does no I/O and returns what to do; the node
// (Peer.swift) holds this value behind one `Mutex` and performs the returned actions outside
// the lock. Tests drive it with events and check the decisions, without sockets or timing.
//
// The exchange slot is the rule that keeps averaging consistent: at most one exchange (the
// one this node started, or one it answers) touches the model at a time. While the slot is
// taken, training pauses before its next step, and the slot's owner may read the model
// without the lock (nobody else writes it) and installs the result in one short critical
// section. A second exchange meanwhile is answered "busy" (ABORTED) at once.
import GossipWire

/// The peer's decision state. Not thread-safe by itself: the node keeps it behind a `Mutex`.
struct PeerState: Sendable {
    /// Where the peer is in its life.
    enum Phase: String, Sendable, Equatable {
        case onboarding, training, averaging, stopping, stopped
        /// Training has stopped: the votes cover the network; final averaging steps (SPEC §5.9).
        case final
        /// The final model is written; serving it (`--serve-when-done`) until stopped.
        case done
    }

    /// Who holds the exchange slot.
    enum Slot: Sendable, Equatable {
        case idle
        /// This node's own exchange with `peer` is in flight.
        case outgoing(peer: String)
        /// This node is answering an exchange from `sender`.
        case incoming(sender: String)
        /// Reserved for `sender`'s GossipExchange until `until` (SPEC §5.6): training goes on;
        /// others are refused as busy; an expired reservation counts as idle.
        case reserved(sender: String, until: ContinuousClock.Instant)
    }

    /// The decision on a Reserve request (SPEC §5.6).
    enum ReserveDecision: Sendable, Equatable {
        /// The slot is reserved for the sender until this instant: answer OK.
        case reserved(until: ContinuousClock.Instant)
        /// The slot is taken: answer ABORTED ("busy"). Counted in `exchanges.reserveBusy`.
        case busy
        /// The node cannot take exchanges now (onboarding or stopping): answer UNAVAILABLE.
        case unavailable(String)
    }

    /// The decision on an incoming exchange request.
    enum IncomingDecision: Sendable, Equatable {
        /// Take it: the slot is now `.incoming`; finish with `finishIncoming`.
        case accept
        /// Another exchange holds the slot: answer ABORTED ("busy").
        case busy
        /// The node cannot take exchanges now (onboarding or stopping): answer UNAVAILABLE.
        case unavailable(String)
    }

    /// The decision on a TriggerGossip request.
    enum TriggerDecision: Sendable, Equatable {
        /// Queued: the loop runs it at its next chance and answers the caller then.
        case queued
        /// Another triggered exchange is queued or running: answer ABORTED.
        case alreadyPending
        /// The node cannot start exchanges now: answer UNAVAILABLE.
        case unavailable(String)
    }

    /// How an exchange this node started ended, as the state machine needs to know it.
    enum OutgoingResult: Sendable, Equatable {
        /// The reply was installed.
        case installed
        /// The other side answered busy (ABORTED): it is alive.
        case remoteBusy
        /// The other side runs another model (FAILED_PRECONDITION): forget it at once.
        case incompatible
        /// Unreachable, deadline, or an error reply: one failed contact.
        case failed
        /// The reply arrived but was refused here (malformed, wrong size, not finite): the
        /// peer answered, so it is alive, but the exchange failed.
        case badReply
        /// Nothing reached the peer, or this node gave up for its own reasons (it could not
        /// encode its request, or it is stopping): says nothing about the peer.
        case notSent
        /// The other side refused this node's model as an outlier (MODEL_REJECTED): it is
        /// alive, the exchange failed.
        case rejectedByPeer
        /// No answer to a Reserve within its short deadline (SPEC §5.6): a soft failure (the
        /// peer is backed off; dropped only once it has failed for `softDropAfter`).
        case timedOutSoft
    }

    /// Which models an outlier bound judges (SPEC §5.3): requests this node answers, or
    /// replies it receives to its own exchanges. Each direction has its own history.
    enum ModelDirection: Sendable, Equatable {
        case request, reply
    }

    /// The verdict on an incoming model's distance.
    enum ModelVerdict: Sendable, Equatable {
        case accept
        /// Admitted after this node reset its outlier bounds: replies of two distinct peers were
        /// refused, so its own model is the likely outlier (SPEC §5.3, "self-check").
        case acceptAfterReset
        /// Refused: `distance` is over `bound` (`why` says how the bound was derived).
        case outlier(distance: Double, bound: Double, why: String)
    }

    /// Keys of `rejected.byPeer` at most (a sender names itself: the map must stay bounded).
    static let maxRejectedPeers = 1024

    private(set) var phase: Phase = .onboarding
    private(set) var stopRequested = false
    private(set) var slot: Slot = .idle
    /// True once the node holds a model (after onboarding or resume).
    private(set) var hasModel = false
    /// The peer a queued TriggerGossip asked for ("" = a random one); nil when none is queued.
    private(set) var pendingTrigger: String?
    /// True while the loop runs a triggered exchange (a second trigger is refused meanwhile).
    private(set) var triggerRunning = false

    private(set) var round = 0
    var lastLoss: Double?
    var accuracy: Double?
    var heldOutLoss: Double?
    private(set) var exchanges = StatusReport.Exchanges()
    /// What the insider bounds refused or capped (SPEC §5.3).
    private(set) var rejected = StatusReport.Rejected()
    /// Outlier bounds of requests this node answers and replies it installs.
    private(set) var requestBound: OutlierBound
    private(set) var replyBound: OutlierBound
    /// The last `window` verdicts on this node's own exchanges (the self-check of SPEC §5.3):
    /// the dialed peer when its reply was refused here or it refused this node's model
    /// (MODEL_REJECTED), nil when a reply was accepted.
    private(set) var outgoingVerdicts: [String?] = []
    var checkpointRound: Int?
    var resumedFromRound: Int?
    var membership: Membership
    /// Draws the sample of a long peer list.
    private var sampleRNG: SplitMix
    /// Recent round trips of this node's granted Reserves and completed exchanges (the
    /// adaptive deadlines of SPEC §5.6).
    var reserveTrips = RoundTrips()
    var exchangeTrips = RoundTrips()
    /// Convergence detection and the done votes (SPEC §5.9; PeerConvergence.swift).
    var convergence = PeerConvergenceState(config: ConvergenceConfig(), mayReduceRate: true, voteCapacity: Limits.default.maxPeers)

    init(membership: Membership, seed: UInt64 = 1, bounds: ExchangeBounds = ExchangeBounds()) {
        self.membership = membership
        self.sampleRNG = SplitMix(seed: seed)
        self.requestBound = OutlierBound(policy: bounds)
        self.replyBound = OutlierBound(policy: bounds)
    }

    // MARK: - lifecycle

    /// The node now holds a model (onboarded or resumed at `round`).
    mutating func modelInstalled(resumedAt resumedRound: Int? = nil) {
        hasModel = true
        if let r = resumedRound {
            round = r
            resumedFromRound = r
            checkpointRound = r
        }
        if phase == .onboarding, !stopRequested { phase = .training }
    }

    /// True once this node trains no more (rounds done, final steps, done): a lossy
    /// `--wire-dtype` then averages exactly (SPEC §6.5, the exact finish).
    var trainingEnded: Bool { phase == .averaging || phase == .final || phase == .done }

    /// Training rounds are over; the peer keeps averaging.
    mutating func enterAveraging() {
        if phase == .training { phase = .averaging }
    }

    /// Asks the node to stop. Returns true the first time.
    @discardableResult
    mutating func requestStop() -> Bool {
        guard !stopRequested else { return false }
        stopRequested = true
        return true
    }

    /// The loop has ended; the node is finishing (last checkpoint, closing).
    mutating func beginStopping() {
        stopRequested = true
        phase = .stopping
    }

    mutating func stopped() { phase = .stopped }

    /// The votes cover the network: training stops, final averaging begins (SPEC §5.9).
    mutating func enterFinal() {
        if phase == .training || phase == .averaging { phase = .final }
    }

    /// The final model is written; the peer serves it until stopped.
    mutating func enterDone() {
        if phase == .final || phase == .training || phase == .averaging { phase = .done }
    }

    /// One training round finished with mean loss `loss`. Returns the new round number.
    mutating func completeRound(loss: Double) -> Int {
        round += 1
        lastLoss = loss
        return round
    }

    /// Completes a round of an external trainer (one push, SPEC §5.12): its loss is not known.
    mutating func completeExternalRound() -> Int {
        round += 1
        return round
    }

    /// True when a training step may run now (no exchange holds the model, not stopping). A
    /// reservation, given or asked for, does not pause training (SPEC §5.6).
    var mayTrain: Bool { !slotHoldsModel && !stopRequested && hasModel }

    /// True while an exchange holds the model (its weights are on the wire or being averaged).
    var slotHoldsModel: Bool {
        switch slot {
        case .outgoing, .incoming: true
        case .idle, .reserved: false
        }
    }

    // MARK: - exchanges this node answers

    /// Decides on an incoming exchange from `sender`; on `.accept` the slot becomes `.incoming`.
    mutating func beginIncoming(sender: String, now: ContinuousClock.Instant = .now) -> IncomingDecision {
        if stopRequested || phase == .stopping || phase == .stopped {
            exchanges.refused += 1
            return .unavailable("this peer is stopping; try another peer")
        }
        guard hasModel else {
            exchanges.refused += 1
            return .unavailable("this peer is still onboarding and has no model yet; try another peer")
        }
        expireReservation(now: now)
        switch slot {
        case .idle where phase != .done: break
        case .reserved(let holder, _) where holder == sender && phase != .done: break   // the reserved weights arrived
        default:
            // Busy, or a finished peer that keeps its final model (SPEC §5.9).
            exchanges.refused += 1
            return .busy
        }
        slot = .incoming(sender: sender)
        return .accept
    }

    /// Counts an exchange refused before it could ask for the slot (malformed, wrong schema,
    /// not finite, an out-of-range weight, or no model yet).
    mutating func refusedBeforeSlot() { exchanges.refused += 1 }

    /// Ends the incoming exchange that holds the slot. `applied`: the average was installed
    /// and the reply handed to the transport; false: the model is unchanged.
    mutating func finishIncoming(sender: String, applied: Bool) {
        precondition(slot == .incoming(sender: sender), "finishIncoming without the slot")
        slot = .idle
        if applied {
            exchanges.done += 1
            membership.markSuccess(sender, exchange: true)
        } else {
            exchanges.refused += 1
        }
    }

    // MARK: - exchanges this node starts

    /// Takes the slot for an exchange with `peer`. False when it is taken, the node has no
    /// model, or it is stopping.
    mutating func beginOutgoing(peer: String, now: ContinuousClock.Instant = .now) -> Bool {
        expireReservation(now: now)
        guard slot == .idle, hasModel, !stopRequested, phase != .done else { return false }
        slot = .outgoing(peer: peer)
        return true
    }

    /// Ends this node's exchange with `peer`. Returns true when the peer was dropped from
    /// membership by this outcome.
    @discardableResult
    mutating func finishOutgoing(peer: String, result: OutgoingResult, learned: [String] = []) -> Bool {
        precondition(slot == .outgoing(peer: peer), "finishOutgoing without the slot")
        slot = .idle
        return countOutgoing(peer: peer, result: result, learned: learned)
    }

    /// Counts how an exchange (or its Reserve) with `peer` ended, and updates membership.
    /// Returns true when the peer was dropped by this outcome.
    mutating func countOutgoing(peer: String, result: OutgoingResult, learned: [String] = []) -> Bool {
        switch result {
        case .installed:
            membership.merge(learned)
            membership.markSuccess(peer, exchange: true)
            exchanges.done += 1
            return false
        case .remoteBusy:
            exchanges.busy += 1
            membership.markSuccess(peer)
            return false
        case .incompatible:
            exchanges.failed += 1
            membership.remove(peer)
            return true
        case .failed:
            exchanges.failed += 1
            return membership.markFailure(peer)
        case .timedOutSoft:
            exchanges.failed += 1
            return membership.markFailure(peer, soft: true)
        case .badReply:
            exchanges.failed += 1
            membership.markSuccess(peer)
            return false
        case .rejectedByPeer:
            exchanges.failed += 1
            membership.markSuccess(peer)
            selfCheck(refusedBy: peer)
            return false
        case .notSent:
            return false
        }
    }

    // MARK: - insider bounds (SPEC §5.3)

    /// Judges the relative L2 distance of a model received from `peer` (the request's sender,
    /// or the dialed endpoint for a reply) against that direction's outlier bound; a refusal
    /// is counted. The caller holds the exchange slot.
    ///
    /// A refused reply takes part in the self-check (`selfCheck(refusedBy:)`); when that resets
    /// the bounds, the reply is judged anew under the warm-up bound.
    mutating func judgeModel(_ direction: ModelDirection, distance: Double, from peer: String) -> ModelVerdict {
        let b = direction == .request ? requestBound : replyBound
        let admitted = b.admits(distance)
        if direction == .reply {
            if admitted {
                selfCheck(refusedBy: nil)
            } else if selfCheck(refusedBy: peer), replyBound.admits(distance) {
                return .acceptAfterReset
            }
        }
        if admitted { return .accept }
        rejected.modelsRejected += 1
        countRejected(peer)
        let now = direction == .request ? requestBound : replyBound
        return .outlier(distance: distance, bound: now.bound, why: now.explanation)
    }

    /// A model of that direction was accepted and installed at `distance`: it joins the history.
    mutating func recordAccepted(_ direction: ModelDirection, distance: Double) {
        switch direction {
        case .request: requestBound.record(distance)
        case .reply: replyBound.record(distance)
        }
        convergence.detector.modelMet(distance: distance)
    }

    /// This node's own trainer (an external trainer's push) moved its model by `change`
    /// (relative L2): both bounds keep at least twice the largest recent such move (SPEC §5.3).
    mutating func ownModelMoved(by change: Double) {
        requestBound.recordOwnMove(change)
        replyBound.recordOwnMove(change)
    }

    /// `peer` claimed more weight than the cap allows (its request was averaged with the capped
    /// weight, or its reply was refused).
    mutating func weightCapped(from peer: String) {
        rejected.weightCapped += 1
        countRejected(peer)
    }

    /// Self-check (SPEC §5.3): records the verdict on one of this node's own exchanges (`nil`:
    /// its reply was accepted; a peer: that dialed peer's reply was refused here, or it refused
    /// this node's model). When two distinct dialed peers are among the refusals of the last
    /// `window` verdicts, this node's own model is the likely outlier (it was away, or a group
    /// drifted apart), not theirs: both histories are cleared, so the warm-up bound applies
    /// again. One insider alone never triggers it (a dialed endpoint is one this node chose to
    /// call, not a name a sender gives itself); the warm-up bound still refuses gross
    /// outliers after a reset. Returns true when it reset.
    @discardableResult
    mutating func selfCheck(refusedBy peer: String?) -> Bool {
        let window = requestBound.policy.window
        outgoingVerdicts.append(peer)
        if outgoingVerdicts.count > window { outgoingVerdicts.removeFirst(outgoingVerdicts.count - window) }
        guard peer != nil, Set(outgoingVerdicts.compactMap { $0 }).count >= 2 else { return false }
        requestBound.reset()
        replyBound.reset()
        outgoingVerdicts = []
        rejected.boundResets += 1
        return true
    }

    private mutating func countRejected(_ peer: String) {
        if rejected.byPeer[peer] != nil || rejected.byPeer.count < PeerState.maxRejectedPeers - 1 {
            rejected.byPeer[peer, default: 0] += 1
        } else {
            rejected.byPeer["other", default: 0] += 1
        }
    }

    // MARK: - peer lists

    /// The peer list this node sends in Register and exchange replies (SPEC §5.1, §5.3): this
    /// node itself first, then known members other than `excluding` (the asker), at most
    /// `limit` entries in all: a random sample when it knows more, so that the reply always
    /// fits the wire's peer limit and different askers learn different members.
    mutating func peerSample(excluding asker: String, me: String, limit: Int) -> [String] {
        var others = membership.endpoints.filter { $0 != asker && $0 != me }
        if others.count > limit - 1 {
            others.shuffle(using: &sampleRNG)
            others = Array(others.prefix(max(0, limit - 1))).sorted()
        }
        return [me] + others
    }

    // MARK: - triggered exchanges

    /// Queues a triggered exchange with `peer` ("" = random).
    mutating func requestTrigger(peer: String) -> TriggerDecision {
        if stopRequested || phase == .stopping || phase == .stopped {
            return .unavailable("this peer is stopping")
        }
        guard hasModel else {
            return .unavailable("this peer has no model yet (still onboarding); try again shortly")
        }
        guard pendingTrigger == nil, !triggerRunning else { return .alreadyPending }
        pendingTrigger = peer
        return .queued
    }

    /// The loop takes the queued trigger, if any, to run it now.
    mutating func takeTrigger() -> String? {
        guard let p = pendingTrigger else { return nil }
        pendingTrigger = nil
        triggerRunning = true
        return p
    }

    /// The loop finished the triggered exchange it took.
    mutating func finishTrigger() { triggerRunning = false }

    /// Drops a queued trigger that will not run (the node is stopping). Returns true when
    /// there was one, so its caller can be answered.
    mutating func cancelTrigger() -> Bool {
        guard pendingTrigger != nil else { return false }
        pendingTrigger = nil
        return true
    }
}

// MARK: - reservations (SPEC §5.6)

extension PeerState {
    /// Decides on a Reserve from `sender` for `lease` (already capped by the caller of this
    /// function to the node's own bound). Idle, an expired reservation, or one held by the same
    /// sender (renewed): reserved until `now + lease`. Anything else: busy.
    mutating func beginReserve(sender: String, lease: Duration, now: ContinuousClock.Instant = .now) -> ReserveDecision {
        if stopRequested || phase == .stopping || phase == .stopped {
            return .unavailable("this peer is stopping; try another peer")
        }
        guard hasModel else {
            return .unavailable("this peer is still onboarding and has no model yet; try another peer")
        }
        expireReservation(now: now)
        switch slot {
        case .idle where phase != .done: break
        case .reserved(let holder, _) where holder == sender && phase != .done: break
        default:
            // Busy, or a finished peer that keeps its final model (SPEC §5.9).
            exchanges.reserveBusy += 1
            return .busy
        }
        let until = now + lease
        slot = .reserved(sender: sender, until: until)
        return .reserved(until: until)
    }

    /// True when this node may start an exchange now (SPEC §5.6, caller step 1): its slot is
    /// idle (an expired reservation counts as idle), it holds a model and is not stopping.
    /// Asking for a Reserve takes nothing: while it waits for the answer, the slot stays free
    /// for others and training goes on.
    mutating func mayStartExchange(now: ContinuousClock.Instant = .now) -> Bool {
        expireReservation(now: now)
        return slot == .idle && hasModel && !stopRequested && phase != .done
    }

    /// What this node does once `peer` granted its Reserve (SPEC §5.6, caller step 3).
    enum GrantAction: Sendable, Equatable {
        /// The slot is now `.outgoing(peer)`: send the weights.
        case send
        /// `peer` reserved this node meanwhile, and its endpoint sorts first: let its weights
        /// come (the slot stays reserved for it); no release needed (`peer` goes outgoing).
        case yield
        /// The slot was taken meanwhile (reserved for another, or an exchange): release the
        /// reservation `peer` holds for this node (a Reserve with lease 0) and give up.
        case abandon
    }

    /// Decides what to do with a granted Reserve. `me`: this node's endpoint (the tie-break of
    /// two peers that reserved each other at once: the smaller endpoint sends).
    mutating func reserveGranted(peer: String, me: String, now: ContinuousClock.Instant = .now) -> GrantAction {
        expireReservation(now: now)
        if stopRequested { return .abandon }
        switch slot {
        case .idle:
            slot = .outgoing(peer: peer)
            return .send
        case .reserved(let holder, _) where holder == peer:
            if me < peer {
                slot = .outgoing(peer: peer)   // its weights will find this node busy; it yields too
                return .send
            }
            return .yield
        default:
            return .abandon
        }
    }

    /// Releases the reservation held for `sender`, if any (a Reserve with lease 0).
    mutating func releaseReservation(sender: String) {
        if case .reserved(let holder, _) = slot, holder == sender { slot = .idle }
    }

    /// One of this node's Reserves got no answer within its short deadline.
    mutating func countReserveTimeout() { exchanges.reserveTimeouts += 1 }

    /// An expired reservation frees the slot.
    mutating func expireReservation(now: ContinuousClock.Instant) {
        if case .reserved(_, let until) = slot, now >= until { slot = .idle }
    }
}
