// Push-sum averaging on the peer (SPEC §5.5; Kempe, Dobra, Gehrke 2003, in the de-biased form of
// Stochastic Gradient Push, Assran et al. 2019): `averagingStep()` (the loop's one averaging
// step in either mode), the pushes (on one private serial queue: per round and on a wall-clock
// timer, never waiting for an answer), the PushSum handler (on Dispatch's pool: checks, then a
// short merge under the peer's lock), and the drain when the peer stops.
//
// Ownership: the mass and its accounting (`PeerCore.pushSum`, a `PushSumLedger`) change only
// under the peer's lock, in the same critical section as the model they de-bias, so that mass
// and model always agree. Peer choice (`choosePeer`, which uses the loop's generator) runs on
// the push queue only in push-sum mode: the loop thread never chooses a peer in that mode.
import Foundation
import GossipML
import GossipNet
import GossipWire
import Synchronization

/// The push queue, its timer and what only they touch. `@unchecked Sendable`: `lastPush` and
/// `timer` are touched on `queue` only; `pending` is atomic.
final class PushSumDriver: @unchecked Sendable {
    let queue = DispatchQueue(label: "gossip.pushsum")
    var timer: DispatchSourceTimer?
    var lastPush: ContinuousClock.Instant = .now
    /// True while a push requested by the loop is queued (so the queue holds at most one).
    let pending = Atomic<Bool>(false)
    var lossRNG = SplitMix(seed: UInt64.random(in: 0...UInt64.max))
}

extension PeerNode {
    /// One averaging step in the configured mode: sync, one exchange with a random live peer
    /// (`gossipOnce`); push-sum, one push unless one left during the last push interval
    /// (queued for the push queue; it never blocks). Every peer thus pushes about once per
    /// interval whatever its round time (the timer covers slow rounds), which keeps each
    /// peer's mass near its share (SPEC §5.5, "Pushing on time").
    func averagingStep() {
        switch config.averaging {
        case .sync:
            gossipOnce()
        case .pushSum:
            guard !pushDriver.pending.exchange(true, ordering: .acquiringAndReleasing) else { return }
            pushDriver.queue.async { [self] in
                pushDriver.pending.store(false, ordering: .releasing)
                if pushDue() { pushOnce() }
            }
        }
    }

    /// The initial ledger (mass = the shard's rows), or nil in sync mode.
    func makePushSumLedger(mass: Double? = nil) -> PushSumLedger? {
        guard config.averaging == .pushSum else { return nil }
        return PushSumLedger(rows: ownRows, weightCap: config.exchangeBounds.weightCap, mass: mass)
    }

    /// Resumes the mass a checkpoint saved (`push_sum_mass`), when it is a valid mass.
    func resumePushSumMass(_ meta: [String: String]) {
        guard config.averaging == .pushSum, let text = meta["push_sum_mass"], let m = Double(text),
              m.isFinite, m > 0, m <= 1e12 else { return }
        core.withLock { $0.pushSum = makePushSumLedger(mass: m) }
    }

    /// Starts the wall-clock pushes (push-sum only): every `pushInterval`, a push when none
    /// happened during the last interval, so a slow round does not slow the mixing.
    func startPushTimer() {
        guard config.averaging == .pushSum else { return }
        let d = pushDriver
        let interval = config.pushInterval
        d.queue.sync {
            let t = DispatchSource.makeTimerSource(queue: d.queue)
            t.schedule(deadline: .now() + interval.seconds, repeating: interval.seconds, leeway: .milliseconds(2))
            t.setEventHandler { [weak self] in
                guard let self else { return }
                if self.pushDue() { self.pushOnce() }
            }
            d.timer = t
            t.resume()
        }
    }

    /// True when no push left during the last interval (push queue only). 0.9: a tick that
    /// lands just before the interval ends still pushes.
    func pushDue() -> Bool {
        ContinuousClock.now - pushDriver.lastPush >= config.pushInterval * 0.9
    }

