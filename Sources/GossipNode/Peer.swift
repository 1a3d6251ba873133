// The peer role: onboarding (Register, then GetModel or resume from a checkpoint), then the
// loop Train -> Gossip -> Repeat, and the server side of every request a peer answers.
//
// Ownership (see PeerState.swift for the decisions):
// - `core` (one `Mutex`) holds the decision state (`PeerState`) and the responder of a queued
//   TriggerGossip. Every decision is one short critical section.
// - `model` holds the trainer. It is written only under `core`'s lock (a training step, the
//   install of an exchange's result) and only while the rules in PeerState allow it (a step
//   only while no exchange holds the slot). The exchange that holds the slot may *read* the
//   weights without the lock: nobody else writes them meanwhile. Everyone else reads under
//   the lock.
// - One thread runs the loop (`run()`): training, this node's own exchanges, triggered
//   exchanges, evaluation and checkpoints. It is the only thread that blocks on the network.
// - Request handlers run on Dispatch's pool and never block: an exchange that cannot take the
//   slot is answered busy at once; a TriggerGossip is queued for the loop, which answers it.
import Foundation
import GossipML
import GossipNet
import GossipWire
import Logging
import Synchronization

/// What the peer's `Mutex` guards.
struct PeerCore: Sendable {
    var state: PeerState
    /// The caller of the queued (or running) TriggerGossip, answered by the loop.
    var triggerResponder: RPCResponder?
    /// Push-sum mass and accounting (SPEC §5.5); nil when the peer averages synchronously.
    var pushSum: PushSumLedger?
}

/// The model and its trainer. `@unchecked Sendable`: access follows the rule in the file
/// header (writes under the peer's lock; the slot holder may read without it).
final class ModelBox: @unchecked Sendable {
    var trainer: Trainer?
    var architecture: MLPArchitecture?
    /// Training counters carried over from a checkpoint (the trainer counts from its start).
    var stepBase = 0
    var samplesBase = 0
    /// Steps already done in the unfinished round (a checkpoint written at stop saves it, so
    /// that a resumed peer completes that round with the steps it still owes).
    var roundSteps = 0
    /// Reused buffer for the average an incoming exchange computes (slot holder only).
    var scratch: [Float] = []
    /// Buffers of a lossy exchange and the error-feedback residual (SPEC §6.5; slot holder only).
    var lossy = LossyBuffers()

    var step: Int { stepBase + (trainer?.stepsDone ?? 0) }
    var samples: Int { samplesBase + (trainer?.samplesSeen ?? 0) }
}

/// Wakes the loop thread from a timed sleep (stop, trigger, a freed exchange slot).
final class LoopWakeup: @unchecked Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    func signal() { semaphore.signal() }
    /// Sleeps until signalled or `d` has passed. Only the loop thread calls this.
    func wait(upTo d: Duration) { _ = semaphore.wait(timeout: .now() + d.seconds) }
}

/// A training peer. `@unchecked Sendable`: shared state lives in `core` (a `Mutex`) and
/// `model` (see the file header); the rest is immutable or touched by the loop thread only.
public final class PeerNode: @unchecked Sendable {
    public let config: PeerConfig
    let logger: Logger
    let server: RPCServer
    let client: RPCClient
    /// The `verifyPeer` callback of `client` (pinning).
    let verifier: PeerVerifier
    let split: DatasetSplit
    let shard: Dataset
    let started = ContinuousClock.now
    let core: Mutex<PeerCore>
    private let metricsURLBox = Mutex<String?>(nil)
    /// Where this node serves its Prometheus metrics (set by `gossipd --metrics-listen`);
    /// reported in status as `metrics`.
    public var metricsURL: String? {
        get { metricsURLBox.withLock { $0 } }
        set { metricsURLBox.withLock { $0 = newValue } }
    }
    let model = ModelBox()
    /// An external trainer's versions and counters (PeerExternal.swift); unused otherwise.
    let external = Mutex(ExternalVersions())
    let wake = LoopWakeup()
    let checkpoints: PeerCheckpoints?
    private let endpointBox: Mutex<Endpoint>
    /// Peer choice; touched by the loop thread only.
    var rng: SplitMix
    /// Reused outgoing payload buffers (a large model is not re-allocated per exchange).
    /// `requestBuffer`: loop thread only; `replyBuffer`: the incoming slot holder only.
    let requestBuffer = PayloadBuffer()
    let replyBuffer = PayloadBuffer()
    /// Per-peer link speeds and the `--compression auto` choice (PeerCompression.swift).
    let links = LinkChooser()
    /// Peers that refused this node's lossy encoding (UNIMPLEMENTED, SPEC §6.5): exchanges and
    /// pushes to them go in F32. At most `maxF32Peers` (memory bounded by this node's choice).
    let f32Peers = Mutex(Set<String>())
    static let maxF32Peers = 4096
    /// Noise of a test attacker (`config.misbehaviour`); unused by honest peers.
    let attackRNG = Mutex(SeededGenerator(seed: UInt64.random(in: 0...UInt64.max)))
    /// Push-sum's queue and timer (PeerPushSum.swift); idle in sync mode.
    let pushDriver = PushSumDriver()
    /// WaitConverged requests held until the node finishes (PeerConvergence.swift).
    let waiters = Mutex(ConvergenceWaiters())
    /// Where rounds, evaluations, exchanges and membership changes are reported (metrics,
    /// the metrics log); add sinks before `start()`.
    public let telemetry = Telemetry()
    /// SWIM failure detection (PeerSwim.swift); nil before `start()` or with `--swim-mode off`.
    let swimBox = Mutex<SwimRunner?>(nil)
    /// LAN discovery (`config.discovery`, PeerDiscovery.swift); idle without it.
    let discovery = PeerDiscovery()
    /// The members last reported to `telemetry` (loop thread only).
    private var reportedMembers: Set<String> = []

