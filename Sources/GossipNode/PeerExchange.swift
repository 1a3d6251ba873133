// The peer's exchange service: the exchange this node starts (on the loop thread), the one it
// answers (on Dispatch's pool, never blocking: busy is answered at once), and triggered
// exchanges (queued by the handler, run and answered by the loop). The slot rule in
// PeerState.swift keeps both sides' models in agreement: the responder computes, checks and
// encodes everything before it installs the average in one short critical section.
import Foundation
import GossipML
import GossipNet
import GossipWire
import Logging
import Synchronization

extension PeerNode {
    // MARK: - outgoing exchange (loop thread)

    enum ExchangeOutcome: Equatable {
        case ok(distanceBefore: Double)
        case localBusy
        case remoteBusy
        case failed(StatusCode, String)
    }

    struct Counters: Sendable {
        var round: UInt64, step: UInt64, samples: UInt64
    }

    func counters(_ c: borrowing PeerCore) -> Counters {
        Counters(round: UInt64(c.state.round), step: UInt64(model.step), samples: UInt64(model.samples))
    }

    /// A synchronous two-peer exchange started by this node (loop thread only), reported to
    /// `telemetry`.
    @discardableResult
    func exchange(with peer: String) -> ExchangeOutcome {
        let started = ContinuousClock.now
        let outcome = exchangeAttempt(with: peer)
        if !telemetry.isEmpty {
            let seconds = (ContinuousClock.now - started).seconds
            let round = core.withLock { $0.state.round }
            let event: NodeEvent
            switch outcome {
            case .ok(let d): event = .exchange(round: round, peer: peer, outcome: "ok", status: nil, distance: d, seconds: seconds)
            case .localBusy: event = .exchange(round: round, peer: peer, outcome: "local_busy", status: nil, distance: nil, seconds: seconds)
            case .remoteBusy: event = .exchange(round: round, peer: peer, outcome: "remote_busy", status: nil, distance: nil, seconds: seconds)
            case .failed(let code, _): event = .exchange(round: round, peer: peer, outcome: "failed", status: code.name, distance: nil, seconds: seconds)
            }
            telemetry.emit(event)
        }
        return outcome
    }