    /// One push (push queue only): half of the mass and a snapshot of the model to a random
    /// peer, sent without waiting; the outcome is accounted when the reply (or failure) comes.
    func pushOnce() {
        dispatchPrecondition(condition: .onQueue(pushDriver.queue))
        pushDriver.lastPush = .now
        let inFlight = core.withLock { c in Set(c.pushSum.map { Array($0.inFlight.keys) } ?? []) }
        guard let target = choosePeer(excluding: inFlight) else { return }
        guard let ep = try? Endpoint(parsing: target) else {
            core.withLock { $0.state.membership.remove(target) }
            return
        }
        let lose = config.pushLoss > 0 && Double.random(in: 0..<1, using: &pushDriver.lossRNG) < config.pushLoss
        guard let (decision, params, arch, cnt, ended) = core.withLock({ c -> (PushDecision, ParameterSet, MLPArchitecture, Counters, Bool)? in
            guard c.state.hasModel, !c.state.stopRequested, c.state.phase != .done, c.pushSum != nil,
                  let t = model.trainer, let a = model.architecture else { return nil }
            let d = c.pushSum!.beginPush(to: target, lose: lose)
            return (d, t.parameters, a, counters(c), config.exactFinish && c.state.trainingEnded)
        }) else { return }
        let mass: Double
        switch decision {
        case .skip: return
        case .lose(let m):
            logger.debug("push lost (fault injection)", metadata: ["to": "\(target)", "mass": "\(m)"])
            return
        case .send(let m): mass = m
        }
        let payload: ByteSlice
        // A lossy push unless training has ended (the exact finish) or the target refused the
        // encoding before (SPEC §6.5).
        let lossyPush = config.wireDType.isLossy && !ended && !f32Peers.withLock { $0.contains(target) }
        do {
            if lossyPush {
                // SPEC §6.5: the push carries the model in the lossy encoding (no error feedback);
                // once training has ended, pushes are F32 (the exact finish).
                payload = try WireCodec.encodeExchangeRequest(sender: endpoint.description, weight: mass, architecture: arch,
                                                              wire: WireCodec.table(params).encoded(as: config.wireDType),
                                                              floats: params.storage, round: cnt.round, step: cnt.step,
                                                              samples: cnt.samples)
            } else {
                payload = try WireCodec.encodePushSum(sender: endpoint.description, mass: mass, architecture: arch, params: params,
                                                      round: cnt.round, step: cnt.step, samples: cnt.samples)
            }
        } catch {
            // Nothing left this node: take the mass back.
            takeBack(mass: mass, sent: params, from: target)
            logger.error("cannot encode a push", metadata: ["error": "\(error)"])
            return
        }
        client.call(ep, type: .pushSum, payload: payload, options: RPCOptions(compression: sendCompression(to: target, params: params.storage)),
                    deadline: config.exchangeTimeout) { [weak self] result in
            self?.pushOutcome(result, target: target, mass: mass, sent: params, lossy: lossyPush)
        }
    }

