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

    /// A synchronous two-peer exchange started by this node (loop thread only).
    @discardableResult
    func exchange(with peer: String) -> ExchangeOutcome {
        guard let ep = try? Endpoint(parsing: peer) else {
            core.withLock { $0.state.membership.remove(peer) }
            return .failed(.invalidArgument, "not an endpoint: \(peer)")
        }
        let me = endpoint.description
        let (begun, stopping) = core.withLock { c -> (Counters?, Bool) in
            guard c.state.beginOutgoing(peer: peer) else { return (nil, c.state.stopRequested) }
            return (counters(c), false)
        }
        if stopping { return .failed(.unavailable, "this peer is stopping") }
        guard let cnt = begun else { return .localBusy }
        // We hold the slot: the weights cannot change until we install the reply.
        guard let t = model.trainer, let arch = model.architecture else {
            core.withLock { _ = $0.state.finishOutgoing(peer: peer, result: .failed) }
            return .localBusy
        }
        let request: ByteSlice
        do {
            request = try WireCodec.encodeExchangeRequest(sender: me, weight: Double(shard.count), architecture: arch,
                                                          params: t.parameters, round: cnt.round, step: cnt.step,
                                                          samples: cnt.samples, into: requestBuffer)
        } catch {
            core.withLock { _ = $0.state.finishOutgoing(peer: peer, result: .notSent) }
            logger.error("cannot encode an exchange request", metadata: ["error": "\(error)"])
            return .failed(.internal, "\(error)")
        }
        let result = callBlocking(ep, .gossipExchange, request, deadline: config.exchangeTimeout,
                                  options: RPCOptions(compression: config.compression, checksum: false))
        switch result {
        case .success(let msg):
            do {
                let reply = try WireCodec.decodeExchangeReply(msg.payload, expectedSchemaHash: t.parameters.schemaHash)
                try WireCodec.checkFinite(reply.model)
                // Everything that can fail is checked; install in one short critical section.
                let (distance, contradicting): (Double, [PeerEntry]) = try core.withLock { c in
                    let d = try WireCodec.installAveraged(reply.model, into: t)
                    let (_, bad) = c.state.membership.merge(entries: WirePeers.entries(reply.peers))
                    c.state.finishOutgoing(peer: peer, result: .installed)
                    return (d, bad)
                }
                logContradicting(contradicting, from: peer)
                wake.signal()
                logger.debug("exchanged", metadata: ["with": "\(peer)", "distance_before": "\(distance)"])
                return .ok(distanceBefore: distance)
            } catch {
                core.withLock { _ = $0.state.finishOutgoing(peer: peer, result: .badReply) }
                logger.warning("exchange reply refused", metadata: ["with": "\(peer)", "error": "\(error)"])
                return .failed(.internal, "the reply of \(peer) was refused: \(error)")
            }
        case .failure(let err):
            let outcome: PeerState.OutgoingResult = err.code == .aborted ? .remoteBusy
                : err.code == .failedPrecondition ? .incompatible
                : err.code == .cancelled ? .notSent : .failed
            let dropped = core.withLock { $0.state.finishOutgoing(peer: peer, result: outcome) }
            if outcome == .remoteBusy {
                logger.debug("peer busy", metadata: ["peer": "\(peer)"])
                return .remoteBusy
            }
            logger.warning("exchange failed", metadata: ["with": "\(peer)", "status": "\(err.code.name)", "why": "\(err.message)"])
            if dropped { logger.notice("peer dropped", metadata: ["peer": "\(peer)", "after": "\(err.code.name)"]) }
            return .failed(err.code, err.message)
        }
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
        guard let expected: UInt64 = core.withLock({ _ in model.trainer?.parameters.schemaHash }) else {
            core.withLock { $0.state.refusedBeforeSlot() }
            responder.fail(.unavailable, "peer is still onboarding and has no model yet; try another peer")
            return
        }
        let request: GossipExchangeRequest
        do {
            request = try WireCodec.decodeExchangeRequest(msg.payload, expectedSchemaHash: expected)
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
            let reply = try averagedReply(request)
            core.withLock { c in
                model.trainer!.withParameters { p in swap(&p.storage, &model.scratch) }
                c.state.finishIncoming(sender: sender, applied: true)
            }
            wake.signal()
            responder.reply(reply, options: RPCOptions(compression: config.compression, checksum: false))
        } catch {
            core.withLock { $0.state.finishIncoming(sender: sender, applied: false) }
            wake.signal()
            let (code, text) = statusAndText(error)
            logger.warning("exchange not applied", metadata: ["from": "\(sender)", "error": "\(text)"])
            responder.fail(code == .aborted ? .internal : code, text)
        }
    }

    /// The slot holder's work for an incoming exchange: the average of our weights and the
    /// request's into `model.scratch`, and the reply carrying it. Changes no model state.
    func averagedReply(_ request: GossipExchangeRequest) throws -> ByteSlice {
        guard let t = model.trainer, let arch = model.architecture else {
            throw RPCError(.unavailable, "peer has no model")
        }
        let count = t.parameters.parameterCount
        guard request.model.data.count == count * 4 else {
            throw WireError(.lengthMismatch, "exchange model has \(request.model.data.count) bytes, expected \(count * 4)")
        }
        if model.scratch.count != count { model.scratch = [Float](repeating: 0, count: count) }
        // A read (not `withParameters`, which is a write access): others may read meanwhile.
        let own = t.parameters
        ExchangeMath.average(own: own.storage, ownWeight: Double(shard.count),
                             incoming: request.model, incomingWeight: request.weight, into: &model.scratch)
        // A ParameterSet view of the scratch buffer for the encoder (swapped in and back, no copy).
        var averaged = t.parameters
        swap(&averaged.storage, &model.scratch)
        defer { swap(&averaged.storage, &model.scratch) }
        let me = endpoint.description
        let (cnt, peers) = core.withLock { c in
            (counters(c), c.state.membership.entries(c.state.peerSample(excluding: request.sender, me: me, limit: WireCodec.limits.maxPeers),
                                                     selfIdentity: config.security.advertisedIdentity))
        }
        return try WireCodec.encodeExchangeReply(weight: Double(shard.count),
                                                 peers: WirePeers.list(peers),
                                                 architecture: arch, params: averaged, round: cnt.round,
                                                 step: cnt.step, samples: cnt.samples, into: replyBuffer)
    }

    /// Queues a triggered exchange for the loop, which answers the caller when it ends.
    func handleTrigger(_ msg: InboundMessage, _ responder: RPCResponder) {
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