    private func exchangeAttempt(with peer: String) -> ExchangeOutcome {
        guard let ep = try? Endpoint(parsing: peer) else {
            core.withLock { $0.state.membership.remove(peer) }
            return .failed(.invalidArgument, "not an endpoint: \(peer)")
        }
        let me = endpoint.description
        // SPEC §5.6: reserve the peer's slot first (training goes on meanwhile); the weights
        // travel only once it is granted. `--no-reserve` exchanges directly (the old way).
        let reserving = config.reserveFirst
        let (begun, stopping, hash) = core.withLock { c -> (Bool, Bool, UInt64) in
            let ok = reserving ? c.state.mayStartExchange() : c.state.beginOutgoing(peer: peer)
            return (ok, !ok && c.state.stopRequested, model.trainer?.parameters.schemaHash ?? 0)
        }
        if stopping { return .failed(.unavailable, "this peer is stopping") }
        guard begun else { return .localBusy }
        let exchangeDeadline = reserving ? reservedExchangeDeadline() : config.exchangeTimeout
        if reserving, case .ended(let outcome) = reserve(ep, peer: peer, schemaHash: hash, lease: exchangeDeadline) {
            return outcome
        }
        let cnt = core.withLock { counters($0) }
        // We hold the slot: the weights cannot change until we install the reply.
        guard let t = model.trainer, let arch = model.architecture else {
            core.withLock { _ = $0.state.finishOutgoing(peer: peer, result: .failed) }
            return .localBusy
        }
        let request: ByteSlice
        // The weight this node sends (an attacker's test hook may lie about it, SPEC §5.3).
        let sentWeight = config.misbehaviour?.weight(honest: ownRows) ?? ownRows
        // A lossy encoding (SPEC §6.5) sends this node's contribution, not its weights as they are,
        // while it trains. It sends F32, its residual included (`finishing`), once its training
        // has ended (the exact finish: the network's final models agree as with F32) and to a
        // peer that refused its encoding.
        let finishing = config.wireDType.isLossy
            && (f32Peers.withLock { $0.contains(peer) } || config.exactFinish && core.withLock { $0.state.trainingEnded })
        let lossy = config.wireDType.isLossy && !finishing
        // The lossy request's tensor table, which the reply must repeat (SPEC §6.5).
        var requestWire: TensorTable?
        do {
            let sent = config.misbehaviour.map { m in attackRNG.withLock { m.distort(t.parameters, rng: &$0) } } ?? t.parameters
            if lossy {
                (request, requestWire) = try lossyExchangeRequest(sender: me, weight: sentWeight, architecture: arch, params: sent, counters: cnt)
            } else if finishing {
                request = try exactFinishRequest(sender: me, weight: sentWeight, architecture: arch, params: sent, counters: cnt)
            } else {
                request = try WireCodec.encodeExchangeRequest(sender: me, weight: sentWeight, architecture: arch,
                                                              params: sent, round: cnt.round, step: cnt.step,
                                                              samples: cnt.samples, into: requestBuffer)
            }
        } catch {
            core.withLock { _ = $0.state.finishOutgoing(peer: peer, result: .notSent) }
            logger.error("cannot encode an exchange request", metadata: ["error": "\(error)"])
            return .failed(.internal, "\(error)")
        }
        let mode = sendCompression(to: peer, params: t.parameters.storage)
        let exchangeStarted = ContinuousClock.now
        let result = callBlocking(ep, .gossipExchange, request, deadline: exchangeDeadline,
                                  options: RPCOptions(compression: mode))
        let exchangeTook = ContinuousClock.now - exchangeStarted
        switch result {
        case .success(let msg):
            recordLink(peer: peer, mode: mode, reply: msg, rawBytes: request.count, took: exchangeTook)
            do {
                // Decoded and checked (schema, architecture, finite weights) once, here.
                let reply = try WireCodec.decodeExchangeReply(msg.payload, expectedSchemaHash: t.parameters.schemaHash)
                // Lossy: the reply carries the responder's contribution; the average is computed here.
                let averaged: Double? = try requestWire.map { w in
                    try lossyReplyAverage(reply, sentWeight: sentWeight, requestTable: w, own: t.parameters.storage)
                }
                let distance = try judgeReply(reply, from: peer, sentWeight: sentWeight, trainer: t, distance: averaged)
                // Everything that can fail is checked; install in one short critical section.
                let contradicting: [PeerEntry] = try core.withLock { c in
                    if lossy {
                        t.withParameters { p in swap(&p.storage, &model.scratch) }
                        model.lossy.commitResidual(errorFeedback: config.errorFeedback)
                    } else {
                        try t.withParameters { p in try reply.model.copyData(into: &p.storage) }
                        // The residual went out with this exact contribution (SPEC §6.5).
                        if finishing { model.lossy.clearResidual() }
                    }
                    let (_, bad) = c.state.membership.merge(entries: WirePeers.entries(reply.peers))
                    c.state.finishOutgoing(peer: peer, result: .installed)
                    c.state.recordAccepted(.reply, distance: distance)
                    c.state.exchangeTrips.record(exchangeTook)
                    return bad
                }
                logContradicting(contradicting, from: peer)
                wake.signal()
                logger.debug("exchanged", metadata: ["with": "\(peer)", "distance_before": "\(distance)"])
                return .ok(distanceBefore: distance)
            } catch {
                // Nothing was installed: this node keeps its own weights.
                core.withLock { _ = $0.state.finishOutgoing(peer: peer, result: .badReply) }
                let (code, text) = statusAndText(error)
                logger.warning("exchange reply refused", metadata: ["with": "\(peer)", "error": "\(text)"])
                return .failed(code == .modelRejected ? .modelRejected : .internal, "the reply of \(peer) was refused: \(text)")
            }
        case .failure(let err):
            // The peer does not accept this node's lossy encoding (SPEC §6.5): F32 with it from now on.
            let encodingRefused = lossy && err.remote && err.code == .unimplemented
            if encodingRefused { rememberF32(peer, after: err.message) }
            let outcome: PeerState.OutgoingResult = encodingRefused ? .badReply
                : err.code == .aborted ? .remoteBusy
                : err.code == .failedPrecondition ? .incompatible
                : err.code == .modelRejected ? .rejectedByPeer
                : err.code == .cancelled ? .notSent : .failed
            let (dropped, reset) = core.withLock { c in
                let resets = c.state.rejected.boundResets
                return (c.state.finishOutgoing(peer: peer, result: outcome), c.state.rejected.boundResets > resets)
            }
            if reset {
                logger.notice("outlier bounds reset: two peers refused this node's model or sent refused replies, so its own model is the likely outlier; back to the warm-up bound",
                              metadata: ["after": "\(peer)"])
            }
            if outcome == .remoteBusy {
                logger.debug("peer busy", metadata: ["peer": "\(peer)"])
                return .remoteBusy
            }
            logger.warning("exchange failed", metadata: ["with": "\(peer)", "status": "\(err.code.name)", "why": "\(err.message)"])
            if dropped { logger.notice("peer dropped", metadata: ["peer": "\(peer)", "after": "\(err.code.name)"]) }
            return .failed(err.code, err.message)
        }
    }