    /// Accounts a push's outcome (SPEC §5.5): OK = added there; an error reply = refused there,
    /// so the mass comes back; not sent (cannot connect, handshake unfinished) = the mass comes
    /// back; anything else (deadline, connection lost after writing) = unconfirmed, never
    /// taken back.
    func pushOutcome(_ result: Result<InboundMessage, RPCError>, target: String, mass: Double, sent: ParameterSet, lossy: Bool = false) {
        switch result {
        case .success:
            core.withLock { c in
                c.pushSum?.pushConfirmed(to: target)
                c.state.membership.markSuccess(target, exchange: true)
                c.state.selfCheck(refusedBy: nil)
            }
        // A connection-level error reply (SPEC §8.1) fails every call on that connection; one
        // of them may already have reached a handler, so it counts as unconfirmed (below).
        case .failure(let err) where err.remote && !err.message.contains("rejected the connection:"):
            takeBack(mass: mass, sent: sent, from: target)
            // A lossy push the target does not accept (SPEC §6.5): pushes to it go in F32 from now on.
            let encodingRefused = lossy && err.code == .unimplemented
            if encodingRefused { rememberF32(target, after: err.message) }
            let dropped: Bool = core.withLock { c in
                switch err.code {
                case .unimplemented where encodingRefused:
                    c.state.membership.markSuccess(target)
                    return false
                case .failedPrecondition, .unimplemented:
                    // Another averaging mode, another schema, or an older node: it never takes pushes.
                    c.state.membership.remove(target)
                    return true
                case .unavailable where err.message.contains("stopping"):
                    c.state.membership.remove(target)
                    return true
                case .modelRejected:
                    c.state.membership.markSuccess(target)
                    if c.state.selfCheck(refusedBy: target), let cut = c.pushSum?.yieldToNetwork(), cut > 0 {
                        logger.notice("push-sum: two peers refused this node's model as an outlier; it gives up mass so the network's pushes pull it back",
                                      metadata: ["discarded": "\(cut)", "mass": "\(c.pushSum?.mass ?? 0)"])
                    }
                    return false
                default:
                    c.state.membership.markSuccess(target)
                    return false
                }
            }
            logger.debug("push refused, mass taken back", metadata: ["to": "\(target)", "status": "\(err.code.name)", "why": "\(err.message)", "dropped": "\(dropped)"])
        case .failure(let err) where !err.remote && err.message.hasPrefix("cannot send "):
            // Refused by this node's own client before anything was written (over its limits):
            // provably not delivered, so the mass comes back; says nothing about the target.
            takeBack(mass: mass, sent: sent, from: target)
            logger.error("push not sent, mass taken back", metadata: ["to": "\(target)", "status": "\(err.code.name)", "why": "\(err.message)"])
        case .failure(let err) where err.notSent:
            // Failed before any byte of it was written (cannot connect: a stopped peer's closed
            // port; a secure handshake that never finished): provably not added, so the mass
            // comes back; the target counts a failure as for any unreachable member.
            takeBack(mass: mass, sent: sent, from: target)
            let dropped = core.withLock { $0.state.membership.markFailure(target) }
            logger.info("push not delivered, mass taken back", metadata: ["to": "\(target)", "status": "\(err.code.name)", "why": "\(err.message)", "mass": "\(mass)"])
            if dropped { logger.notice("peer dropped", metadata: ["peer": "\(target)", "after": "\(err.code.name)"]) }
        case .failure(let err):
            let dropped: Bool = core.withLock { c in
                c.pushSum?.pushUnconfirmed(to: target)
                return c.state.membership.markFailure(target)
            }
            logger.warning("push unconfirmed", metadata: ["to": "\(target)", "status": "\(err.code.name)", "why": "\(err.message)", "mass": "\(mass)"])
            if dropped { logger.notice("peer dropped", metadata: ["peer": "\(target)", "after": "\(err.code.name)"]) }
        }
    }

    /// Takes a refused push's mass back: merges (mass, the model sent) into the current state,
    /// which conserves Σ mass × model.
    func takeBack(mass: Double, sent: ParameterSet, from target: String) {
        core.withLock { c in
            guard c.pushSum != nil, let t = model.trainer else { return }
            let own = c.pushSum!.mass
            guard c.pushSum!.pushRefused(to: target) != nil else { return }
            t.withParameters { p in Averaging.weightedAverage(&p, weight: own, with: sent, weight: mass) }
        }
    }

    // MARK: - receiving (Dispatch's pool; never blocks)

