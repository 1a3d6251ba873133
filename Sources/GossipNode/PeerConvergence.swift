// The peer's side of convergence and the end of training (SPEC §5.7-§5.9): feeding the
// detector after each round, spreading done votes, the final averaging steps, the final model
// (STATE_DIR/final.safetensors), adopting a finished network's model, and the Votes and
// WaitConverged handlers. The decisions are values (Convergence.swift); this file does the I/O.
import Foundation
import GossipML
import GossipNet
import GossipWire
import Synchronization

/// Convergence state kept inside `PeerState` (under the peer's lock).
struct PeerConvergenceState: Sendable {
    var detector: ConvergenceDetector
    var votes: VoteSet
    /// A finished peer that answered this one's Votes: adopt its model and end.
    var adoptFrom: String?
    /// The final model is written (sticky).
    var finished = false
    var finalModelPath: String?
    /// Final averaging steps done.
    var finalRounds = 0
    /// The learning-rate scale the detector set (1 = the configured rate).
    var learningRateScale = 1.0

    init(config: ConvergenceConfig, mayReduceRate: Bool, voteCapacity: Int) {
        detector = ConvergenceDetector(config: config, mayReduceRate: mayReduceRate)
        votes = VoteSet(capacity: voteCapacity)
    }
}

/// WaitConverged requests held until the node finishes.
struct ConvergenceWaiters: Sendable {
    /// The most requests held at once; more are answered RESOURCE_EXHAUSTED.
    static let maxPending = 256
    var next = 0
    var pending: [Int: RPCResponder] = [:]
    /// The reply, once the node has finished (later requests are answered at once).
    var result: WaitConvergedResult?
}

extension PeerNode {
    /// The convergence options in force: detection is off with --rounds.
    static func convergenceState(_ config: PeerConfig) -> PeerConvergenceState {
        var c = config.convergence
        if config.rounds != nil { c.enabled = false }
        return PeerConvergenceState(config: c, mayReduceRate: config.rounds == nil,
                                    voteCapacity: WireCodec.limits.maxPeers)
    }

    var convergenceEnabled: Bool { config.convergence.enabled && config.rounds == nil }

    // MARK: - the loop's hooks

    /// Feeds round `r`'s mean loss to the detector and acts on its verdict.
    func convergenceAfterRound(loss: Double, round r: Int) {
        guard convergenceEnabled else { return }
        let me = endpoint.description
        let base = Double(config.sgd.learningRate)
        let action: ConvergenceAction = core.withLock { c in
            let a = c.state.convergence.detector.roundCompleted(loss: loss)
            switch a {
            case .setLearningRateScale(let s):
                c.state.convergence.learningRateScale = s
                model.trainer?.config.learningRate = Float(base * s)
            case .converged:
                c.state.convergence.votes.merge([me])
            case .none:
                break
            }
            return a
        }
        let d = core.withLock { $0.state.convergence.detector }
        switch action {
        case .setLearningRateScale(let s):
            logger.notice("loss plateau: learning rate lowered", metadata: [
                "round": "\(r)", "lr": "\(base * s)", "improvement": "\(d.lastImprovement ?? 0)",
                "distance": "\(d.lastDistance.map { "\($0)" } ?? "-")"])
        case .converged:
            logger.notice("converged: voting done", metadata: [
                "round": "\(r)", "improvement": "\(d.lastImprovement ?? 0)", "distance": "\(d.lastDistance ?? 0)",
                "models_met": "\(d.lastModelsMet)",
                "relaxed": "\(d.relaxed)"])
        case .none:
            break
        }
    }

    /// Sends this peer's votes to a random live peer, without waiting: the reply is merged
    /// when it arrives (SPEC §5.7). A reply from a finished peer marks it for adoption.
    func spreadVotes() {
        guard let peer = choosePeer(), let ep = try? Endpoint(parsing: peer) else { return }
        let msg = votesMessage()
        guard let payload = try? WireCodec.encode(msg) else { return }
        client.call(ep, type: .votes, payload: payload, deadline: .seconds(3)) { [weak self] result in
            guard let self else { return }
            switch result {
            case .success(let m):
                guard let reply = try? WireCodec.decodeVotes(m.payload) else {
                    self.logger.debug("malformed Votes reply", metadata: ["from": "\(peer)"])
                    return
                }
                self.mergeVotes(reply, from: peer)
            case .failure(let e):
                // UNIMPLEMENTED: an older peer without votes. Anything else: not a failed
                // contact either (the averaging step judges liveness).
                self.logger.trace("Votes not delivered", metadata: ["to": "\(peer)", "error": "\(e)"])
            }
        }
    }