    /// The advertised endpoint (the bound one until `start()` knows it).
    public var endpoint: Endpoint { endpointBox.withLock { $0 } }

    /// Loads the dataset and its shard; does no I/O on the network yet.
    public init(config: PeerConfig, logger: Logger) throws {
        self.logger = logger
        // An external peer trains nothing here: no dataset (PeerExternal.swift).
        let split = try config.trainer == .external ? PeerNode.externalSplit() : config.dataset.load()
        self.split = split
        // Options the peer was not given take the dataset's defaults (TrainingDefaults.swift).
        var config = config
        if !config.trainingDefaultsFromDataset.isEmpty, config.trainer == .swift {
            config.applyTrainingDefaults(.forDataset(features: split.train.featureCount, classes: split.train.classCount))
        }
        self.config = config
        logger.info("training settings", metadata: ["lr": "\(config.sgd.learningRate)", "batch": "\(config.sgd.batchSize)",
                                                    "local_steps": "\(config.localSteps)", "input_noise": "\(config.sgd.inputNoise)",
                                                    "pace_ms": "\(Int(config.pace.seconds * 1000))"])
        self.shard = try config.trainer == .external ? split.train
            : split.train.shard(index: config.shardIndex, of: config.shardCount, seed: config.seed, nonIIDAlpha: config.nonIIDAlpha)
        guard shard.count > 0 || config.trainer == .external else {
            throw NodeError("shard \(config.shardIndex)/\(config.shardCount) of \(config.dataset) is empty; use fewer shards or another --non-iid alpha")
        }
        var serverConfig = ServerConfig()
        serverConfig.limits = Limits.default
        serverConfig.maxConnections = 1024   // pooled connections from every other peer
        serverConfig.security = config.security.channel
        serverConfig.apply(config.admission)
        // Connections the channel refused (failed handshake, plaintext client, a record that
        // failed authentication) are logged with their reason (SPEC §13.6).
        serverConfig.securityLog = { [logger] line in logger.warning("\(line)") }
        self.server = RPCServer(config: serverConfig)
        let verifier = PeerVerifier()
        self.client = verifier.makeClient(config.security)
        self.verifier = verifier
        self.endpointBox = Mutex(config.listen)
        var membership = Membership(selfEndpoint: config.listen.description, dropAfter: config.dropAfter)
        membership.backoffBase = config.backoffBase
        membership.backoffMax = config.backoffMax
        membership.softDropAfter = config.exchangeTimeout
        membership.swimManaged = config.swim != nil
        self.core = Mutex(PeerCore(state: PeerState(membership: membership, bounds: config.exchangeBounds.effective(for: config.averaging))))
        core.withLock { $0.state.convergence = PeerNode.convergenceState(config) }
        self.rng = SplitMix(seed: config.seed &+ UInt64(config.shardIndex) &* 0x9E37)
        self.checkpoints = try config.stateDir.map { try PeerCheckpoints(directory: $0, logger: logger) }
        let ledger = makePushSumLedger()
        core.withLock { $0.pushSum = ledger }
        // Not `self?.verifyPeer(...) ?? refusal`: nil from verifyPeer means "accept".
        verifier.set { [weak self] ep, key in
            guard let self else { return "this peer is shutting down" }
            return self.verifyPeer(ep, key)
        }
    }

    /// Checks the identity a peer proved when this node dialed it (pinning, see Membership).
    /// - Returns: nil to accept the connection, else why it is refused.
    func verifyPeer(_ ep: Endpoint, _ key: [UInt8]) -> String? {
        let verdict = core.withLock { $0.state.membership.verify(endpoint: ep.description, proven: key) }
        return logPinVerdict(verdict, ep, key, logger: logger)
    }

    // MARK: - lifecycle