    /// Answers a PushSum request (SPEC §5.5): checks everything, then adds the mass and merges
    /// the model in one short critical section, then answers OK (empty). A refused push leaves
    /// the model and the mass exactly as they were.
    func handlePushSum(_ msg: InboundMessage, _ responder: RPCResponder) {
        guard config.averaging == .pushSum else {
            responder.fail(.failedPrecondition, "this peer averages synchronously (GossipExchange, SPEC §5.3), not by push-sum; every peer of a network must use the same --averaging")
            return
        }
        guard let expected: UInt64 = core.withLock({ c in c.state.hasModel ? model.trainer?.parameters.schemaHash : nil }) else {
            responder.fail(.unavailable, "peer is still onboarding and has no model yet; take the mass back and push to another peer")
            return
        }
        // An external peer takes pushes once its trainer pushed (SPEC §5.12): before, its rows
        // (the mass cap's scale) are unknown, and a cap of 4 would drop the senders' mass.
        if isExternal, external.withLock({ $0.report.pushes == 0 }) {
            responder.fail(.unavailable, "this external peer's trainer has not pushed yet; take the mass back and push to another peer")
            return
        }
        do {
            let req = try WireCodec.decodePushSum(msg.payload, expectedSchemaHash: expected, dtypes: config.acceptDTypes)
            try WireCodec.checkFinite(req.model)
            guard req.mass.isFinite, req.mass > 0, req.mass <= 1e12 else {
                throw RPCError(.invalidArgument, "push-sum mass \(req.mass) must be positive and at most 1e12")
            }
            // The sender becomes a member even when its push is refused below (push-sum messages
            // carry no peer lists: this is how a later joiner becomes known, and a peer that
            // drifted away gets pushes from the others, which its self-check then admits).
            guard let own = core.withLock({ c in
                if Membership.isEndpoint(req.sender) { _ = c.state.membership.merge([req.sender]) }
                return model.trainer?.parameters
            }) else {
                throw RPCError(.unavailable, "peer has no model")
            }
            // A lossy push (SPEC §6.5) is judged and merged dequantized, run by run (checked
            // above by checkFinite).
            guard req.model.table.elementCount == own.storage.count, req.model.data.count == req.model.table.dataByteCount else {
                throw WireError(.lengthMismatch, "push model has \(req.model.table.elementCount) weights in \(req.model.data.count) bytes, expected \(own.storage.count) weights")
            }
            // The distance against a snapshot (a few SGD steps may land before the merge).
            let distance = ExchangeMath.relativeDistance(own: own.storage, incoming: req.model)
            let sender = req.sender
            let outcome: PushReceipt = try core.withLock { c in
                if case .outlier(let d, let bound, let why) = c.state.judgeModel(.request, distance: distance, from: sender) {
                    throw RPCError(.modelRejected, "peer \(endpoint) refused the push of \(sender) as an outlier: relative L2 distance \(shortNumber(d)) from its own model, over the bound \(shortNumber(bound)) (\(why); SPEC §5.3, §5.5); nothing was added, take the mass back")
                }
                guard c.pushSum != nil, let t = model.trainer else { throw RPCError(.unavailable, "peer has no model") }
                // A finished peer keeps its final model (SPEC §5.9): the sender takes its mass back.
                if c.state.phase == .done { return .refuse("this peer has finished (its final model is written); take the mass back") }
                let r = c.pushSum!.receive(req.mass)
                guard case .accept(let ownMass, let used, let cut) = r else { return r }
                WireCodec.averageInPlace(t, ownWeight: ownMass, incoming: req.model, incomingWeight: used)
                c.state.recordAccepted(.request, distance: distance)
                if cut > 0 { c.state.weightCapped(from: sender) }
                c.state.membership.markSuccess(sender, exchange: true)
                return r
            }
            switch outcome {
            case .refuse(let why):
                responder.fail(.unavailable, why)
            case .accept(_, let used, let cut):
                if cut > 0 {
                    logger.notice("push-sum mass capped", metadata: ["from": "\(sender)", "claimed": "\(req.mass)", "used": "\(used)"])
                }
                responder.reply(WireCodec.pushSumReply)
            }
        } catch {
            let (code, text) = statusAndText(error)
            logger.warning("push refused", metadata: ["from": "\(responder.peerAddress)", "error": "\(text)"])
            responder.fail(code == .aborted ? .internal : code, text)
        }
    }

    // MARK: - stopping

    /// Ends push-sum on stop (SPEC §5.5, "Stopping"): no more pushes leave, incoming pushes are
    /// refused (their senders take the mass back), the outcomes of pushes in flight are awaited;
    /// then the peer lingers, still refusing, so that every member learns it is gone before its
    /// port closes (a push to a closed port would be unconfirmed). Logs the final mass.
    func drainPushSum() {
        guard config.averaging == .pushSum else { return }
        pushDriver.queue.sync {
            pushDriver.timer?.cancel()
            pushDriver.timer = nil
        }
        core.withLock { $0.pushSum?.beginDraining() }
        let until = ContinuousClock.now + config.exchangeTimeout + .seconds(1)
        while core.withLock({ !($0.pushSum?.inFlight.isEmpty ?? true) }) && ContinuousClock.now < until {
            wake.wait(upTo: .milliseconds(10))
        }
        let hasPeers = core.withLock { $0.state.membership.count > 0 }
        if hasPeers {
            let linger = min(Duration.seconds(2), max(Duration.seconds(1), config.pushInterval * 20))
            let end = ContinuousClock.now + linger
            while ContinuousClock.now < end { wake.wait(upTo: end - ContinuousClock.now) }
        }
        let r = core.withLock { $0.pushSum?.report }
        if let r {
            logger.notice("push-sum final mass", metadata: [
                "push_sum_mass": "\(r.mass)", "in_flight": "\(r.inFlight)", "mass_unconfirmed": "\(r.massUnconfirmed)",
                "mass_lost": "\(r.massLost)", "mass_capped": "\(r.massCapped)", "mass_discarded": "\(r.massDiscarded)", "sent": "\(r.sent)", "received": "\(r.received)",
                "returned": "\(r.returned)"])
        }
    }
}