    /// The caller's insider checks of a reply (SPEC §5.3), before anything is installed: the
    /// reply's weight keeps the cap relative to `sentWeight`, and its model's relative L2
    /// distance from this node's is within the reply bound. Returns the distance. The caller
    /// holds the slot (it may read its weights without the lock).
    /// - Throws: `RPCError(.modelRejected)` saying why (counted in `rejected`), or a size error.
    /// With `distance` given (a lossy exchange, SPEC §6.5: the distance of the average this
    /// node computed), the model's distance is not measured again.
    func judgeReply(_ reply: GossipExchangeReply, from peer: String, sentWeight: Double, trainer t: Trainer,
                    distance given: Double? = nil) throws -> Double {
        let cap = config.exchangeBounds.weightCap
        guard ExchangeMath.replyWeightWithinCap(reply.weight, sent: sentWeight, cap: cap) else {
            core.withLock { $0.state.weightCapped(from: peer) }
            throw RPCError(.modelRejected, "it claims averaging weight \(reply.weight), over the cap of \(shortNumber(cap)) x this node's weight \(shortNumber(sentWeight)) (SPEC §5.3); nothing installed")
        }
        let own = t.parameters
        let d: Double
        if let given {
            d = given
        } else {
            guard reply.model.data.count == own.storage.count * 4 else {
                throw WireError(.lengthMismatch, "reply model has \(reply.model.data.count) bytes, expected \(own.storage.count * 4)")
            }
            d = ExchangeMath.relativeDistance(own: own.storage, incoming: reply.model)
        }
        let verdict = core.withLock { $0.state.judgeModel(.reply, distance: d, from: peer) }
        if verdict == .acceptAfterReset {
            logger.notice("outlier bounds reset: two peers refused this node's model or sent refused replies, so its own model is the likely outlier; back to the warm-up bound",
                          metadata: ["with": "\(peer)", "distance": "\(d)"])
        }
        if case .outlier(let d, let bound, let why) = verdict {
            throw RPCError(.modelRejected, "its model is at relative L2 distance \(shortNumber(d)) from this node's, over the bound \(shortNumber(bound)) (\(why); SPEC §5.3); nothing installed, this node keeps its weights")
        }
        return d
    }

    /// Runs the queued TriggerGossip, if any, and answers its caller (loop thread only).
    func serviceTrigger() {
        guard let (asked, responder) = core.withLock({ c -> (String, RPCResponder)? in
            guard c.triggerResponder != nil, let p = c.state.takeTrigger() else { return nil }
            defer { c.triggerResponder = nil }
            return (p, c.triggerResponder!)
        }) else { return }
        defer { core.withLock { $0.state.finishTrigger() } }
        var peer = asked
        if peer.isEmpty {
            guard let p = choosePeer() else {
                responder.fail(.notFound, "this peer knows no other peer to gossip with")
                return
            }
            peer = p
        }
        switch exchange(with: peer) {
        case .ok(let d):
            responder.reply { try WireCodec.encodeTriggerGossipReply(TriggerGossipResult(peer: peer, relativeL2Change: d)) }
        case .localBusy:
            responder.fail(.aborted, "this peer is busy in another exchange; try again")
        case .remoteBusy:
            responder.fail(.aborted, "peer \(peer) is busy in another exchange; try again")
        case .failed(.deadlineExceeded, let why):
            // The deadline is this node's; the caller sees the peer as unavailable.
            responder.fail(.unavailable, "exchange with \(peer) timed out: \(why)")
        case .failed(let code, let why):
            responder.fail(code, "exchange with \(peer) failed: \(why)")
        }
    }