    /// Starts serving and returns the advertised endpoint. Prints `listening HOST:PORT`.
    public func start() throws -> Endpoint {
        registerHandlers()
        // The listen rule again (gossipd applied it with its notice): secure by default for
        // library users too.
        _ = try ListenPolicy.check(listen: config.listen, secure: config.security.isSecure, insecure: config.security.insecure)
        if let path = config.security.controlSocket { try ControlSocketFile.prepare(path) }
        let bound = try server.start(host: config.listen.host, port: config.listen.port)
        if let path = config.security.controlSocket {
            do throws(RPCError) { try server.startControl(path: path) } catch {
                server.shutdown(grace: .zero)   // do not leave the TCP listener serving
                throw NodeError("cannot serve the control socket \(path): \(error.message)")
            }
            logger.info("control socket", metadata: ["path": "\(path)"])
        }
        let advertised = config.advertise ?? bound
        warnIfUnreachable(advertised, logger: logger)
        endpointBox.withLock { $0 = advertised }
        core.withLock { $0.state.membership.setSelf(advertised.description) }
        do { try startSwim(host: config.listen.host, port: bound.port, selfID: advertised.description) } catch {
            server.shutdown(grace: .zero)
            throw error
        }
        emitLine("listening \(advertised)")
        do { try startDiscovery() } catch {
            server.shutdown(grace: .zero)
            throw error
        }
        logger.info("serving", metadata: ["endpoint": "\(advertised)", "dataset": "\(config.dataset)",
                                          "shard": "\(config.shardIndex)/\(config.shardCount)", "rows": "\(shard.count)",
                                          "identity": "\(config.security.identity.publicKeyHex)",
                                          "secure": "\(config.security.isSecure)"])
        return advertised
    }

    /// Onboards, then trains and gossips until stopped. Blocks the calling thread, which
    /// becomes the loop thread.
    /// - Throws: `NodeError` when no model can be had (no checkpoint, no live peer, no
    ///   bootstrap), or when the last checkpoint cannot be written (the caller exits non-zero).
    public func run() throws {
        let onboarded: Bool
        do {
            onboarded = try onboard()
            if onboarded, let f = config.readyFile { try writeReadyFile(f, endpoint.description) }
        } catch {
            try? finish(checkpoint: model.trainer != nil)
            throw error
        }
        if onboarded { startPushTimer(); if isExternal { externalLoop() } else { loop() } } else { logger.notice("stopped while onboarding") }
        try finish()
    }

    /// Asks the loop to stop; `run()` then checkpoints, shuts the server down and returns.
    /// Safe from any thread, also before `run()` and during onboarding.
    public func requestStop() {
        if core.withLock({ $0.state.requestStop() }) { wake.signal() }
    }

    var isStopping: Bool { core.withLock { $0.state.stopRequested } }

    /// Ends the node: answers a queued trigger, waits for an exchange being answered, writes
    /// the last checkpoint, closes the server.
    /// - Throws: `NodeError` when the last checkpoint fails (after the server is closed).
    private func finish(checkpoint: Bool = true) throws {
        let pending: RPCResponder? = core.withLock { c in
            c.state.beginStopping()
            guard c.state.cancelTrigger() else { return nil }
            defer { c.triggerResponder = nil }
            return c.triggerResponder
        }
        pending?.fail(.unavailable, "this peer is stopping")
        discovery.stop()
        drainPushSum()
        failWaiters()   // those not answered by a finished node (it answers before it stops)
        // An incoming exchange that holds the slot installs its result before the last
        // checkpoint; none can start now.
        let until = ContinuousClock.now + config.exchangeTimeout + .seconds(1)
        while core.withLock({ $0.state.slotHoldsModel }) && ContinuousClock.now < until {
            wake.wait(upTo: .milliseconds(10))
        }
        var checkpointError: Error?
        if checkpoint, checkpoints != nil, model.trainer != nil {
            do { try writeCheckpoint() } catch { checkpointError = error }
        }
        stopSwim()
        let done = DispatchSemaphore(value: 0)
        server.shutdown(grace: .seconds(2)) { done.signal() }
        _ = done.wait(timeout: .now() + 5)
        if let path = config.security.controlSocket { ControlSocketFile.remove(path) }
        client.close()
        let r = core.withLock { c in
            c.state.stopped()
            return c.state.round
        }
        logger.info("stopped", metadata: ["round": "\(r)"])
        if let checkpointError {
            throw NodeError("the last checkpoint could not be written: \(checkpointError); the state in --state-dir is from round \(core.withLock { $0.state.checkpointRound.map(String.init) ?? "none" })")
        }
    }

    // MARK: - onboarding

