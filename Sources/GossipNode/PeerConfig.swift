// Configuration of the two daemon roles, as plain values that the CLI fills and tests build.
import GossipML
import GossipNet
import GossipWire

/// Everything a peer needs to run.
public struct PeerConfig: Sendable {
    /// Where to listen; port 0 lets the OS pick.
    public var listen: Endpoint
    /// The address other nodes should use; defaults to the bound address.
    public var advertise: Endpoint?
    /// The bootstrap to register with (optional when `join` names a live peer).
    public var bootstrap: Endpoint?
    /// Live peers to join through (Register is answered by peers too).
    public var join: [Endpoint] = []
    public var dataset: DatasetSource = .digits
    public var shardIndex = 0
    public var shardCount = 1
    /// Dirichlet concentration for label-skewed shards; nil for IID shards.
    public var nonIIDAlpha: Double?
    public var sgd = SGDConfig(learningRate: 0.05, momentum: 0.9, weightDecay: 1e-4, batchSize: 64)
    /// Cosine learning-rate decay over the training rounds (`rounds * localSteps` steps, down to
    /// `finalLearningRateFraction` of the rate); only when `rounds` is set.
    public var cosineSchedule = true
    /// SGD steps per round, before each gossip exchange.
    public var localSteps = 10
    /// Training rounds; after them the peer keeps averaging (gossip only) until stopped. nil: train forever.
    public var rounds: Int?
    public var seed: UInt64 = 1
    /// Checkpoint directory; nil disables checkpoints.
    public var stateDir: String?
    /// Rounds between checkpoints.
    public var checkpointEvery = 10
    /// Deadline of one gossip exchange.
    public var exchangeTimeout: Duration = .seconds(10)
    /// Rounds between held-out evaluations.
    public var evalEvery = 5
    /// Minimum wall time of one round (to watch a demo); zero runs flat out.
    public var pace: Duration = .zero
    /// Interval between exchanges once training rounds are done.
    public var averagingInterval: Duration = .milliseconds(100)
    /// How long onboarding keeps retrying before it gives up.
    public var onboardTimeout: Duration = .seconds(30)
    /// File that receives "HOST:PORT" once the peer serves its model.
    public var readyFile: String?
    /// Failed contacts in a row after which a peer is dropped.
    public var dropAfter = 3
    /// Compression of model payloads on the wire.
    public var compression: CompressionMode = .none
    /// `--compression auto`: choose none or zlib-shuffle per peer from the measured link and
    /// codec speeds (LinkChooser.swift); `compression` is then ignored for model payloads.
    public var autoCompression = false
    /// Encoding of the weights in this peer's exchange requests and pushes (SPEC §6.5,
    /// `--wire-dtype`): F32 (exact, the default), or the lossy F16, BF16 or I8. A responder
    /// answers in the encoding of the request, whatever its own setting.
    public var wireDType: DType = .float32
    /// With a lossy `wireDType`: keep what quantization dropped from this node's own
    /// contribution and add it to the next one (error feedback, SPEC §6.5). Off only to
    /// measure (hidden `gossipd peer --no-error-feedback`).
    public var errorFeedback = true
    /// With a lossy `wireDType`: once training has ended, exchange and push in F32, the
    /// residual included (the exact finish, SPEC §6.5). Off only to measure or to test the
    /// lossy exchange after training (hidden `gossipd peer --no-exact-finish`).
    public var exactFinish = true
    /// The encodings this node averages in when another node sends them (SPEC §6.5,
    /// `--accept-dtypes`); F32 always. A request or push in another encoding is answered
    /// UNIMPLEMENTED before anything changes, naming these.
    public var acceptDTypes: Set<DType> = Set(DType.allCases)
    /// The insider bounds of an exchange (SPEC §5.3): weight cap and outlier bound.
    public var exchangeBounds = ExchangeBounds()
    /// Test hook only (hidden `gossipd peer --misbehave`): makes this peer an attacker that
    /// sends bad models or a false weight. nil (the default) is an honest peer.
    public var misbehaviour: Misbehaviour?
    /// Network key, identity, admins and control socket (default: plaintext, an ephemeral
    /// identity, no control socket).
    public var security = NodeSecurity()
    /// How this peer averages (SPEC §5.3 synchronous exchange, or §5.5 push-sum).
    public var averaging: AveragingMode = .sync
    /// Push-sum: every peer pushes about once per interval (after a round when none left
    /// during the interval, else on a timer), so slow and fast peers mix at the same rate.
    public var pushInterval: Duration = .milliseconds(20)
    /// Test hook only (hidden `--push-loss P`): each push is lost with probability P (its
    /// half of the mass leaves the sender and is never sent).
    public var pushLoss: Double = 0
    /// Reserve the responder's slot with a small message before the weights travel (SPEC
    /// §5.6). Off only to measure the old behaviour (hidden `gossipd peer --no-reserve`).
    public var reserveFirst = true
    /// Floor of the adaptive Reserve deadline (SPEC §5.6): `clamp(8 × median recent Reserve
    /// round trip, minExchangeTimeout, exchangeTimeout)`.
    public var minExchangeTimeout: Duration = .milliseconds(250)
    /// Backoff of a peer after a failed contact, doubling per failure in a row up to
    /// `backoffMax` (SPEC §5.6).
    public var backoffBase: Duration = .seconds(1)
    public var backoffMax: Duration = .seconds(30)
    /// Convergence detection and the end of training (SPEC §5.9). Without `rounds` training
    /// ends this way; with `rounds` detection is off and the peer runs as before.
    public var convergence = ConvergenceConfig()
    /// SWIM failure detection (SPEC §5.10; `--swim-*`); nil: off (`--swim-mode off`), and
    /// membership falls back to dropping a peer after `dropAfter` failed contacts.
    public var swim: SwimConfig? = SwimConfig()
    /// Training settings taken from the dataset's defaults (`TrainingDefaults.forDataset`)
    /// once `PeerNode.init` has loaded it, replacing the values above; empty (the library
    /// default) keeps the values as set. `gossipd peer` names here every training option it
    /// was not given.
    public var trainingDefaultsFromDataset: TrainingDefaults.Settings = []
    /// Fair admission of incoming connections (SPEC §11): per-address cap, auth deadline.
    public var admission = AdmissionConfig()
    /// LAN discovery (`--discover multicast[:GROUP:PORT]`, SPEC §5.11); nil: off.
    public var discovery: DiscoveryConfig?
    /// Who trains the model: this node (`swift`) or another program through ModelPull and
    /// ModelPush (`external`, SPEC §5.12; then `dataset` is not used).
    public var trainer: TrainerKind = .swift