    /// Answers an exchange: everything that can fail (decoding, checks, the average, the
    /// reply's encoding) happens before the model changes; then the average is installed in
    /// one short critical section and the reply handed to the transport. A refused exchange
    /// leaves the model exactly as it was.
    func handleExchange(_ msg: InboundMessage, _ responder: RPCResponder) {
        if config.averaging == .pushSum {
            core.withLock { $0.state.refusedBeforeSlot() }
            responder.fail(.unavailable, "this peer averages by push-sum (SPEC §5.5), not by synchronous exchange; every peer of a network must use the same --averaging")
            return
        }
        guard let expected: UInt64 = core.withLock({ _ in model.trainer?.parameters.schemaHash }) else {
            core.withLock { $0.state.refusedBeforeSlot() }
            responder.fail(.unavailable, "peer is still onboarding and has no model yet; try another peer")
            return
        }
        let request: GossipExchangeRequest
        do {
            request = try WireCodec.decodeExchangeRequest(msg.payload, expectedSchemaHash: expected, dtypes: config.acceptDTypes)
            try WireCodec.checkFinite(request.model)
            guard request.weight.isFinite, request.weight > 0, request.weight <= 1e12 else {
                throw RPCError(.invalidArgument, "averaging weight \(request.weight) must be positive and at most 1e12")
            }
        } catch {
            let (code, text) = statusAndText(error)
            core.withLock { $0.state.refusedBeforeSlot() }
            logger.warning("exchange refused", metadata: ["from": "\(responder.peerAddress)", "error": "\(text)"])
            responder.fail(code, text)
            return
        }
        let sender = request.sender
        let decision: PeerState.IncomingDecision = core.withLock { $0.state.beginIncoming(sender: sender) }
        switch decision {
        case .busy:
            responder.fail(.aborted, "peer \(endpoint) is busy in another exchange; try another peer")
            return
        case .unavailable(let why):
            responder.fail(.unavailable, why)
            return
        case .accept:
            break
        }
        // We hold the slot: training is paused and nobody else writes the weights.
        do {
            let (reply, distance) = try averagedReply(request)
            core.withLock { c in
                model.trainer!.withParameters { p in swap(&p.storage, &model.scratch) }
                c.state.finishIncoming(sender: sender, applied: true)
                c.state.recordAccepted(.request, distance: distance)
            }
            wake.signal()
            logger.debug("averaged", metadata: ["from": "\(sender)", "distance": "\(distance)"])
            responder.reply(reply, options: RPCOptions(compression: replyCompression(msg)))
        } catch {
            core.withLock { $0.state.finishIncoming(sender: sender, applied: false) }
            wake.signal()
            let (code, text) = statusAndText(error)
            logger.warning("exchange not applied", metadata: ["from": "\(sender)", "error": "\(text)"])
            responder.fail(code == .aborted ? .internal : code, text)
        }
    }