    /// This peer's Votes message: its endpoint, finished flag and known voters (sorted, bounded).
    func votesMessage() -> VotesMessage {
        let me = endpoint.description
        return core.withLock { c in
            VotesMessage(sender: me, flags: c.state.convergence.finished ? VotesMessage.finishedFlag : 0,
                         voters: Array(c.state.convergence.votes.sorted.prefix(WireCodec.limits.maxPeers)))
        }
    }

    /// Merges votes a peer sent (its request or its reply). `from` is the dialed endpoint for a
    /// reply, the sender for a request. A finished sender is marked for adoption while this
    /// peer still trains.
    func mergeVotes(_ m: VotesMessage, from peer: String) {
        let adopt: Bool = core.withLock { c in
            if m.finished {
                // A finished peer is a voter too.
                c.state.convergence.votes.merge([peer])
            }
            c.state.convergence.votes.merge(m.voters)
            guard m.finished, convergenceEnabled, Membership.isEndpoint(peer), !c.state.convergence.finished,
                  c.state.convergence.adoptFrom == nil,
                  c.state.phase == .training || c.state.phase == .averaging else { return false }
            c.state.convergence.adoptFrom = peer
            return true
        }
        if adopt {
            wake.signal()
            logger.notice("a finished peer answered: adopting its final model", metadata: ["from": "\(peer)"])
        }
    }

    /// Called by the loop before each round: adopts a finished peer's model, or runs the final
    /// averaging steps when the votes cover the network. Returns true when the loop must end
    /// (the peer finished; with --serve-when-done after serving until stopped).
    func convergenceEnds() -> Bool {
        let me = endpoint.description
        let (adoptFrom, covers) = core.withLock { c -> (String?, Bool) in
            let members = c.state.membership.endpoints
            let covers = convergenceEnabled
                && c.state.convergence.votes.covers(members: members, me: me, quorum: config.convergence.quorum)
            return (c.state.convergence.adoptFrom, covers)
        }
        if let adoptFrom {
            if adoptFinalModel(from: adoptFrom) {
                concludeTraining(source: "adopted from \(adoptFrom)")
                return true
            }
            core.withLock { $0.state.convergence.adoptFrom = nil }   // try again when another answers
            return false
        }
        guard covers else { return false }
        let voters = core.withLock { $0.state.convergence.votes.voters.count }
        logger.notice("the done votes cover the network: training stops, final averaging", metadata: [
            "voters": "\(voters)", "final_rounds": "\(config.convergence.finalRounds)"])
        core.withLock { $0.state.enterFinal() }
        for _ in 0..<config.convergence.finalRounds {
            if isStopping { return true }
            averagingStep()
            spreadVotes()
            core.withLock { $0.state.convergence.finalRounds += 1 }
            sleep(for: config.averagingInterval)
        }
        if isStopping { return true }
        concludeTraining(source: "final averaging")
        return true
    }

    /// Writes the final model, enters `done`, answers the waiters; then serves until stopped
    /// (--serve-when-done) or asks the node to stop (it exits 0).
    private func concludeTraining(source: String) {
        // Freeze the model: from now on exchanges are answered busy (PeerState.beginIncoming)
        // and none is started; one already holding the slot finishes first.
        core.withLock { $0.state.enterDone() }
        let until = ContinuousClock.now + config.exchangeTimeout + .seconds(1)
        while core.withLock({ $0.state.slot != .idle }) && ContinuousClock.now < until {
            wake.wait(upTo: .milliseconds(10))
        }
        evaluateNow()
        var path: String?
        do {
            path = try writeFinalModel(source: source)
        } catch {
            logger.error("the final model could not be written", metadata: ["error": "\(error)"])
        }
        if checkpoints != nil {
            do { try writeCheckpoint() } catch {
                logger.error("checkpoint failed", metadata: ["error": "\(error)"])
            }
        }
        let me = endpoint.description
        let result: WaitConvergedResult = core.withLock { c in
            c.state.convergence.finished = true
            c.state.convergence.finalModelPath = path
            c.state.convergence.votes.merge([me])
            c.state.enterDone()
            return WaitConvergedResult(endpoint: me, phase: config.convergence.serveWhenDone ? "done" : "stopping",
                                       round: c.state.round, accuracy: c.state.accuracy, finalModel: path,
                                       voters: c.state.convergence.votes.voters.count)
        }
        logger.notice("finished: final model written", metadata: [
            "path": "\(path ?? "-")", "round": "\(result.round)",
            "accuracy": "\(result.accuracy.map { "\($0)" } ?? "-")", "source": "\(source)"])
        answerWaiters(result)
        if config.convergence.serveWhenDone {
            while !isStopping { sleep(for: .milliseconds(200)) }
        } else {
            if isExternal { awaitTheTrainersFinalPull() }
            requestStop()
        }
    }