    public init(listen: Endpoint) { self.listen = listen }
}

/// The insider bounds of an exchange (SPEC §5.3). The defaults are the protocol's reference
/// values, chosen from distances measured on digits (see SPEC §5.3); a deployment may loosen
/// them for very different data, never disable them.
public struct ExchangeBounds: Sendable, Equatable {
    /// Neither weight of one average may exceed `weightCap` times the other (a power of two,
    /// so `weightCap × w` is exact).
    public var weightCap: Double = 4
    /// Accepted distances remembered per direction ("recent").
    public var window = 16
    /// Accepted distances needed before the adaptive bound replaces the warm-up bound.
    public var minSamples = 4
    /// Multiple of the median of recent accepted distances that is still admitted.
    public var k: Double = 4
    /// The adaptive bound never falls below this relative distance.
    public var floor: Double = 0.05
    /// The bound while fewer than `minSamples` distances were accepted (early training, after a restart).
    public var warmup: Double = 0.75
    /// The floor that replaces `floor` for push-sum pushes (SPEC §5.5, "Outlier bound of a
    /// push"): push distances are far more spread than exchange distances (a push that follows
    /// a merge with the same sender is almost at distance 0, one from a peer not heard from for
    /// a while carries its rounds of training), so `k × median` alone refused a third of honest
    /// pushes on digits.
    public var pushFloor: Double = 0.25

    /// The bounds a node applies: push-sum raises the floor to `pushFloor`.
    func effective(for averaging: AveragingMode) -> ExchangeBounds {
        var b = self
        if averaging == .pushSum { b.floor = max(floor, pushFloor) }
        return b
    }

    public init() {}
}

/// Everything a bootstrap needs to run.
public struct BootstrapConfig: Sendable {
    public var listen: Endpoint
    public var advertise: Endpoint?
    /// The initial model handed to peers.
    public var architecture: MLPArchitecture
    public var initialModel: ParameterSet
    public var readyFile: String?
    /// Interval of liveness pings to registered peers.
    public var pingInterval: Duration = .seconds(2)
    /// Failed pings in a row after which a peer is forgotten.
    public var dropAfter = 3
    /// Network key, identity, admins and control socket (default: plaintext, an ephemeral
    /// identity, no control socket).
    public var security = NodeSecurity()
    /// Fair admission of incoming connections (SPEC §11): per-address cap, auth deadline.
    public var admission = AdmissionConfig()

    public init(listen: Endpoint, architecture: MLPArchitecture, initialModel: ParameterSet) {
        self.listen = listen
        self.architecture = architecture
        self.initialModel = initialModel
    }
}

/// How a peer averages with the others.
public enum AveragingMode: String, Sendable, CaseIterable {
    /// The synchronous pairwise exchange (SPEC §5.3).
    case sync
    /// Push-sum (SPEC §5.5): one-way messages carrying half of a mass; nobody waits.
    case pushSum = "push-sum"
}
