// gossipd: the daemon. `bootstrap` runs the discovery service, `peer` a training peer,
// `demo` a whole local network as child processes. Argument parsing and output only; all
// behaviour lives in GossipNode.
import ArgumentParser
import Foundation
import GossipML
import GossipNet
import GossipNode
import GossipWire
import Logging

struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"
    @Flag(help: ArgumentHelp("Stop when the parent process exits (used by `gossipd demo` for its children).", visibility: .hidden))
    var exitWithParent = false

    /// With --exit-with-parent, calls `stop` once the parent process is gone.
    func watchParent(_ stop: @escaping @Sendable () -> Void) -> DispatchSourceTimer? {
        guard exitWithParent else { return nil }
        let parent = getppid()
        let t = DispatchSource.makeTimerSource(queue: .global())
        t.schedule(deadline: .now() + 0.5, repeating: 0.5)
        t.setEventHandler { if getppid() != parent { stop() } }
        t.resume()
        return t
    }

    func makeLogger(_ label: String) throws -> Logger {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("unknown --log-level '\(logLevel)'; use trace, debug, info, notice, warning, error or critical")
        }
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var l = Logger(label: label)
        l.logLevel = level
        return l
    }
}

func parseEndpoint(_ s: String, _ option: String) throws -> Endpoint {
    do { return try Endpoint(parsing: s) } catch { throw ValidationError("\(option) '\(s)': \(error)") }
}

/// Calls `stop` on SIGINT/SIGTERM/SIGHUP (handled on a queue, not in a signal handler).
func onTerminationSignals(_ stop: @escaping @Sendable () -> Void) -> [DispatchSourceSignal] {
    [SIGINT, SIGTERM, SIGHUP].map { sig in
        signal(sig, SIG_IGN)
        let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        s.setEventHandler(handler: stop)
        s.resume()
        return s
    }
}

/// Serves `metrics` on `endpoint` (--metrics-listen) and prints where, for people and tests.
func startMetrics(_ endpoint: Endpoint, _ metrics: NodeMetrics, _ role: String) throws -> HTTPResponder {
    let r: HTTPResponder
    do { r = try MetricsEndpoint.start(listen: endpoint, metrics: metrics) } catch {
        throw RPCError(error.code, "--metrics-listen \(endpoint): \(error.message)")
    }
    Console.err.line("gossipd \(role): metrics on http://\(r.endpoint)/metrics")
    return r
}

/// Where a daemon listens, what it advertises, and where it reports readiness.
struct AddressOptions: ParsableArguments {
    @Option(help: "HOST:PORT to listen on (port 0: the OS picks; the bound address is printed as 'listening HOST:PORT').")
    var listen: String = "127.0.0.1:0"
    @Option(help: "HOST:PORT other nodes should use to reach this one (default: the bound address).")
    var advertise: String?
    @Option(help: "Write the bound HOST:PORT to this file once the node serves (a peer: once it has a model).")
    var readyFile: String?

    func listenEndpoint() throws -> Endpoint { try parseEndpoint(listen, "--listen") }
    func advertiseEndpoint() throws -> Endpoint? { try advertise.map { try parseEndpoint($0, "--advertise") } }
}

/// Keys, identity, admins and the control socket (issue 9; README "Security").
struct SecurityOptions: ParsableArguments {
    @Option(help: "Network key file (gossipctl keygen network): every TCP connection is encrypted and authenticated with it. Without it a node may listen only on loopback (plaintext), unless --insecure.")
    var networkKey: String?
    @Flag(help: "Run the plaintext protocol without --network-key on a non-loopback address: anyone who reaches the port can read and overwrite the model.")
    var insecure = false
    @Option(help: "This node's identity key file (gossipctl keygen identity). Default: STATE_DIR/identity.key, created at the first start; without --state-dir an ephemeral identity.")
    var identity: String?
    @Option(help: "Public key (64 hex digits) of an identity allowed to stop the node and trigger exchanges over the network (repeatable; needs --network-key).")
    var adminKey: [String] = []
    @Option(help: "Unix socket (mode 0600) that accepts control requests (stop, gossip) from this host. Default: STATE_DIR/control.sock when --state-dir is given.")
    var controlSocket: String?
    @Option(help: "Append every session's secrets to this file so framedump --keylog can decrypt captures (debugging only).")
    var keylogFile: String?