    /// The slot holder's work for an incoming exchange: the insider checks (SPEC §5.3: the
    /// request model's distance against the request bound, then the weight cap), the average
    /// of our weights and the request's into `model.scratch`, and the reply carrying it.
    /// Returns the reply and the request's distance. Changes no model state.
    /// - Throws: `RPCError(.modelRejected)` for an outlier (counted in `rejected`).
    func averagedReply(_ request: GossipExchangeRequest) throws -> (ByteSlice, Double) {
        guard let t = model.trainer, let arch = model.architecture else {
            throw RPCError(.unavailable, "peer has no model")
        }
        let count = t.parameters.parameterCount
        // A read (not `withParameters`, which is a write access): others may read meanwhile.
        let own = t.parameters
        // A lossy request (SPEC §6.5) is judged and averaged dequantized.
        let lossy = request.model.table.isLossy
        let distance: Double
        if lossy {
            guard request.model.table.elementCount == count else {
                throw WireError(.lengthMismatch, "exchange model has \(request.model.table.elementCount) weights, expected \(count)")
            }
            model.lossy.prepare(count: count)
            try request.model.dequantize(into: &model.lossy.incoming)
            distance = ExchangeMath.relativeDistance(own: own.storage, incoming: model.lossy.incoming)
        } else {
            guard request.model.data.count == count * 4 else {
                throw WireError(.lengthMismatch, "exchange model has \(request.model.data.count) bytes, expected \(count * 4)")
            }
            distance = ExchangeMath.relativeDistance(own: own.storage, incoming: request.model)
        }
        let verdict = core.withLock { $0.state.judgeModel(.request, distance: distance, from: request.sender) }
        if case .outlier(let d, let bound, let why) = verdict {
            throw RPCError(.modelRejected, "peer \(endpoint) refused the model of \(request.sender) as an outlier: relative L2 distance \(shortNumber(d)) from its own model, over the bound \(shortNumber(bound)) (\(why); SPEC §5.3); nothing was applied. A model this far off is scaled, noised or stale: fetch the network's current model (GetModel) and train from it")
        }
        var ownWeight = ownRows, incomingWeight = request.weight
        if case .claim(let w) = config.misbehaviour {
            ownWeight = w   // test attacker: averages and replies with its false weight, uncapped
        } else {
            let used = ExchangeMath.cappedWeights(own: ownWeight, incoming: request.weight, cap: config.exchangeBounds.weightCap)
            if used.incomingCapped {
                core.withLock { $0.state.weightCapped(from: request.sender) }
                logger.notice("weight capped", metadata: ["from": "\(request.sender)", "claimed": "\(request.weight)", "used": "\(used.incoming)"])
            }
            (ownWeight, incomingWeight) = (used.own, used.incoming)
        }
        if model.scratch.count != count { model.scratch = [Float](repeating: 0, count: count) }
        if lossy {
            // Both sides average the two dequantized contributions (SPEC §6.5); the reply
            // carries this node's own contribution, encoded as the request is.
            return try lossyAveragedReply(request, trainer: t, architecture: arch, ownWeight: ownWeight,
                                          incomingWeight: incomingWeight, distance: distance)
        }
        ExchangeMath.average(own: own.storage, ownWeight: ownWeight,
                             incoming: request.model, incomingWeight: incomingWeight, into: &model.scratch)
        // A ParameterSet view of the scratch buffer for the encoder (swapped in and back, no copy).
        var averaged = t.parameters
        swap(&averaged.storage, &model.scratch)
        defer { swap(&averaged.storage, &model.scratch) }
        let me = endpoint.description
        let (cnt, peers) = core.withLock { c in
            (counters(c), c.state.membership.entries(c.state.peerSample(excluding: request.sender, me: me, limit: WireCodec.limits.maxPeers),
                                                     selfIdentity: config.security.advertisedIdentity))
        }
        // A test attacker sends a distorted copy of the average it installs.
        let sent = config.misbehaviour.map { m in attackRNG.withLock { m.distort(averaged, rng: &$0) } } ?? averaged
        let reply = try WireCodec.encodeExchangeReply(weight: ownWeight,
                                                      peers: WirePeers.list(peers),
                                                      architecture: arch, params: sent, round: cnt.round,
                                                      step: cnt.step, samples: cnt.samples, into: replyBuffer)
        return (reply, distance)
    }

    /// Queues a triggered exchange for the loop, which answers the caller when it ends.
    func handleTrigger(_ msg: InboundMessage, _ responder: RPCResponder) {
        if config.averaging == .pushSum {
            responder.fail(.failedPrecondition, "this peer averages by push-sum (SPEC §5.5): TriggerGossip runs a synchronous exchange, which push-sum peers do not take")
            return
        }
        let req: TriggerGossipRequest
        do {
            req = try WireCodec.decodeTriggerRequest(msg.payload)
        } catch {
            responder.fail(error.statusCode, error.description)
            return
        }
        if !req.peer.isEmpty, !Membership.isEndpoint(req.peer) {
            responder.fail(.invalidArgument, "'\(req.peer)' is not HOST:PORT")
            return
        }
        let decision: PeerState.TriggerDecision = core.withLock { c in
            let d = c.state.requestTrigger(peer: req.peer)
            if d == .queued { c.triggerResponder = responder }
            return d
        }
        switch decision {
        case .queued: wake.signal()
        case .alreadyPending: responder.fail(.aborted, "another triggered exchange is running on this peer; try again")
        case .unavailable(let why): responder.fail(.unavailable, why)
        }
    }
}