    /// How long an external peer stays up after its final model for its trainer to pull it.
    static let finalPullWait: Duration = .seconds(10)

    /// An external peer whose trainer has pulled before stays up after its final model until
    /// the trainer pulled it (its push is refused OUT_OF_RANGE, then it pulls; SPEC §5.12), at
    /// most `finalPullWait`: exiting at once would leave the trainer a closed socket instead.
    private func awaitTheTrainersFinalPull() {
        guard external.withLock({ $0.report.pulls > 0 }) else { return }
        let until = ContinuousClock.now + Self.finalPullWait
        while !isStopping, !external.withLock({ $0.finalPulled }), ContinuousClock.now < until {
            wake.wait(upTo: .milliseconds(50))
        }
        if !external.withLock({ $0.finalPulled }) {
            logger.notice("the trainer did not pull the final model within \(Self.finalPullWait); stopping anyway")
        }
    }

    /// Writes `STATE_DIR/final.safetensors` atomically with the model's metadata. Returns its
    /// path, nil without --state-dir.
    private func writeFinalModel(source: String) throws -> String? {
        guard let dir = config.stateDir else { return nil }
        let path = (dir as NSString).appendingPathComponent("final.safetensors")
        guard let (params, meta) = core.withLock({ c -> (ParameterSet, [String: String])? in
            guard let t = model.trainer, let arch = model.architecture else { return nil }
            var meta = modelMetadata(arch, c.state)
            meta["final"] = "true"
            meta["final_source"] = source
            meta["voters"] = "\(c.state.convergence.votes.voters.count)"
            if let a = c.state.accuracy { meta["accuracy"] = "\(a)" }
            if let l = c.state.heldOutLoss { meta["held_out_loss"] = "\(l)" }
            return (t.parameters, meta)
        }) else { return nil }
        try SafeTensors.write(params, metadata: meta, to: path)
        return path
    }

    /// Fetches a finished peer's model (GetModel) and installs it. Returns false when it could
    /// not (unreachable, another schema, not finite).
    private func adoptFinalModel(from peer: String) -> Bool {
        guard let ep = try? Endpoint(parsing: peer),
              let hash = core.withLock({ _ in model.trainer?.parameters.schemaHash }) else { return false }
        switch callBlocking(ep, .getModel, try! WireCodec.encode(GetModelRequest(schemaHash: hash)), deadline: config.exchangeTimeout) {
        case .success(let msg):
            do {
                let (_, params, state) = try WireCodec.decodeModel(msg.payload, expected: hash)
                guard params.allFinite else { throw NodeError("the model holds NaN or Inf") }
                // Judged like an exchange reply (SPEC §5.3): a "finished" insider cannot hand
                // out a model far from this peer's.
                let own = core.withLock { _ in model.trainer?.parameters.storage } ?? []
                guard own.count == params.parameterCount else { throw NodeError("the model has another size") }
                let d = ExchangeMath.relativeDistance(own: own, incoming: state)
                let verdict = core.withLock { $0.state.judgeModel(.reply, distance: d, from: peer) }
                if case .outlier(let distance, let bound, let why) = verdict {
                    throw NodeError("its model is at relative L2 distance \(distance) from this peer's, over the bound \(bound) (\(why))")
                }
                // Installed like an exchange's result: only while no exchange holds the model.
                let until = ContinuousClock.now + config.exchangeTimeout + .seconds(1)
                while true {
                    let installed: Bool = try core.withLock { c in
                        guard c.state.slot == .idle, let t = model.trainer else { return false }
                        try t.setParameters(params)
                        c.state.enterFinal()
                        c.state.enterDone()   // frozen: it is the network's final model
                        return true
                    }
                    if installed { return true }
                    if ContinuousClock.now > until || isStopping { return false }
                    wake.wait(upTo: .milliseconds(10))
                }
            } catch {
                logger.warning("the finished peer's model was refused", metadata: ["from": "\(peer)", "error": "\(error)"])
                return false
            }
        case .failure(let e):
            logger.warning("could not fetch the finished peer's model", metadata: ["from": "\(peer)", "error": "\(e)"])
            return false
        }
    }

    /// The checkpoint's convergence keys: the learning-rate scale and reductions, so that a
    /// restarted peer goes on at the rate the network reached (not the initial one).
    func convergenceMetadata(_ st: PeerState, into meta: inout [String: String]) {
        guard convergenceEnabled, !isExternal else { return }   // an external peer has no rate
        meta["lr_scale"] = "\(st.convergence.learningRateScale)"
        meta["lr_reductions"] = "\(st.convergence.detector.reductionsDone)"
    }

