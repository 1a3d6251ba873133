// The peer role: onboarding (Register, then GetModel or resume from a checkpoint), then the
// loop Train -> Gossip -> Repeat, and the server side of every request a peer answers.
//
// Concurrency rule (one owner): every field below `lock` is touched only while holding it.
// Model mutation happens under the lock: a training step, the in-place average of an
// incoming exchange, and installing the reply of an outgoing one. While this node's own
// outgoing exchange is in flight `busy` is set: training pauses and incoming exchanges are
// answered ABORTED ("busy"), so two peers choosing each other at once both back off instead
// of deadlocking. Averaging math for an incoming exchange runs under the lock in one
// vectorised pass, so training never sees a half-averaged model.
import Foundation
import GossipML
import GossipNet
import GossipWire
import Logging

/// A training peer. `@unchecked Sendable`: mutable state is guarded by `lock`.
public final class PeerNode: @unchecked Sendable {
    public let config: PeerConfig
    let logger: Logger
    let server: RPCServer
    let client: RPCClient
    let split: DatasetSplit
    let shard: Dataset
    let started = ContinuousClock.now
    private let work = DispatchQueue(label: "gossip.peer.work", attributes: .concurrent)

    // Guarded by `lock`.
    private let lock = NSCondition()
    private var trainer: Trainer?
    private var architecture: MLPArchitecture?
    private var membership: Membership
    private var busy = false
    private var triggerRunning = false
    private var stopping = false
    private var phase = "onboarding"
    private var round = 0
    private var stepBase = 0
    private var samplesBase = 0
    private var lastLoss: Double?
    private var accuracy: Double?
    private var heldOutLoss: Double?
    private var exchanges = StatusReport.Exchanges()
    private var checkpointRound: Int?
    private var resumedFromRound: Int?
    private var rng: SplitMix
    /// Reused outgoing payload buffers (a large model is not re-allocated per exchange).
    private let requestBuffer = PayloadBuffer()
    private let replyBuffer = PayloadBuffer()
    private(set) public var endpoint: Endpoint

    /// Loads the dataset and its shard; does no I/O on the network yet.
    public init(config: PeerConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        self.split = try config.dataset.load()
        self.shard = try split.train.shard(index: config.shardIndex, of: config.shardCount,
                                           seed: config.seed, nonIIDAlpha: config.nonIIDAlpha)
        guard shard.count > 0 else {
            throw NodeError("shard \(config.shardIndex)/\(config.shardCount) of \(config.dataset) is empty; use fewer shards or another --non-iid alpha")
        }
        var serverConfig = ServerConfig()
        serverConfig.limits = Limits.default
        serverConfig.maxConnections = 1024   // pooled connections from every other peer
        self.server = RPCServer(config: serverConfig)
        self.client = RPCClient()
        self.endpoint = config.listen
        self.membership = Membership(selfEndpoint: config.listen.description, dropAfter: config.dropAfter)
        self.rng = SplitMix(seed: config.seed &+ UInt64(config.shardIndex) &* 0x9E37)
    }

    // MARK: - lifecycle

    /// Starts serving and returns the advertised endpoint. Prints `listening HOST:PORT`.
    public func start() throws -> Endpoint {
        registerHandlers()
        let bound = try server.start(host: config.listen.host, port: config.listen.port)
        let advertised = config.advertise ?? bound
        warnIfUnreachable(advertised, logger: logger)
        lock.withLock {
            endpoint = advertised
            membership.setSelf(advertised.description)
        }
        emitLine("listening \(advertised)")
        logger.info("serving", metadata: ["endpoint": "\(advertised)", "dataset": "\(config.dataset)",
                                          "shard": "\(config.shardIndex)/\(config.shardCount)", "rows": "\(shard.count)"])
        return advertised
    }

    /// Onboards, then trains and gossips until stopped. Blocks the calling thread.
    /// - Throws: `NodeError` when no model can be had (no checkpoint, no live peer, no bootstrap).
    public func run() throws {
        guard try onboard() else {
            logger.notice("stopped while onboarding")
            finish()
            return
        }
        if let f = config.readyFile { try writeReadyFile(f, lock.withLock { endpoint.description }) }
        loop()
        finish()
    }