    /// Resolves the flags (reads key files, applies the listen rule); a refusal prints why
    /// and exits 64.
    func resolve(listen: Endpoint, stateDir: String?, logger: Logger) -> NodeSecurity {
        var s = NodeSecuritySettings()
        s.networkKeyFile = networkKey
        s.insecure = insecure
        s.identityFile = identity
        s.adminKeys = adminKey
        s.controlSocket = controlSocket
        s.keyLogFile = keylogFile
        do {
            return try s.resolve(listen: listen, stateDir: stateDir) { logger.notice("\($0)") }
        } catch {
            Console.err.line("gossipd: \(error)")
            Foundation.exit(64)
        }
    }
}

struct Bootstrap: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the discovery service: registers peers, hands out the peer list and the initial model.")

    @OptionGroup var address: AddressOptions
    @Option(help: "Initial model as a safetensors file: an MLP when its __metadata__ names 'arch' (gossipctl model writes it); any other table of float32 tensors (no 'arch', or arch 'external') is served as an external model, trained only by --trainer external peers (SPEC §6.4, README \"External trainers\").")
    var model: String?
    @Option(help: "Initial model architecture, e.g. 64,128,10 or 784,256,128,10 (with --seed). Default: the one suggested for --dataset.")
    var arch: String?
    @Option(help: "Without --arch or --model: the dataset the network trains on (digits | mnist:DIR | fashion-mnist:DIR | csv:FILE); the bootstrap suggests its architecture (digits: 64,256,128,10; 28x28 images: 784,256,128,10).")
    var dataset: String?
    @Option(help: "Seed of the initial model's initialization (with --arch).")
    var seed: UInt64 = 1
    @Option(help: "Directory for this node's identity (identity.key) and control socket (control.sock).")
    var stateDir: String?
    @OptionGroup var security: SecurityOptions
    @OptionGroup var global: GlobalOptions
    @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics (plaintext, no authentication: bind to 127.0.0.1 or a private interface; port 0: the OS picks, printed as 'metrics on http://HOST:PORT/metrics').")
    var metricsListen: String?
    @OptionGroup var admission: AdmissionOptions

    func validate() throws {
        if model != nil && arch != nil { throw ValidationError("give at most one of --model FILE or --arch SIZES") }
        if dataset != nil && (model != nil || arch != nil) { throw ValidationError("--dataset only chooses the architecture when neither --arch nor --model is given") }
    }

    func run() throws {
        // Signals first: a SIGTERM during start-up is remembered, never the default death.
        let latch = StopLatch()
        let signals = onTerminationSignals { latch.request() }
        ignoreSIGPIPE()
        let logger = try global.makeLogger("gossipd.bootstrap")
        let metricsEndpoint = try metricsListen.map { try parseEndpoint($0, "--metrics-listen") }
        let architecture: MLPArchitecture
        let params: ParameterSet
        if let model {
            let (p, meta) = try SafeTensors.read(path: model)
            let loaded = try bootstrapModel(p, meta, path: model)
            architecture = loaded.0
            params = loaded.1
        } else {
            var sizes = arch
            if sizes == nil {
                // No --arch or --model: suggest the architecture for the dataset (default digits).
                let source: DatasetSource
                do { source = try DatasetSource(parsing: dataset ?? "digits") } catch { throw ValidationError("--dataset: \(error)") }
                let suggested: String
                do { suggested = try TrainingDefaults.forSource(source).architecture } catch { throw ValidationError("--dataset: \(error)") }
                Console.err.line("gossipd bootstrap: architecture \(suggested) (suggested for --dataset \(source); give --arch to choose another)")
                sizes = suggested
            }
            architecture = try MLPArchitecture(parsing: sizes!)
            let count = architecture.parameterSpecs.reduce(0) { $0 + $1.shape.reduce(1, *) }
            guard count <= Limits.default.maxMessageBytes / 4 - 1024 else {
                throw ValidationError("--arch \(architecture) has \(count) parameters; one message carries at most about \(Limits.default.maxMessageBytes / 4) float32 values")
            }
            params = architecture.makeParameters(seed: seed)
        }
        var config = BootstrapConfig(listen: try address.listenEndpoint(), architecture: architecture, initialModel: params)
        config.security = security.resolve(listen: config.listen, stateDir: stateDir, logger: logger)
        config.advertise = try address.advertiseEndpoint()
        config.readyFile = address.readyFile
        config.admission = admission.config
        let node = try BootstrapNode(config: config, logger: logger)
        let metrics = try metricsEndpoint.map { e in
            let r = try startMetrics(e, NodeMetrics(role: "bootstrap") { node.status() }, "bootstrap")
            node.metricsURL = "http://\(r.endpoint)/metrics"
            return r
        }
        latch.attach { node.requestStop() }
        let watcher = global.watchParent { latch.request() }
        if !latch.isRequested { _ = try node.start() }
        node.wait()
        metrics?.close()
        withExtendedLifetime((signals, watcher)) {}
    }
}