    /// Restores what `convergenceMetadata` saved (a checkpoint without the keys changes nothing).
    func resumeConvergence(_ meta: [String: String]) {
        guard convergenceEnabled, !isExternal, let scale = meta["lr_scale"].flatMap(Double.init),
              let reductions = meta["lr_reductions"].flatMap(Int.init) else { return }
        let base = Double(config.sgd.learningRate)
        let applied: Double = core.withLock { c in
            c.state.convergence.detector.resume(learningRateScale: scale, reductions: reductions)
            let s = c.state.convergence.detector.learningRateScale
            c.state.convergence.learningRateScale = s
            model.trainer?.config.learningRate = Float(base * s)
            return s
        }
        logger.info("resumed the learning-rate reductions", metadata: ["lr": "\(base * applied)", "reductions": "\(reductions)"])
    }

    // MARK: - server side

    /// Votes (SPEC §5.7): merges the sender's votes and answers with this peer's.
    func handleVotes(_ msg: InboundMessage, _ responder: RPCResponder) {
        do {
            let req = try WireCodec.decodeVotes(msg.payload)
            guard Membership.isEndpoint(req.sender) else {
                throw RPCError(.invalidArgument, "sender '\(req.sender)' is not HOST:PORT with a non-zero port")
            }
            mergeVotes(req, from: req.sender)
            let reply = votesMessage()
            responder.reply { try WireCodec.encode(reply) }
        } catch {
            responder.fail(for: error)
        }
    }

    /// WaitConverged (SPEC §5.8): answered at once when finished, else held until the node
    /// finishes, the timeout passes (DEADLINE_EXCEEDED) or it stops first (UNAVAILABLE).
    func handleWaitConverged(_ msg: InboundMessage, _ responder: RPCResponder) {
        let req: WaitConvergedRequest
        do { req = try WireCodec.decodeWaitConvergedRequest(msg.payload) } catch {
            responder.fail(for: error)
            return
        }
        enum Decision { case now(WaitConvergedResult), full, held(Int) }
        let decision: Decision = waiters.withLock { w in
            if let r = w.result { return .now(r) }
            guard w.pending.count < ConvergenceWaiters.maxPending else { return .full }
            w.next += 1
            w.pending[w.next] = responder
            return .held(w.next)
        }
        switch decision {
        case .now(let r):
            responder.reply { try WireCodec.encodeWaitConvergedReply(r) }
        case .full:
            responder.fail(.resourceExhausted, "\(ConvergenceWaiters.maxPending) WaitConverged requests are already waiting on this node; try again later")
        case .held(let id):
            let ms = min(req.timeoutMs, WaitConvergedRequest.maxTimeoutMs)
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Int(ms))) { [weak self] in
                guard let self else { return }
                let r = self.waiters.withLock { $0.pending.removeValue(forKey: id) }
                r?.fail(.deadlineExceeded, "this node has not finished training within \(ms) ms (phase \(self.core.withLock { $0.state.phase.rawValue }))")
            }
        }
    }

    /// Answers every held WaitConverged with `result`; later requests get it at once.
    func answerWaiters(_ result: WaitConvergedResult) {
        let held = waiters.withLock { w -> [RPCResponder] in
            w.result = result
            defer { w.pending = [:] }
            return Array(w.pending.values)
        }
        for r in held { r.reply { try WireCodec.encodeWaitConvergedReply(result) } }
    }

    /// The node stops before it finished: held waiters are told so (UNAVAILABLE).
    func failWaiters() {
        let held = waiters.withLock { w -> [RPCResponder] in
            defer { w.pending = [:] }
            return Array(w.pending.values)
        }
        for r in held { r.fail(.unavailable, "this peer stopped before it finished training") }
    }

    /// The status `convergence` object.
    func convergenceStatus(_ st: PeerState) -> StatusReport.Convergence {
        let c = st.convergence
        let me = endpoint.description
        let members = st.membership.endpoints
        var s = StatusReport.Convergence()
        s.enabled = convergenceEnabled
        s.converged = c.detector.converged || (isExternal && c.votes.voters.contains(me))   // an external peer's vote
        s.finished = c.finished
        s.voters = c.votes.sorted
        s.votesCounted = c.votes.counted(members: members, me: me)
        s.votesNeeded = VoteSet.needed(members: members, me: me, quorum: config.convergence.quorum)
        s.learningRate = Double(config.sgd.learningRate) * c.learningRateScale
        s.reductions = c.detector.reductionsDone
        s.windowsJudged = c.detector.windowsJudged
        s.lossImprovement = c.detector.lastImprovement
        s.distance = c.detector.lastDistance
        s.modelsMet = c.detector.lastModelsMet
        s.finalRounds = c.finalRounds
        s.finalModel = c.finalModelPath
        s.relaxed = c.detector.relaxed
        return s
    }
}