    /// Asks the loop to stop; `run()` then checkpoints, shuts the server down and returns.
    public func requestStop() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
    }

    private var isStopping: Bool { lock.withLock { stopping } }

    private func finish() {
        // Let an exchange in flight (e.g. one a TriggerGossip started) install its reply
        // before the last checkpoint; none can start now that `stopping` is set.
        lock.withLock {
            phase = "stopping"
            let until = Date().addingTimeInterval(config.exchangeTimeout.seconds + 1)
            while busy && Date() < until { _ = lock.wait(until: until) }
        }
        if config.stateDir != nil { checkpoint() }
        let done = DispatchSemaphore(value: 0)
        server.shutdown(grace: .seconds(2)) { done.signal() }
        _ = done.wait(timeout: .now() + 5)
        client.close()
        logger.info("stopped", metadata: ["round": "\(lock.withLock { round })"])
    }

    // MARK: - onboarding

    /// Registers and gets a model (or resumes). Returns false when stopped before it had one.
    private func onboard() throws -> Bool {
        let deadline = ContinuousClock.now + config.onboardTimeout
        let resumed = try loadCheckpoint()
        var attempt = 0
        while true {
            try registerEverywhere()
            if resumed { break }
            if let (arch, params, counters) = try fetchModel() {
                try install(arch: arch, params: params)
                logger.info("joined", metadata: ["model_from": "\(counters.source)", "round": "\(counters.round)",
                                                 "peers": "\(lock.withLock { membership.count })"])
                break
            }
            attempt += 1
            if isStopping { return false }
            if ContinuousClock.now > deadline {
                throw NodeError("could not get a model: no checkpoint in --state-dir, no live peer and no reachable bootstrap (bootstrap \(config.bootstrap?.description ?? "none"), join \(config.join.map(\.description))); start a bootstrap or pass --join with a live peer")
            }
            sleepUnlessStopped(.milliseconds(Int64(min(2000, 100 * attempt))))
        }
        lock.withLock { phase = "training" }
        return true
    }

    /// Registers with the bootstrap and every --join target.
    /// - Throws: `NodeError` when one refuses this peer's model schema (a checkpoint from
    ///   another network): retrying cannot help.
    private func registerEverywhere() throws {
        let (hash, me) = lock.withLock { (trainer?.parameters.schemaHash ?? 0, endpoint.description) }
        let req = RegisterRequest(endpoint: me, schemaHash: hash)
        var targets: [(Endpoint, Bool)] = config.join.map { ($0, true) }
        if let b = config.bootstrap { targets.insert((b, false), at: 0) }
        guard let payload = try? WireCodec.encode(req) else {
            logger.error("cannot encode Register: endpoint '\(endpoint)' exceeds the wire limits")
            return
        }
        for (target, isPeer) in targets {
            switch callBlocking(target, .register, payload, deadline: .seconds(5)) {
            case .success(let msg):
                do {
                    let reply = try WireCodec.decodeRegisterReply(msg.payload)
                    lock.withLock {
                        membership.merge(reply.peers.peers)
                        if isPeer { membership.markSuccess(target.description) }
                    }
                } catch {
                    logger.warning("register reply malformed", metadata: ["from": "\(target)", "error": "\(error)"])
                }
            case .failure(let err) where err.code == .failedPrecondition:
                let arch = lock.withLock { architecture?.description ?? "?" }
                throw NodeError("\(target) refused this peer's model \(arch) (schema \(StatusReport.hex(hash))): \(err.message); the checkpoint in --state-dir belongs to another network: move it away to join this one")
            case .failure(let err):
                logger.warning("\(isPeer ? "peer" : "bootstrap") unreachable, skipped",
                               metadata: ["endpoint": "\(target)", "error": "\(err)"])
            }
        }
    }

    private struct ModelSourceInfo { var source: String; var round: UInt64 }

    /// The current model from a live peer, else the initial model from the bootstrap.
    /// - Throws: `NodeError` when the network's model cannot fit this peer's dataset (retrying
    ///   would not help).
    private func fetchModel() throws -> (MLPArchitecture, ParameterSet, ModelSourceInfo)? {
        var candidates = lock.withLock { membership.endpoints }
        lock.withLock { candidates.shuffle(using: &rng) }
        var sources: [(String, Bool)] = candidates.map { ($0, true) }
        if let b = config.bootstrap { sources.append((b.description, false)) }
        for (source, isPeer) in sources {
            guard let ep = try? Endpoint(parsing: source) else { continue }
            switch callBlocking(ep, .getModel, try! WireCodec.encode(GetModelRequest(schemaHash: 0)), deadline: config.exchangeTimeout) {
            case .success(let msg):
                do {
                    let (arch, params, model) = try WireCodec.decodeModel(msg.payload, expected: nil)
                    guard shard.featureCount == arch.inputSize, split.train.classCount <= arch.outputSize else {
                        throw NodeError("the network's model \(arch) (from \(source)) takes \(arch.inputSize) inputs and \(arch.outputSize) classes, but dataset \(config.dataset) has \(shard.featureCount) features and \(split.train.classCount) classes; use the network's dataset, or start a bootstrap with --arch \(shard.featureCount),...,\(split.train.classCount)")
                    }
                    return (arch, params, ModelSourceInfo(source: isPeer ? "peer \(source)" : "bootstrap \(source)", round: model.round))
                } catch let e as NodeError {
                    throw e
                } catch {
                    logger.warning("model refused", metadata: ["from": "\(source)", "error": "\(error)"])
                }
            case .failure(let err):
                if isPeer { lock.withLock { _ = membership.markFailure(source) } }
                logger.debug("no model from \(source)", metadata: ["error": "\(err)"])
            }
        }
        return nil
    }

    private func install(arch: MLPArchitecture, params: ParameterSet, resumedStep: Int = 0) throws {
        var sgd = config.sgd
        if config.cosineSchedule, let rounds = config.rounds {
            sgd.decaySteps = max(1, rounds * config.localSteps)
            sgd.scheduleOffset = resumedStep
        }
        let t = try Trainer(architecture: arch, parameters: params, data: shard, config: sgd,
                            seed: config.seed &+ UInt64(config.shardIndex) &+ UInt64(resumedStep))
        lock.withLock {
            trainer = t
            architecture = arch
        }
        server.fitModel(payloadBytes: params.parameterCount * 4)   // receive limits follow the model
    }

    // MARK: - the loop

    private func loop() {
        var averagingTicks = 0
        while !isStopping {
            let roundStart = ContinuousClock.now
            let trainingDone = lock.withLock { config.rounds.map { round >= $0 } ?? false }
            if trainingDone {
                // Training rounds are done: keep averaging so the network reaches consensus,
                // re-evaluating now and then so status shows the current model's accuracy.
                lock.withLock { phase = "averaging" }
                gossipOnce()
                averagingTicks += 1
                if averagingTicks % 5 == 0 { evaluateNow() }
                if config.stateDir != nil, averagingTicks % 50 == 0 { checkpoint() }
                sleepUnlessStopped(config.averagingInterval)
                continue
            }
            guard let loss = trainRound() else { break }
            let r = lock.withLock { () -> Int in
                round += 1
                lastLoss = loss
                return round
            }
            gossipOnce()
            if r % config.evalEvery == 0 || r == config.rounds { evaluateNow() }
            if config.stateDir != nil, r % config.checkpointEvery == 0 { checkpoint() }
            let elapsed = ContinuousClock.now - roundStart
            if elapsed < config.pace { sleepUnlessStopped(config.pace - elapsed) }
        }
    }

    /// Runs `localSteps` SGD steps, one lock hold each. Returns the mean loss, nil when stopping.
    private func trainRound() -> Double? {
        var total: Double = 0
        for _ in 0..<config.localSteps {
            lock.lock()
            while busy && !stopping { lock.wait() }
            if stopping { lock.unlock(); return nil }
            let l = trainer!.train(steps: 1)
            lock.unlock()
            total += Double(l)
        }
        return total / Double(config.localSteps)
    }

    private func sleepUnlessStopped(_ d: Duration) {
        let until = Date().addingTimeInterval(d.seconds)
        lock.lock()
        while !stopping && Date() < until { _ = lock.wait(until: until) }
        lock.unlock()
    }

    /// One exchange with a random live peer; tries up to three peers when one is busy or down.
    private func gossipOnce() {
        var tried = Set<String>()
        for _ in 0..<3 {
            guard let peer = lock.withLock({ membership.randomPeer(excluding: tried, using: &rng) }) else { return }
            tried.insert(peer)
            switch exchange(with: peer) {
            case .ok: return
            case .localBusy: return
            case .remoteBusy, .failed: continue
            }
        }
    }

    // MARK: - outgoing exchange

    enum ExchangeOutcome: Equatable {
        case ok(distanceBefore: Double)
        case localBusy
        case remoteBusy
        case failed(StatusCode, String)
    }

    /// A synchronous two-peer exchange started by this node.
    @discardableResult
    func exchange(with peer: String) -> ExchangeOutcome {
        guard let ep = try? Endpoint(parsing: peer) else {
            lock.withLock { membership.remove(peer) }
            return .failed(.invalidArgument, "not an endpoint: \(peer)")
        }
        // Snapshot our weights straight into the request buffer and mark us busy.
        let request: ByteSlice? = lock.withLock {
            guard !busy, !stopping, let t = trainer, let arch = architecture else { return nil }
            do {
                let payload = try WireCodec.encodeExchangeRequest(sender: endpoint.description, weight: Double(shard.count),
                                                                  architecture: arch, params: t.parameters,
                                                                  round: UInt64(round), step: UInt64(stepBase + t.stepsDone),
                                                                  samples: UInt64(samplesBase + t.samplesSeen),
                                                                  into: requestBuffer)
                busy = true
                return payload
            } catch {
                logger.error("cannot encode an exchange request", metadata: ["error": "\(error)"])
                return nil
            }
        }
        guard let request else {
            return .localBusy
        }
        defer {
            lock.withLock {
                busy = false
                lock.broadcast()
            }
        }
        let result = callBlocking(ep, .gossipExchange, request, deadline: config.exchangeTimeout,
                                  options: RPCOptions(compression: config.compression, checksum: false))
        switch result {
        case .success(let msg):
            do {
                let expected = lock.withLock { trainer!.parameters.schemaHash }
                let reply = try WireCodec.decodeExchangeReply(msg.payload, expectedSchemaHash: expected)
                let distance: Double = try lock.withLock {
                    try WireCodec.installAveraged(reply.model, into: trainer!)
                }
                lock.withLock {
                    membership.merge(reply.peers.peers)
                    membership.markSuccess(peer, exchange: true)
                    exchanges.done += 1
                }
                logger.debug("exchanged", metadata: ["with": "\(peer)", "distance_before": "\(distance)"])
                return .ok(distanceBefore: distance)
            } catch {
                lock.withLock { exchanges.failed += 1 }
                logger.warning("exchange reply refused", metadata: ["with": "\(peer)", "error": "\(error)"])
                return .failed(.invalidArgument, "\(error)")
            }
        case .failure(let err):
            if err.code == .aborted {
                lock.withLock {
                    exchanges.busy += 1
                    membership.markSuccess(peer)
                }
                logger.debug("peer busy", metadata: ["peer": "\(peer)"])
                return .remoteBusy
            }
            let dropped: Bool = lock.withLock {
                exchanges.failed += 1
                if err.code == .failedPrecondition {
                    membership.remove(peer)
                    return true
                }
                return membership.markFailure(peer)
            }
            logger.warning("exchange failed", metadata: ["with": "\(peer)", "status": "\(err.code.name)", "why": "\(err.message)"])
            if dropped { logger.notice("peer dropped", metadata: ["peer": "\(peer)", "after": "\(err.code.name)"]) }
            return .failed(err.code, err.message)
        }
    }

    // MARK: - server side

    private func registerHandlers() {
        server.register(.register) { [weak self] msg, responder in
            guard let self else { return }
            self.work.async { self.handleRegister(msg, responder) }
        }
        server.register(.getModel) { [weak self] msg, responder in
            guard let self else { return }
            self.work.async { self.handleGetModel(msg, responder) }
        }
        server.register(.gossipExchange) { [weak self] msg, responder in
            guard let self else { return }
            self.work.async { self.handleExchange(msg, responder) }
        }
        registerCommonHandlers(server, logger: logger, status: { [weak self] in self?.status() },
                               stop: { [weak self] in self?.requestStop() })
        server.register(.triggerGossip) { [weak self] msg, responder in
            guard let self else { return }
            self.work.async { self.handleTrigger(msg, responder) }
        }
    }

    private func handleRegister(_ msg: InboundMessage, _ responder: RPCResponder) {
        do {
            let req = try WireCodec.decodeRegisterRequest(msg.payload)
            let reply: RegisterReply = try lock.withLock {
                let hash = trainer?.parameters.schemaHash ?? 0
                if req.schemaHash != 0, hash != 0, req.schemaHash != hash {
                    throw RPCError(.failedPrecondition, "schema \(StatusReport.hex(req.schemaHash)) differs from this network's \(StatusReport.hex(hash))")
                }
                membership.markSuccess(req.endpoint)
                return RegisterReply(peers: PeerList(peers: membership.endpoints.filter { $0 != req.endpoint } + [endpoint.description]),
                                     architecture: architecture?.description ?? "", schemaHash: hash)
            }
            logger.info("peer registered", metadata: ["peer": "\(req.endpoint)"])
            responder.reply { try WireCodec.encode(reply) }
        } catch let e as RPCError {
            responder.fail(e.code, e.message)
        } catch {
            responder.fail(.invalidArgument, "\(error)")
        }
    }

    private func handleGetModel(_ msg: InboundMessage, _ responder: RPCResponder) {
        do {
            let req = try WireCodec.decodeGetModelRequest(msg.payload)
            let payload: ByteSlice = try lock.withLock {
                guard let t = trainer, let arch = architecture else {
                    throw RPCError(.unavailable, "peer is still onboarding and has no model yet; ask another peer")
                }
                let hash = t.parameters.schemaHash
                if req.schemaHash != 0, req.schemaHash != hash {
                    throw RPCError(.failedPrecondition, "requested schema \(StatusReport.hex(req.schemaHash)) but this peer holds \(StatusReport.hex(hash))")
                }
                return try WireCodec.encodeModel(architecture: arch, params: t.parameters, round: UInt64(round),
                                             step: UInt64(stepBase + t.stepsDone), samples: UInt64(samplesBase + t.samplesSeen))
            }
            responder.reply(payload, options: RPCOptions(compression: config.compression, checksum: false))
        } catch let e as RPCError {
            responder.fail(e.code, e.message)
        } catch {
            responder.fail(.invalidArgument, "\(error)")
        }
    }

    private func handleExchange(_ msg: InboundMessage, _ responder: RPCResponder) {
        let expected: UInt64? = lock.withLock { trainer?.parameters.schemaHash }
        guard let expected else {
            responder.fail(.unavailable, "peer is still onboarding; try another peer")
            return
        }
        let request: GossipExchangeRequest
        do {
            request = try WireCodec.decodeExchangeRequest(msg.payload, expectedSchemaHash: expected)
            try WireCodec.checkFinite(request.model)
            guard request.weight.isFinite, request.weight > 0, request.weight <= 1e12 else {
                throw RPCError(.invalidArgument, "averaging weight \(request.weight) must be positive and at most 1e12")
            }
        } catch let e as WireError {
            lock.withLock { exchanges.refused += 1 }
            logger.warning("exchange refused", metadata: ["from": "\(responder.peerAddress)", "error": "\(e)"])
            responder.fail(e.statusCode, e.description)
            return
        } catch let e as RPCError {
            responder.fail(e.code, e.message)
            return
        } catch {
            responder.fail(.invalidArgument, "\(error)")
            return
        }
        let reply: ByteSlice? = lock.withLock {
            guard !busy, !stopping, let t = trainer, let arch = architecture,
                  request.model.data.count == t.parameters.parameterCount * 4 else { return nil }
            // Average in place under the lock (one vectorised pass), then encode the result.
            WireCodec.averageInPlace(t, ownWeight: Double(shard.count), incoming: request.model, incomingWeight: request.weight)
            membership.markSuccess(request.sender, exchange: true)
            exchanges.done += 1
            return try? WireCodec.encodeExchangeReply(weight: Double(shard.count),
                                                 peers: PeerList(peers: membership.endpoints + [endpoint.description]),
                                                 architecture: arch, params: t.parameters, round: UInt64(round),
                                                 step: UInt64(stepBase + t.stepsDone), samples: UInt64(samplesBase + t.samplesSeen),
                                                 into: replyBuffer)
        }
        guard let reply else {
            lock.withLock { exchanges.refused += 1 }
            responder.fail(.aborted, "peer \(lock.withLock { endpoint }) is busy in another exchange; try another peer")
            return
        }
        responder.reply(reply, options: RPCOptions(compression: config.compression, checksum: false))
    }

    /// Runs one exchange now, as `gossipctl gossip` asks. One at a time: a second trigger
    /// while one runs is answered ABORTED at once rather than parking a worker thread.
    private func handleTrigger(_ msg: InboundMessage, _ responder: RPCResponder) {
        let req: TriggerGossipRequest
        do {
            req = try WireCodec.decodeTriggerRequest(msg.payload)
        } catch {
            responder.fail(error.statusCode, error.description)
            return
        }
        enum Gate { case go, onboarding, stopping, triggered }
        let gate: Gate = lock.withLock {
            if stopping { return .stopping }
            if trainer == nil { return .onboarding }
            if triggerRunning { return .triggered }
            triggerRunning = true
            return .go
        }
        switch gate {
        case .stopping: responder.fail(.unavailable, "this peer is stopping"); return
        case .onboarding: responder.fail(.unavailable, "this peer has no model yet (still onboarding); try again shortly"); return
        case .triggered: responder.fail(.aborted, "another triggered exchange is running on this peer; try again"); return
        case .go: break
        }
        defer { lock.withLock { triggerRunning = false } }
        var peer = req.peer
        if peer.isEmpty {
            guard let p = lock.withLock({ membership.randomPeer(using: &rng) }) else {
                responder.fail(.notFound, "this peer knows no other peer to gossip with")
                return
            }
            peer = p
        } else if !Membership.isEndpoint(peer) {
            responder.fail(.invalidArgument, "'\(peer)' is not HOST:PORT")
            return
        }
        // Wait briefly for our own exchange (if any) to finish.
        let until = Date().addingTimeInterval(2)
        lock.lock()
        while busy && Date() < until { _ = lock.wait(until: until) }
        lock.unlock()
        switch exchange(with: peer) {
        case .ok(let d):
            let json = jsonText(["distance_before": d, "peer": peer, "result": "ok"])
            responder.reply { try WireCodec.encode(StatusReply(json: json)) }
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

    // MARK: - evaluation, status, checkpoints

    private func evaluateNow() {
        guard let (arch, params) = lock.withLock({ () -> (MLPArchitecture, ParameterSet)? in
            guard let t = trainer, let a = architecture else { return nil }
            return (a, t.parameters)
        }) else { return }
        let e = evaluate(architecture: arch, parameters: params, on: split.test)
        lock.withLock {
            accuracy = e.accuracy
            heldOutLoss = Double(e.loss)
        }
        logger.debug("evaluated", metadata: ["round": "\(lock.withLock { round })", "accuracy": "\(e.accuracy)", "loss": "\(e.loss)"])
    }

    /// The node's status document.
    public func status() -> StatusReport {
        let stats = server.stats
        return lock.withLock {
            var s = StatusReport(role: "peer", endpoint: endpoint.description, phase: phase,
                                 architecture: architecture?.description ?? "",
                                 schemaHash: trainer?.parameters.schemaHash ?? 0)
            s.step = stepBase + (trainer?.stepsDone ?? 0)
            s.samplesSeen = samplesBase + (trainer?.samplesSeen ?? 0)
            s.round = round
            s.loss = lastLoss
            s.accuracy = accuracy
            s.heldOutLoss = heldOutLoss
            s.heldOutCount = split.test.count
            s.dataset = config.dataset.description
            s.shard = "\(config.shardIndex)/\(config.shardCount)"
            s.shardSize = shard.count
            s.preprocessing = split.preprocessing
            s.peers = membership.endpoints
            s.exchanges = exchanges
            s.bytesIn = stats.bytesIn + client.bytesIn
            s.bytesOut = stats.bytesOut + client.bytesOut
            s.uptimeSeconds = (ContinuousClock.now - started).seconds
            s.checkpointRound = checkpointRound
            s.resumedFromRound = resumedFromRound
            return s
        }
    }

    private var checkpointPath: String? { config.stateDir.map { ($0 as NSString).appendingPathComponent("model.safetensors") } }

    /// Writes the model and counters atomically (temporary file, fsync, rename).
    private func checkpoint() {
        guard let path = checkpointPath, let dir = config.stateDir else { return }
        guard let (params, meta, r) = lock.withLock({ () -> (ParameterSet, [String: String], Int)? in
            guard let t = trainer, let arch = architecture else { return nil }
            var meta = split.preprocessing
            meta["arch"] = arch.description
            meta["activation"] = "relu"
            meta["dataset"] = config.dataset.description
            meta["round"] = "\(round)"
            meta["step"] = "\(stepBase + t.stepsDone)"
            meta["samples_seen"] = "\(samplesBase + t.samplesSeen)"
            meta["shard"] = "\(config.shardIndex)/\(config.shardCount)"
            return (t.parameters, meta, round)
        }) else { return }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try SafeTensors.write(params, metadata: meta, to: path)
            lock.withLock { checkpointRound = r }
            logger.info("checkpoint written", metadata: ["path": "\(path)", "round": "\(r)"])
        } catch {
            logger.error("checkpoint failed", metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }

    /// Resumes from `--state-dir` when it holds a checkpoint. Returns true when it did.
    private func loadCheckpoint() throws -> Bool {
        guard let path = checkpointPath, FileManager.default.fileExists(atPath: path) else { return false }
        let (params, meta) = try SafeTensors.read(path: path)
        guard let archText = meta["arch"], let arch = try? MLPArchitecture(parsing: archText), arch.matches(params) else {
            throw NodeError("checkpoint \(path) has no usable 'arch' metadata; move it away to start fresh")
        }
        guard params.allFinite else { throw NodeError("checkpoint \(path) holds NaN or Inf weights; move it away to start fresh") }
        try install(arch: arch, params: params, resumedStep: Int(meta["step"] ?? "") ?? 0)
        lock.withLock {
            round = Int(meta["round"] ?? "") ?? 0
            stepBase = Int(meta["step"] ?? "") ?? 0
            samplesBase = Int(meta["samples_seen"] ?? "") ?? 0
            resumedFromRound = round
            checkpointRound = round
        }
        logger.notice("resumed from checkpoint", metadata: ["path": "\(path)", "round": "\(meta["round"] ?? "0")"])
        return true
    }

    // MARK: - helpers

    func callBlocking(_ ep: Endpoint, _ type: MessageType, _ payload: ByteSlice, deadline: Duration,
                      options: RPCOptions = RPCOptions()) -> Result<InboundMessage, RPCError> {
        callSync(client, ep, type, payload, deadline: deadline, options: options)
    }
}