struct Peer: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a training peer: Register, GetModel, then Train -> Gossip -> Repeat.",
        discussion: """
        The end of training (Protocol/SPEC.md §5.9): with --rounds, a cosine schedule over the rounds, then \
        averaging until stopped. Without --rounds, a constant --lr until the network converges: over windows of \
        --converge-window rounds the mean training loss is compared with the previous window's; on a plateau \
        (improvement below --converge-loss-delta) the rate is halved; after two halvings a plateau means converged \
        when the models it met are within --converge-distance (else the rate is halved again, down to 1/64 of \
        --lr, where a plateau ends it anyway), and the peer votes done. When the done votes \
        cover every peer it knows plus itself (or --quorum), it runs --final-rounds averaging steps, writes \
        STATE_DIR/final.safetensors and exits 0 (or serves it with --serve-when-done). --no-converge: train until stopped.

        """ + "Training options not given take the dataset's defaults (the demo's recipe), chosen once the dataset is loaded: "
            + TrainingDefaults.helpText + ". The model's architecture comes from the network (the bootstrap's --arch, or its suggestion for --dataset).")

    @OptionGroup var address: AddressOptions
    @Option(help: "Bootstrap HOST:PORT. An unreachable bootstrap is reported and skipped.")
    var bootstrap: String?
    @Option(help: "A live peer's HOST:PORT to join through (repeatable).")
    var join: [String] = []
    @Option(help: "digits | mnist:DIR | fashion-mnist:DIR | csv:FILE (default digits; not with --trainer external)")
    var dataset: String?
    @Option(help: "This peer's shard of the training data, I/N.")
    var shard: String = "0/1"
    @Option(name: .customLong("non-iid"), help: "Label-skewed shards: Dirichlet concentration ALPHA (small = more skew).")
    var nonIID: Double?
    @Option(help: "Learning rate (default: from the dataset, 0.2 for digits, 0.05 for 28x28 images).") var lr: Float?
    @Option(help: "SGD momentum.") var momentum: Float = 0.9
    @Option(help: "Weight decay.") var weightDecay: Float = 1e-4
    @Option(help: "Mini-batch size (default: from the dataset, 128 for digits, 64 for 28x28 images).") var batch: Int?
    @Option(help: "Std of Gaussian noise added to training inputs, a regularization (default: from the dataset, 0.4 for digits, 0 for 28x28 images).") var inputNoise: Float?
    @Option(help: "Learning-rate schedule: cosine (decays to --final-lr-fraction over --rounds) or constant.")
    var lrSchedule: String = "cosine"
    @Option(help: "Final learning rate as a fraction of --lr, for the cosine schedule.") var finalLrFraction: Float = 0
    @Option(help: "SGD steps per round, before each exchange (default: from the dataset, 10 for digits, 20 for 28x28 images).") var localSteps: Int?
    @Option(help: "Training rounds, after which the peer keeps averaging until stopped (default: train until stopped).")
    var rounds: Int?
    @Option(help: "Seed for shuffling, sharding and peer choice.") var seed: UInt64 = 1
    @Option(help: "Directory for checkpoints (model.safetensors); resumes from it on restart.")
    var stateDir: String?
    @Option(help: "Rounds between checkpoints.") var checkpointEvery: Int = 10
    @Option(help: "Rounds between held-out evaluations.") var evalEvery: Int = 5
    @Option(help: "Deadline of one exchange, in seconds.") var exchangeTimeout: Double = 10
    @Option(help: "Minimum milliseconds per round, to watch progress or to simulate a slow peer (default: 0, flat out).") var paceMs: Int = 0
    @Option(help: "Model payload compression: none | zlib | zlib-shuffle | auto (per peer, from the measured link and codec speeds; README \"Slow links\").") var compression: String = "none"
    // A test hook, hidden from help: turns this peer into an insider attacker (it trains
    // normally but sends every model scaled by F, replaced by noise of the model's per-tensor
    // RMS, or claims weight W), so end-to-end tests exercise the bounds of SPEC §5.3.
    @Option(help: ArgumentHelp("Test hook: scale:F | noise | claim:W.", visibility: .hidden))
    var misbehave: String?
    @Option(help: "How to average: sync (the pairwise exchange, SPEC 5.3) or push-sum (one-way pushes of half a mass, SPEC 5.5; every peer of a network must use the same).")
    var averaging: String = "sync"
    @Option(help: "Push-sum: each peer pushes about once per this many milliseconds, after a round or on a timer, so slow and fast peers mix at one rate.")
    var pushIntervalMs: Int = 20
    // A test hook, hidden from help: each push-sum push is lost with probability P.
    @Option(help: ArgumentHelp("Test hook: lose each push-sum push with probability P.", visibility: .hidden))
    var pushLoss: Double = 0
    @Option(help: "Floor of the adaptive Reserve deadline (8 x the median recent round trip, at most --exchange-timeout), in milliseconds (SPEC 5.6).")
    var minExchangeTimeoutMs: Int = 250
    @Option(help: "Backoff of a peer after a failed contact, in milliseconds; doubles per failure in a row (SPEC 5.6).")
    var backoffMs: Int = 1000
    @Option(help: "Longest backoff of a peer that keeps failing, in milliseconds.")
    var backoffMaxMs: Int = 30000
    // Measurement hook, hidden from help: exchange without Reserve (the old behaviour), so a
    // bench can print the baseline of SPEC 5.6 in the same run.
    @Flag(help: ArgumentHelp("Exchange without reserving first (baseline measurements).", visibility: .hidden))
    var noReserve = false
    @Option(help: "Convergence (SPEC §5.9, without --rounds): rounds per window; the mean training loss of a window is judged against the previous window's.")
    var convergeWindow: Int = ConvergenceConfig().window
    @Option(help: "Convergence: the loss has stopped improving when a window's mean is less than this fraction below the previous window's. On such a plateau the learning rate is halved, twice; at the next plateau the peer is converged if the models it met are close (--converge-distance) and votes done.")
    var convergeLossDelta: Double = ConvergenceConfig().lossDelta
    @Option(help: "Convergence: the models met in the window (90th percentile of their relative L2 distance from this peer's) must be within this.")
    var convergeDistance: Double = ConvergenceConfig().distance
    @Option(help: "Done votes that end training (default: every peer this peer knows, plus itself).")
    var quorum: Int?
    @Option(help: "Averaging steps once the votes cover the network, before the final model (STATE_DIR/final.safetensors) is written.")
    var finalRounds: Int = ConvergenceConfig().finalRounds
    @Flag(help: "Once finished, keep serving the final model (phase done; late peers adopt it) instead of exiting 0.")
    var serveWhenDone = false
    @Flag(help: "Without --rounds: no convergence detection and no end by votes; train at the constant --lr until stopped (the behaviour before SPEC §5.9).")
    var noConverge = false
    @Option(help: "Append one JSON object per line to this file for every round, evaluation, exchange this peer started and membership change (schema: README, Metrics log and plots); gossipctl plot draws it. Exit 73 when it cannot be opened.")
    var metricsFile: String?
    @OptionGroup var security: SecurityOptions
    @OptionGroup var global: GlobalOptions
    @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics (plaintext, no authentication: bind to 127.0.0.1 or a private interface; port 0: the OS picks, printed as 'metrics on http://HOST:PORT/metrics').")
    var metricsListen: String?
    @Option(help: "SWIM failure detection over UDP on the listen port (SPEC 5.10): on | off (off: a peer is dropped after 3 failed contacts).")
    var swimMode: String = "on"
    @Option(help: "SWIM: probe period in milliseconds (one member probed per period).") var swimIntervalMs: Int = 1000
    @Option(help: "SWIM: milliseconds to wait for a direct ack before asking --swim-indirect others (less than --swim-interval-ms).") var swimTimeoutMs: Int = 500
    @Option(help: "SWIM: members asked to probe an unanswering member (k).") var swimIndirect: Int = 3
    @Option(help: "SWIM: a suspect is declared dead after MULT x max(1, log10 N) x --swim-interval-ms.") var swimSuspicionMult: Int = 4
    @Option(help: "SWIM: each membership update is piggybacked MULT x ceil(log10(N+1)) times.") var swimRetransmitMult: Int = 4
    @OptionGroup var admission: AdmissionOptions
    @OptionGroup var discovery: DiscoveryOptions
    @Option(help: "Who trains: swift (this node, on --dataset) or external (another program on this host pulls the model and pushes what it trained through the control socket: gossipctl pull/push, SPEC 5.12, README \"External trainers\"; needs --control-socket or --state-dir).")
    var trainer: String = "swift"
    @Option(help: "Encoding of the weights this peer sends in exchanges and pushes: f32 (exact) | bf16 | fp16 | int8 (lossy, SPEC 6.5; a responder answers in the request's encoding, so peers may differ).")
    var wireDtype: String = "f32"
    @Option(name: .customLong("accept-dtypes"), help: "Encodings this peer averages in when others send them, comma-separated from f32,bf16,fp16,int8 (f32 is always accepted; default: all). A request or push in another one is answered UNIMPLEMENTED naming these, and the sender then exchanges with this peer in f32 (SPEC 6.5).")
    var acceptDtypes: String = "f32,bf16,fp16,int8"
    // Measurement hook, hidden from help: lossy encodings without error feedback (SPEC 6.5).
    @Flag(help: ArgumentHelp("Lossy wire encodings without error feedback (measurements).", visibility: .hidden))
    var noErrorFeedback = false
    // Measurement and test hook, hidden from help: stay lossy after training (SPEC 6.5, the exact finish).
    @Flag(help: ArgumentHelp("Keep the lossy wire encoding after training ends (no exact finish; measurements and tests).", visibility: .hidden))
    var noExactFinish = false

    func run() throws {
        // Signals first: a SIGTERM during start-up stops the peer cleanly (with its last
        // checkpoint when it has a model), never the default death.
        let latch = StopLatch()
        let signals = onTerminationSignals { latch.request() }
        ignoreSIGPIPE()
        let logger = try global.makeLogger("gossipd.peer")
        logger.info("starting", metadata: ["pid": "\(getpid())"])
        let metricsLog = openMetricsLog(metricsFile, logger: logger)
        var config = PeerConfig(listen: try address.listenEndpoint())
        let metricsEndpoint = try metricsListen.map { try parseEndpoint($0, "--metrics-listen") }
        config.advertise = try address.advertiseEndpoint()
        config.bootstrap = try bootstrap.map { try parseEndpoint($0, "--bootstrap") }
        config.join = try join.map { try parseEndpoint($0, "--join") }
        guard config.bootstrap != nil || !config.join.isEmpty || stateDir != nil || discovery.discover != nil else {
            throw ValidationError("give --bootstrap HOST:PORT, --join HOST:PORT or --discover multicast (or a --state-dir holding a checkpoint)")
        }
        do { config.dataset = try DatasetSource(parsing: dataset ?? "digits") } catch { throw ValidationError("--dataset: \(error)") }
        guard let trainerKind = TrainerKind(rawValue: trainer) else {
            throw ValidationError("--trainer must be swift or external")
        }
        config.trainer = trainerKind
        if trainerKind == .external, dataset != nil {
            throw ValidationError("--dataset is for --trainer swift: with --trainer external the training program reads its own data (the node holds no dataset)")
        }
        let parts = shard.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n > 0, i >= 0, i < n else {
            throw ValidationError("--shard '\(shard)' must be I/N with 0 <= I < N, e.g. 0/4")
        }
        config.shardIndex = i
        config.shardCount = n
        config.nonIIDAlpha = nonIID
        guard lr.map({ $0 > 0 }) ?? true, batch.map({ $0 > 0 }) ?? true, localSteps.map({ $0 > 0 }) ?? true,
              checkpointEvery > 0, evalEvery > 0, exchangeTimeout > 0, paceMs >= 0 else {
            throw ValidationError("--lr, --batch, --local-steps, --checkpoint-every, --eval-every and --exchange-timeout must be positive, --pace-ms >= 0")
        }
        guard inputNoise.map({ $0 >= 0 }) ?? true, (0...1).contains(finalLrFraction) else {
            throw ValidationError("--input-noise must be >= 0 and --final-lr-fraction within 0...1")
        }
        guard ["cosine", "constant"].contains(lrSchedule) else { throw ValidationError("--lr-schedule must be cosine or constant") }
        // Unset training options are filled from the dataset's defaults by PeerNode.init, which
        // loads the dataset anyway (the placeholders below are replaced there).
        config.sgd = SGDConfig(learningRate: lr ?? 0.05, momentum: momentum, weightDecay: weightDecay, batchSize: batch ?? 64,
                               inputNoise: inputNoise ?? 0, finalLearningRateFraction: finalLrFraction)
        config.cosineSchedule = lrSchedule == "cosine"
        config.localSteps = localSteps ?? 10
        var fill: TrainingDefaults.Settings = []
        if lr == nil { fill.insert(.learningRate) }
        if batch == nil { fill.insert(.batch) }
        if localSteps == nil { fill.insert(.localSteps) }
        if inputNoise == nil { fill.insert(.inputNoise) }
        config.trainingDefaultsFromDataset = fill
        config.rounds = rounds
        config.seed = seed
        config.stateDir = stateDir
        config.checkpointEvery = checkpointEvery
        config.evalEvery = evalEvery
        config.exchangeTimeout = .milliseconds(Int64(exchangeTimeout * 1000))
        config.pace = .milliseconds(paceMs)
        guard minExchangeTimeoutMs > 0, backoffMs > 0, backoffMaxMs >= backoffMs else {
            throw ValidationError("--min-exchange-timeout-ms and --backoff-ms must be positive and --backoff-max-ms at least --backoff-ms")
        }
        config.minExchangeTimeout = .milliseconds(minExchangeTimeoutMs)
        config.backoffBase = .milliseconds(backoffMs)
        config.backoffMax = .milliseconds(backoffMaxMs)
        config.reserveFirst = !noReserve
        guard let wireType = DType(optionName: wireDtype) else {
            throw ValidationError("--wire-dtype must be f32, bf16, fp16 or int8, not '\(wireDtype)'")
        }
        config.wireDType = wireType
        var accepted: Set<DType> = [.float32]
        for name in acceptDtypes.split(separator: ",", omittingEmptySubsequences: false) {
            guard let d = DType(optionName: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--accept-dtypes: '\(name)' is not one of f32, bf16, fp16, int8 (comma-separated, e.g. --accept-dtypes f32,bf16)")
            }
            accepted.insert(d)
        }
        config.acceptDTypes = accepted
        config.errorFeedback = !noErrorFeedback
        config.exactFinish = !noExactFinish
        switch compression {
        case "none": config.compression = .none
        case "zlib": config.compression = .zlib(level: 1, shuffle: false)
        case "zlib-shuffle": config.compression = .zlib(level: 1, shuffle: true)
        case "auto": config.autoCompression = true
        default: throw ValidationError("--compression must be none, zlib, zlib-shuffle or auto")
        }
        config.readyFile = address.readyFile
        guard let mode = AveragingMode(rawValue: averaging) else {
            throw ValidationError("--averaging must be sync or push-sum")
        }
        guard pushIntervalMs > 0, (0...1).contains(pushLoss), pushLoss < 1 else {
            throw ValidationError("--push-interval-ms must be positive and --push-loss within [0, 1)")
        }
        config.averaging = mode
        config.pushInterval = .milliseconds(Int64(pushIntervalMs))
        config.pushLoss = pushLoss
        if pushLoss > 0 { logger.warning("test hook: this peer loses \(pushLoss) of its push-sum pushes; never use it outside tests") }
        if let misbehave {
            do { config.misbehaviour = try Misbehaviour(parsing: misbehave) } catch { throw ValidationError("\(error)") }
            logger.warning("test hook: this peer misbehaves (\(misbehave)); never use it outside tests")
        }
        guard convergeWindow > 0, convergeLossDelta >= 0, convergeLossDelta.isFinite, convergeDistance > 0,
              convergeDistance.isFinite, finalRounds >= 0, (quorum ?? 1) > 0 else {
            throw ValidationError("--converge-window, --converge-distance and --quorum must be positive; --converge-loss-delta and --final-rounds at least 0")
        }
        config.convergence.window = convergeWindow
        config.convergence.lossDelta = convergeLossDelta
        config.convergence.distance = convergeDistance
        config.convergence.quorum = quorum
        config.convergence.finalRounds = finalRounds
        config.convergence.serveWhenDone = serveWhenDone
        config.convergence.enabled = !noConverge
        do {
            config.swim = try SwimConfig(mode: swimMode, intervalMs: swimIntervalMs, timeoutMs: swimTimeoutMs, indirect: swimIndirect,
                                         suspicionMult: swimSuspicionMult, retransmitMult: swimRetransmitMult)
        } catch { throw ValidationError("\(error)") }
        config.security = security.resolve(listen: config.listen, stateDir: stateDir, logger: logger)
        config.admission = admission.config
        config.discovery = try discovery.resolve(security: config.security)
        if trainerKind == .external, config.security.controlSocket == nil, config.security.adminKeys.isEmpty {
            throw ValidationError("--trainer external needs a way for the training program to pull and push: --control-socket PATH (or --state-dir DIR, whose control.sock is the default), or an --admin-key for it over TCP")
        }
        let node = try PeerNode(config: config, logger: logger)
        let metrics = try metricsEndpoint.map { e in
            let m = NodeMetrics(role: "peer", checkpointPath: NodeMetrics.checkpointPath(stateDir: stateDir)) { node.status() }
            node.telemetry.add(m)
            let r = try startMetrics(e, m, "peer")
            node.metricsURL = "http://\(r.endpoint)/metrics"
            return r
        }
        latch.attach { node.requestStop() }
        let watcher = global.watchParent { latch.request() }
        if let metricsLog { node.telemetry.add(metricsLog) }
        let advertised = try node.start()
        metricsLog?.setNode(advertised.description)
        // Exits non-zero (1) when the last checkpoint could not be written.
        try node.run()
        metrics?.close()
        withExtendedLifetime((signals, watcher)) {}
    }
}