    /// Registers and gets a model (or resumes). Returns false when stopped before it had one.
    private func onboard() throws -> Bool {
        let deadline = ContinuousClock.now + config.onboardTimeout
        let resumed = try loadCheckpoint()
        var attempt = 0
        while true {
            if isStopping { return false }
            try registerEverywhere()
            if resumed { break }
            if let (arch, params, counters) = try fetchModel() {
                try install(arch: arch, params: params)
                core.withLock { $0.state.modelInstalled() }
                logger.info("joined", metadata: ["model_from": "\(counters.source)", "round": "\(counters.round)",
                                                 "peers": "\(core.withLock { $0.state.membership.count })"])
                break
            }
            attempt += 1
            if isStopping { return false }
            if ContinuousClock.now > deadline {
                throw NodeError("could not get a model: no checkpoint in --state-dir, no live peer and no reachable bootstrap (bootstrap \(config.bootstrap?.description ?? "none"), join \(config.join.map(\.description))\(config.discovery.map { ", discovery on \($0.group):\($0.port) found no member with a model" } ?? "")); start a bootstrap or pass --join with a live peer")
            }
            sleep(for: .milliseconds(Int64(min(2000, 100 * attempt))))
        }
        return !isStopping
    }

    /// Registers with the bootstrap and every --join target.
    /// - Throws: `NodeError` when one refuses this peer's model schema (a checkpoint from
    ///   another network): retrying cannot help.
    private func registerEverywhere() throws {
        let hash = core.withLock { _ in model.trainer?.parameters.schemaHash } ?? 0
        let me = endpoint.description
        let req = RegisterRequest(endpoint: me, schemaHash: hash)
        var targets: [(Endpoint, Bool)] = config.join.map { ($0, true) }
        if let b = config.bootstrap { targets.insert((b, false), at: 0) }
        guard let payload = try? WireCodec.encode(req) else {
            logger.error("cannot encode Register: endpoint '\(me)' exceeds the wire limits")
            return
        }
        for (target, isPeer) in targets {
            if isStopping { return }
            switch callBlocking(target, .register, payload, deadline: .seconds(5)) {
            case .success(let msg):
                do {
                    let reply = try WireCodec.decodeRegisterReply(msg.payload)
                    let contradicting = core.withLock { c in
                        let (_, bad) = c.state.membership.merge(entries: WirePeers.entries(reply.peers))
                        if isPeer { c.state.membership.markSuccess(target.description) }
                        return bad
                    }
                    logContradicting(contradicting, from: target.description)
                } catch {
                    logger.warning("register reply malformed", metadata: ["from": "\(target)", "error": "\(error)"])
                }
            case .failure(let err) where err.code == .failedPrecondition:
                let arch = model.architecture?.description ?? "?"
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
        var candidates = core.withLock { $0.state.membership.endpoints }
        candidates.shuffle(using: &rng)
        var sources: [(String, Bool)] = candidates.map { ($0, true) }
        if let b = config.bootstrap { sources.append((b.description, false)) }
        for (source, isPeer) in sources {
            if isStopping { return nil }
            guard let ep = try? Endpoint(parsing: source) else { continue }
            switch callBlocking(ep, .getModel, try! WireCodec.encode(GetModelRequest(schemaHash: 0)), deadline: config.exchangeTimeout) {
            case .success(let msg):
                do {
                    let (arch, params, model) = try WireCodec.decodeModel(msg.payload, expected: nil)
                    if arch.isExternal, !isExternal {
                        throw NodeError("the network's model (from \(source)) is an external model (a tensor table, not an MLP: SPEC §6.4); a Swift trainer cannot train it: run this peer with --trainer external and a training program (README \"External trainers\")")
                    }
                    guard isExternal || (shard.featureCount == arch.inputSize && split.train.classCount <= arch.outputSize) else {
                        throw NodeError("the network's model \(arch) (from \(source)) takes \(arch.inputSize) inputs and \(arch.outputSize) classes, but dataset \(config.dataset) has \(shard.featureCount) features and \(split.train.classCount) classes; use the network's dataset, or start a bootstrap with --arch \(shard.featureCount),...,\(split.train.classCount)")
                    }
                    return (arch, params, ModelSourceInfo(source: isPeer ? "peer \(source)" : "bootstrap \(source)", round: model.round))
                } catch let e as NodeError {
                    throw e
                } catch {
                    logger.warning("model refused", metadata: ["from": "\(source)", "error": "\(error)"])
                }
            case .failure(let err):
                if isPeer { core.withLock { _ = $0.state.membership.markFailure(source) } }
                logger.debug("no model from \(source)", metadata: ["error": "\(err)"])
            }
        }
        return nil
    }

    /// Builds the trainer for a model. Called before the node holds a model (nothing else
    /// reads `model` yet), so no lock is needed; `modelInstalled` publishes it.
    private func install(arch: MLPArchitecture, params: ParameterSet, resumedStep: Int = 0,
                         exact: TrainerCheckpoint? = nil) throws {
        if isExternal {
            let t = try Trainer(holding: params, architecture: arch)
            core.withLock { _ in
                model.trainer = t
                model.architecture = arch
            }
            server.fitModel(payloadBytes: params.parameterCount * 4)
            return
        }
        var sgd = config.sgd
        if config.cosineSchedule, let rounds = config.rounds {
            sgd.decaySteps = max(1, rounds * config.localSteps)
            sgd.scheduleOffset = resumedStep
        }
        let t = try Trainer(architecture: arch, parameters: params, data: shard, config: sgd,
                            seed: config.seed &+ UInt64(config.shardIndex) &+ UInt64(resumedStep))
        if let exact { try t.restore(from: exact) }
        core.withLock { _ in
            model.trainer = t
            model.architecture = arch
        }
        server.fitModel(payloadBytes: params.parameterCount * 4)   // receive limits follow the model
    }

    // MARK: - the loop

    private func loop() {
        var averagingTicks = 0
        while !isStopping {
            serviceTrigger()
            let roundStart = ContinuousClock.now
            let trainingDone = core.withLock { c in config.rounds.map { c.state.round >= $0 } ?? false }
            if trainingDone {
                // Training rounds are done: keep averaging so the network reaches consensus,
                // re-evaluating now and then so status shows the current model's accuracy.
                core.withLock { $0.state.enterAveraging() }
                averagingStep()
                averagingTicks += 1
                if averagingTicks % 5 == 0 { evaluateNow() }
                reportMembership()
                if checkpoints != nil, averagingTicks % 50 == 0 { checkpointLogged() }
                sleep(for: config.averagingInterval)
                continue
            }
            // Convergence (SPEC §5.9): adopt a finished network's model, or end when the done
            // votes cover the network.
            if convergenceEnds() { break }
            guard let loss = trainRound() else { break }
            let (r, steps, samples, members) = core.withLock { c in
                model.roundSteps = 0
                return (c.state.completeRound(loss: loss), model.step, model.samples, Set(c.state.membership.endpoints))
            }
            reportRound(r, loss: loss, steps: steps, samples: samples, members: members)
            convergenceAfterRound(loss: loss, round: r)
            averagingStep()
            if convergenceEnabled { spreadVotes() }
            if r % config.evalEvery == 0 || r == config.rounds { evaluateNow() }
            if checkpoints != nil, r % config.checkpointEvery == 0 { checkpointLogged() }
            let elapsed = ContinuousClock.now - roundStart
            if elapsed < config.pace { sleep(for: config.pace - elapsed) }
        }
    }

    private enum StepResult: Sendable { case loss(Float), wait, stop }

    /// Runs `localSteps` SGD steps, one lock hold each; a step waits while an exchange holds
    /// the slot. Returns the mean loss, nil when stopping.
    private func trainRound() -> Double? {
        var total: Double = 0
        var done = 0
        let owed = config.localSteps - min(model.roundSteps, config.localSteps - 1)
        while done < owed {
            let r: StepResult = core.withLock { c in
                if c.state.stopRequested { return .stop }
                guard c.state.mayTrain, let t = model.trainer else { return .wait }
                let loss = t.train(steps: 1)
                model.roundSteps += 1
                return .loss(loss)
            }
            switch r {
            case .loss(let l):
                total += Double(l)
                done += 1
            case .wait:
                wake.wait(upTo: .milliseconds(5))
            case .stop:
                return nil
            }
        }
        return total / Double(done)
    }

    /// Sleeps for `d`, waking early to stop or to run a triggered exchange.
    func sleep(for d: Duration) {
        let until = ContinuousClock.now + d
        while ContinuousClock.now < until {
            let (stop, trigger) = core.withLock { ($0.state.stopRequested, $0.state.pendingTrigger != nil) }
            if stop { return }
            if trigger { serviceTrigger() }
            let left = until - ContinuousClock.now
            if left > .zero { wake.wait(upTo: left) }
        }
    }

    /// One exchange with a random live peer; tries up to three peers when one is busy or down.
    func gossipOnce() {
        var tried = Set<String>()
        for _ in 0..<3 {
            guard let peer = choosePeer(excluding: tried) else { return }
            tried.insert(peer)
            switch exchange(with: peer) {
            case .ok, .localBusy: return
            case .remoteBusy, .failed: continue
            }
        }
    }

    /// A random known peer not in `tried` and not backed off after a failed contact (SPEC §5.6);
    /// nil when there is none (the caller skips this exchange and keeps training).
    func choosePeer(excluding tried: Set<String> = []) -> String? {
        let candidates = core.withLock { $0.state.membership.choosable() }.filter { !tried.contains($0) }
        return candidates.randomElement(using: &rng)
    }

    // MARK: - server side (Dispatch's pool; never blocks)

    private func registerHandlers() {
        server.register(.register) { [weak self] msg, responder in self?.handleRegister(msg, responder) }
        server.register(.getModel) { [weak self] msg, responder in self?.handleGetModel(msg, responder) }
        server.register(.gossipExchange) { [weak self] msg, responder in self?.handleExchange(msg, responder) }
        server.register(.pushSum) { [weak self] msg, responder in self?.handlePushSum(msg, responder) }
        server.register(.reserve) { [weak self] msg, responder in self?.handleReserve(msg, responder) }
        server.register(.votes) { [weak self] msg, responder in self?.handleVotes(msg, responder) }
        server.register(.waitConverged) { [weak self] msg, responder in self?.handleWaitConverged(msg, responder) }
        registerExternalHandlers()
        registerGuarded(server, .triggerGossip, rights: config.security.rights, logger: logger) { [weak self] msg, responder in
            self?.handleTrigger(msg, responder)
        }
        registerCommonHandlers(server, logger: logger, rights: config.security.rights, status: { [weak self] in self?.status() },
                               stop: { [weak self] in self?.requestStop() })
    }

    func handleRegister(_ msg: InboundMessage, _ responder: RPCResponder) {
        do {
            let req = try WireCodec.decodeRegisterRequest(msg.payload)
            guard Membership.isEndpoint(req.endpoint) else {
                throw RPCError(.invalidArgument, "'\(req.endpoint)' is not HOST:PORT with a non-zero port; register the address other peers can dial")
            }
            let me = endpoint.description
            let reply: RegisterReply = try core.withLock { c in
                let hash = model.trainer?.parameters.schemaHash ?? 0
                if req.schemaHash != 0, hash != 0, req.schemaHash != hash {
                    throw RPCError(.failedPrecondition, "schema \(StatusReport.hex(req.schemaHash)) differs from this network's \(StatusReport.hex(hash))")
                }
                c.state.membership.markSuccess(req.endpoint)
                let sample = c.state.peerSample(excluding: req.endpoint, me: me, limit: WireCodec.limits.maxPeers)
                return RegisterReply(peers: WirePeers.list(c.state.membership.entries(sample, selfIdentity: config.security.advertisedIdentity)),
                                     architecture: model.architecture?.description ?? "", schemaHash: hash)
            }
            logger.info("peer registered", metadata: ["peer": "\(req.endpoint)"])
            responder.reply { try WireCodec.encode(reply) }
        } catch {
            responder.fail(for: error)
        }
    }

    func handleGetModel(_ msg: InboundMessage, _ responder: RPCResponder) {
        do {
            let req = try WireCodec.decodeGetModelRequest(msg.payload)
            // A reference to the weights and the counters under the lock; the copy into the
            // payload outside it (the next training step copies on write instead).
            let (arch, params, round, step, samples) = try core.withLock { c in
                guard c.state.hasModel, let t = model.trainer, let arch = model.architecture else {
                    throw RPCError(.unavailable, "peer is still onboarding and has no model yet; ask another peer")
                }
                return (arch, t.parameters, UInt64(c.state.round), UInt64(model.step), UInt64(model.samples))
            }
            let hash = params.schemaHash
            if req.schemaHash != 0, req.schemaHash != hash {
                throw RPCError(.failedPrecondition, "requested schema \(StatusReport.hex(req.schemaHash)) but this peer holds \(StatusReport.hex(hash))")
            }
            let payload = try WireCodec.encodeModel(architecture: arch, params: params, round: round, step: step, samples: samples)
            responder.reply(payload, options: RPCOptions(compression: config.autoCompression ? .none : config.compression))
        } catch {
            responder.fail(for: error)
        }
    }


    // MARK: - evaluation, status, checkpoints

    func evaluateNow() {
        guard !isExternal else { return }   // the external trainer evaluates on its own data
        guard let (arch, params) = core.withLock({ _ -> (MLPArchitecture, ParameterSet)? in
            guard let t = model.trainer, let a = model.architecture else { return nil }
            return (a, t.parameters)
        }) else { return }
        let e = evaluate(architecture: arch, parameters: params, on: split.test)
        let r = core.withLock { c in
            c.state.accuracy = e.accuracy
            c.state.heldOutLoss = Double(e.loss)
            return c.state.round
        }
        logger.debug("evaluated", metadata: ["round": "\(r)", "accuracy": "\(e.accuracy)", "loss": "\(e.loss)"])
        telemetry.emit(.eval(round: r, accuracy: e.accuracy, loss: Double(e.loss)))
    }

    /// Reports a finished round, and the members added or removed since the last report.
    private func reportRound(_ r: Int, loss: Double, steps: Int, samples: Int, members: Set<String>) {
        guard !telemetry.isEmpty else { return }
        telemetry.emit(.round(round: r, loss: loss, steps: steps, samples: samples))
        reportMembership(r, members)
    }

    /// Reports the members added or removed since the last report (after every round, and
    /// every averaging tick once the rounds are done).
    func reportMembership() {
        guard !telemetry.isEmpty else { return }
        let (r, members) = core.withLock { c in (c.state.round, Set(c.state.membership.endpoints)) }
        reportMembership(r, members)
    }

    private func reportMembership(_ r: Int, _ members: Set<String>) {
        if members != reportedMembers {
            telemetry.emit(.membership(round: r, known: members.count,
                                       added: members.subtracting(reportedMembers).sorted(),
                                       removed: reportedMembers.subtracting(members).sorted()))
            reportedMembers = members
        }
    }

    /// The node's status document.
    public func status() -> StatusReport {
        let stats = server.stats
        let me = endpoint.description
        let metrics = metricsURL
        return core.withLock { c in
            let st = c.state
            var s = StatusReport(role: "peer", endpoint: me, phase: st.phase.rawValue,
                                 architecture: model.architecture?.description ?? "",
                                 schemaHash: model.trainer?.parameters.schemaHash ?? 0)
            s.step = model.step
            s.samplesSeen = model.samples
            s.round = st.round
            s.loss = st.lastLoss
            s.accuracy = st.accuracy
            s.heldOutLoss = st.heldOutLoss
            s.heldOutCount = split.test.count
            s.dataset = config.dataset.description
            s.shard = "\(config.shardIndex)/\(config.shardCount)"
            s.shardSize = shard.count
            s.preprocessing = split.preprocessing
            s.peers = st.membership.endpoints
            s.identity = config.security.identity.publicKeyHex
            s.secure = config.security.isSecure
            s.peerIdentities = StatusReport.identities(of: st.membership)
            s.exchanges = st.exchanges
            s.rejected = st.rejected
            s.bytesIn = stats.bytesIn + client.bytesIn
            s.bytesOut = stats.bytesOut + client.bytesOut
            s.uptimeSeconds = (ContinuousClock.now - started).seconds
            s.checkpointRound = st.checkpointRound
            s.resumedFromRound = st.resumedFromRound
            s.pushSum = c.pushSum?.report
            s.convergence = convergenceStatus(st)
            s.metrics = metrics
            s.bootstrap = config.bootstrap?.description
            s.swim = swimStatus()
            s.discovery = discovery.counters
            s.trainer = config.trainer.rawValue
            if isExternal {
                s.external = external.withLock { $0.report }
                s.dataset = ""
                s.shard = ""
            }
            s.compressionAuto = config.autoCompression ? links.report : nil
            return s
        }
    }

    /// Writes a checkpoint, logging (not throwing) a failure: the loop goes on.
    func checkpointLogged() {
        do { try writeCheckpoint() } catch {
            logger.error("checkpoint failed", metadata: ["dir": "\(config.stateDir ?? "")", "error": "\(error)"])
        }
    }

    /// The metadata every model file of this peer carries (checkpoint, final model): the
    /// dataset's preprocessing, the architecture and the counters. The caller holds the lock.
    func modelMetadata(_ arch: MLPArchitecture, _ state: borrowing PeerState) -> [String: String] {
        var meta = split.preprocessing
        meta["arch"] = arch.description
        meta["activation"] = "relu"
        meta["dataset"] = isExternal ? "external trainer" : config.dataset.description
        meta["round"] = "\(state.round)"
        meta["step"] = "\(model.step)"
        meta["samples_seen"] = "\(model.samples)"
        meta["shard"] = "\(config.shardIndex)/\(config.shardCount)"
        return meta
    }

    /// Snapshots the model, the trainer's state and the counters under the lock, then writes
    /// them atomically outside it.
    func writeCheckpoint() throws {
        guard let store = checkpoints else { return }
        if isExternal {
            // No optimizer state here (the trainer keeps its own): a model-only file.
            guard let (params, meta, r) = core.withLock({ c -> (ParameterSet, [String: String], Int)? in
                guard let t = model.trainer, let arch = model.architecture else { return nil }
                return (t.parameters, modelMetadata(arch, c.state), c.state.round)
            }) else { return }
            try SafeTensors.write(params, metadata: meta, to: store.path)
            core.withLock { $0.state.checkpointRound = r }
            logger.info("checkpoint written", metadata: ["path": "\(store.path)", "round": "\(r)"])
            return
        }
        guard let snap = core.withLock({ c -> PeerCheckpoints.Snapshot? in
            guard let t = model.trainer, let arch = model.architecture else { return nil }
            var meta = modelMetadata(arch, c.state)
            meta["round_steps"] = "\(model.roundSteps)"
            if let l = c.pushSum { meta["push_sum_mass"] = "\(l.mass)" }
            convergenceMetadata(c.state, into: &meta)
            return PeerCheckpoints.Snapshot(checkpoint: TrainerCheckpoint(trainer: t, metadata: meta), round: c.state.round)
        }) else { return }
        try store.write(snap)
        core.withLock { $0.state.checkpointRound = snap.round }
        logger.info("checkpoint written", metadata: ["path": "\(store.path)", "round": "\(snap.round)",
                                                     "round_steps": "\(snap.checkpoint.metadata["round_steps"] ?? "0")"])
    }

    /// Resumes from `--state-dir` when it holds a checkpoint. Returns true when it did.
    private func loadCheckpoint() throws -> Bool {
        guard let store = checkpoints, let loaded = try store.load() else { return false }
        let meta = loaded.metadata
        let parsed = meta["arch"] == MLPArchitecture.externalName ? try? MLPArchitecture(external: loaded.parameters.layout)
            : meta["arch"].flatMap { try? MLPArchitecture(parsing: $0) }
        guard let arch = parsed, arch.matches(loaded.parameters), !arch.isExternal || isExternal else {
            throw NodeError("checkpoint \(store.path) has no usable 'arch' metadata; move it away to start fresh")
        }
        let step = Int(meta["step"] ?? "") ?? 0
        let samples = Int(meta["samples_seen"] ?? "") ?? 0
        let r = Int(meta["round"] ?? "") ?? 0
        var exact = false
        if let state = loaded.trainer, !isExternal {
            // Exact resume: the trainer continues with the same momentum, generator, data order
            // and counters. Its own step count starts where its trainer was built; the steps
            // before that (a weights-only resume earlier in this peer's life) are the base, and
            // base + its count drives the learning-rate schedule as before the stop.
            let base = max(0, step - state.stepsDone), samplesBase = max(0, samples - state.samplesSeen)
            do {
                try install(arch: arch, params: loaded.parameters, resumedStep: base,
                            exact: TrainerCheckpoint(parameters: loaded.parameters, state: state, metadata: meta))
                let partial = max(0, Int(meta["round_steps"] ?? "") ?? 0)
                core.withLock { _ in
                    model.roundSteps = partial
                    model.stepBase = base
                    model.samplesBase = samplesBase
                }
                exact = true
            } catch {
                // Another batch size or shard than the checkpoint's: the saved optimizer state
                // does not apply. The weights still do.
                logger.warning("the checkpoint's trainer state does not fit this run; resuming from its weights alone (momentum and data order start afresh)",
                               metadata: ["path": "\(store.path)", "why": "\(error)"])
            }
        }
        if !exact {
            // A model-only file: the weights resume, the optimizer starts afresh.
            try install(arch: arch, params: loaded.parameters, resumedStep: step)
            core.withLock { _ in
                model.stepBase = step
                model.samplesBase = samples
            }
        }
        resumePushSumMass(meta)
        core.withLock { $0.state.modelInstalled(resumedAt: r) }
        resumeConvergence(meta)
        logger.notice("resumed from checkpoint", metadata: ["path": "\(store.path)", "round": "\(r)",
                                                            "exact": "\(exact)"])
        return true
    }

    // MARK: - helpers

    /// Calls an RPC and blocks the loop thread until its outcome, or until a stop is requested
    /// (then it returns CANCELLED at once and the late outcome is ignored), so a SIGTERM never
    /// waits for a partner that does not answer before the last checkpoint is written.
    /// With `trainWhileWaiting` the loop runs SGD steps of the next round meanwhile
    /// (`trainOneStepWhileWaiting`, SPEC §5.6) instead of sleeping.
    func callBlocking(_ ep: Endpoint, _ type: MessageType, _ payload: ByteSlice, deadline: Duration,
                      options: RPCOptions = RPCOptions(), trainWhileWaiting: Bool = false) -> Result<InboundMessage, RPCError> {
        let outcome = Mutex<Result<InboundMessage, RPCError>?>(nil)
        let wake = self.wake
        client.call(ep, type: type, payload: payload, options: options, deadline: deadline) { result in
            outcome.withLock { $0 = result }
            wake.signal()
        }
        let until = ContinuousClock.now + deadline + .seconds(10)   // the RPC layer answers by the deadline
        while true {
            if let r = outcome.withLock({ $0 }) { return r }
            if isStopping { return .failure(RPCError(.cancelled, "this peer is stopping")) }
            if ContinuousClock.now > until {
                return .failure(RPCError(.deadlineExceeded, "no outcome from \(ep) within \(deadline) (internal)"))
            }
            if trainWhileWaiting {
                if !trainOneStepWhileWaiting() { wake.wait(upTo: .milliseconds(2)) }
            } else {
                wake.wait(upTo: .milliseconds(50))
            }
        }
    }
}

extension PeerNode {
    /// Logs peer-list entries dropped because their identity contradicts a pinned one.
    func logContradicting(_ entries: [PeerEntry], from source: String) {
        for e in entries {
            logger.warning("peer-list entry dropped: its identity contradicts the one the endpoint proved",
                           metadata: ["from": "\(source)", "endpoint": "\(e.endpoint)",
                                      "listed": "\(e.identity.map(Membership.hex) ?? "none")",
                                      "pinned": "\(core.withLock { $0.state.membership.identity(of: e.endpoint) }.map(Membership.hex) ?? "none")"])
        }
    }
}

/// The status code and text an error is answered with.
func statusAndText(_ error: Error) -> (StatusCode, String) {
    switch error {
    case let e as WireError: return (e.statusCode, e.description)
    case let e as RPCError: return (e.code, e.message)
    case let e as MLError: return (.invalidArgument, "\(e)")
    default: return (.internal, "\(error)")
    }
}