/// The bootstrap's initial model from a safetensors file: an MLP when the metadata names
/// its `arch`, else an external model whose table is the file's (SPEC §6.4).
func bootstrapModel(_ p: ParameterSet, _ meta: [String: String], path: String) throws -> (MLPArchitecture, ParameterSet) {
    if let a = meta["arch"], a != MLPArchitecture.externalName {
        return (try MLPArchitecture(parsing: a), p)
    }
    let arch: MLPArchitecture
    do { arch = try MLPArchitecture(external: p.layout) } catch { throw ValidationError("--model \(path): \(error)") }
    guard p.allFinite else { throw ValidationError("--model \(path) holds NaN or Inf weights") }
    Console.err.line("gossipd bootstrap: \(path) is served as an external model (\(p.specs.count) tensors, \(p.parameterCount) parameters): only --trainer external peers train it")
    return (arch, p)
}

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a local network (a bootstrap and N peers as child processes) and report how it trains.")

    @Option(help: "Number of peers.") var peers: Int = 4
    @Option(help: "digits | mnist:DIR | fashion-mnist:DIR | csv:FILE") var dataset: String = "digits"
    @Option(help: "Model architecture (default: chosen for the dataset).") var arch: String?
    @Option(help: "Training rounds per peer (default: 60 for digits, 150 for 28x28 images).") var rounds: Int?
    @Option(help: "SGD steps per round (default: 10 for digits, 20 for images).") var localSteps: Int?
    @Option(help: "Learning rate, decayed by a cosine over the rounds (default: 0.2 for digits, 0.05 for images).") var lr: Float?
    @Option(help: "Mini-batch size (default: 128 for digits, 64 for images).") var batch: Int?
    @Option(help: "Gaussian input noise std (default: 0.4 for digits, 0 for images).") var inputNoise: Float?
    @Option(help: "Minimum milliseconds per round, so progress can be watched (default: 100 for digits).") var paceMs: Int?
    @Option(name: .customLong("non-iid"), help: "Label-skewed shards with Dirichlet ALPHA.") var nonIID: Double?
    @Flag(help: "Keep the bootstrap alive (default: it is killed halfway).") var keepBootstrap = false
    @Option(help: "Log level of the children (their logs go to files).") var logLevel: String = "info"
    @Option(help: "When the demo ends, draw every peer's accuracy, loss and consensus distance over time into this SVG file (from each peer's --metrics-file in the work directory).")
    var plot: String?

    func run() throws {
        ignoreSIGPIPE()
        guard peers >= 2 else { throw ValidationError("--peers must be at least 2") }
        var o = DemoOptions()
        o.peers = peers
        do { o.dataset = try DatasetSource(parsing: dataset) } catch { throw ValidationError("--dataset: \(error)") }
        o.architecture = arch
        o.rounds = rounds
        o.localSteps = localSteps
        o.learningRate = lr
        o.batch = batch
        o.inputNoise = inputNoise
        o.pace = paceMs.map { .milliseconds($0) }
        o.nonIIDAlpha = nonIID
        o.killBootstrap = !keepBootstrap
        o.logLevel = logLevel
        o.plot = plot
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let demo = GossipNode.Demo(options: o, executable: FileManager.default.fileExists(atPath: exe) ? exe : CommandLine.arguments[0])
        let signals = onTerminationSignals {
            demo.killAll()
            Foundation.exit(130)
        }
        do {
            _ = try demo.run()
        } catch let e as DemoPlotError {
            Console.err.line("gossipd: \(e.message)")
            Foundation.exit(73)
        }
        withExtendedLifetime(signals) {}
    }
}

struct Gossipd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gossipd",
        abstract: "The gossip daemon: decentralized peer-to-peer model training.",
        discussion: "Exit codes: 0 ok, 1 runtime error, 64 usage error, 73 an output file (--metrics-file, demo --plot) cannot be written.",
        subcommands: [Bootstrap.self, Peer.self, Demo.self])
}

Console.setUp(onClosedStdout: .keepRunning)
Gossipd.main()
