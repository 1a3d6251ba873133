// The status document a node answers `Status` with: one JSON object with stable keys, which
// gossipctl prints as text or passes through as JSON. Keys are documented in README.md
// ("gossipctl JSON output").
import Foundation

/// A node's state for tools and scripts.
public struct StatusReport: Codable, Sendable, Equatable {
    public struct Exchanges: Codable, Sendable, Equatable {
        /// Exchanges completed (started by this node or answered by it).
        public var done: Int = 0
        /// Exchanges this node started that failed (unreachable, deadline, error status).
        public var failed: Int = 0
        /// Exchanges this node started that the other side refused as busy (ABORTED).
        public var busy: Int = 0
        /// Exchanges offered to this node that it did not apply: busy (another exchange held
        /// its model), onboarding or stopping, or a request it refused (malformed, another
        /// schema, non-finite weights, a weight out of range).
        public var refused: Int = 0
        /// Reserves (SPEC §5.6) this node refused as busy: no weights travelled.
        public var reserveBusy: Int = 0
        /// This node's Reserves that got no answer within their short deadline (SPEC §5.6).
        public var reserveTimeouts: Int = 0
        public init() {}

        /// Missing counts read as 0 (SPEC §5.4: every key but `role` is optional).
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            done = try c.decodeIfPresent(Int.self, forKey: .done) ?? 0
            failed = try c.decodeIfPresent(Int.self, forKey: .failed) ?? 0
            busy = try c.decodeIfPresent(Int.self, forKey: .busy) ?? 0
            refused = try c.decodeIfPresent(Int.self, forKey: .refused) ?? 0
            reserveBusy = try c.decodeIfPresent(Int.self, forKey: .reserveBusy) ?? 0
            reserveTimeouts = try c.decodeIfPresent(Int.self, forKey: .reserveTimeouts) ?? 0
        }

        enum CodingKeys: String, CodingKey {
            case done, failed, busy, refused
            case reserveBusy = "reserve_busy", reserveTimeouts = "reserve_timeouts"
        }
    }

    /// What the insider bounds of SPEC §5.3 refused or lowered.
    public struct Rejected: Codable, Sendable, Equatable {
        /// Exchanges in which the other side claimed more than the weight cap allows: requests
        /// (averaged with the capped weight) and replies (refused, nothing installed).
        public var weightCapped: Int = 0
        /// Models refused as outliers (relative L2 distance over the bound): requests
        /// (answered MODEL_REJECTED) and replies (not installed).
        public var modelsRejected: Int = 0
        /// For each peer, how many of its exchanges were counted in either number above:
        /// keyed by the request's `sender` for requests and by the dialed endpoint for replies.
        /// At most `PeerState.maxRejectedPeers` keys; further peers count under "other".
        public var byPeer: [String: Int] = [:]
        /// Times this node found its own model the outlier (replies of two distinct peers
        /// refused) and went back to the warm-up bound (SPEC §5.3, self-check).
        public var boundResets: Int = 0
        public init() {}

        /// Missing counts read as 0 (SPEC §5.4).
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            weightCapped = try c.decodeIfPresent(Int.self, forKey: .weightCapped) ?? 0
            modelsRejected = try c.decodeIfPresent(Int.self, forKey: .modelsRejected) ?? 0
            byPeer = try c.decodeIfPresent([String: Int].self, forKey: .byPeer) ?? [:]
            boundResets = try c.decodeIfPresent(Int.self, forKey: .boundResets) ?? 0
        }

        enum CodingKeys: String, CodingKey {
            case weightCapped = "weight_capped", modelsRejected = "models_rejected", byPeer = "by_peer"
            case boundResets = "bound_resets"
        }
    }
    /// Push-sum averaging (SPEC §5.5): this node's mass and where mass went. Counts of pushes
    /// and sums of mass; `mass_unconfirmed` may or may not have reached its receiver.
    public struct PushSum: Codable, Sendable, Equatable {
        public var mass: Double = 0
        public var sent = 0, received = 0, returned = 0, unconfirmed = 0, lost = 0, capped = 0, confirmed = 0
        public var inFlight = 0
        public var massSent = 0.0, massReceived = 0.0, massReturned = 0.0, massUnconfirmed = 0.0
        public var massLost = 0.0, massCapped = 0.0, massInFlight = 0.0
        /// Times this peer found its model the outlier and gave up mass (SPEC §5.5), and how much.
        public var discarded = 0, massDiscarded = 0.0
        public init() {}

        enum CodingKeys: String, CodingKey {
            case mass, sent, received, returned, unconfirmed, lost, capped, confirmed, inFlight = "in_flight"
            case massSent = "mass_sent", massReceived = "mass_received", massReturned = "mass_returned"
            case massUnconfirmed = "mass_unconfirmed", massLost = "mass_lost", massCapped = "mass_capped"
            case massInFlight = "mass_in_flight", discarded, massDiscarded = "mass_discarded"
        }
    }
    /// "peer" or "bootstrap".
    public var role: String
    /// The address the node serves on.
    public var endpoint: String
    /// "onboarding", "training", "averaging" (training rounds done, still gossiping), "final"
    /// (votes cover the network, final averaging), "done" (final model written, serving it),
    /// "stopping"; bootstrap: "serving".
    public var phase: String
    public var architecture: String
    /// Schema hash of the model, 16 hex digits.
    public var schemaHash: String
    public var step: Int = 0
    public var round: Int = 0
    public var samplesSeen: Int = 0
    /// Mean training loss over the most recent round; null before the first.
    public var loss: Double?
    /// Accuracy on the held-out split at the last evaluation; null before the first.
    public var accuracy: Double?
    /// Loss on the held-out split at the last evaluation.
    public var heldOutLoss: Double?
    /// Rows in the held-out split.
    public var heldOutCount: Int = 0
    /// Dataset name and this node's shard, e.g. "digits" and "0/4".
    public var dataset: String = ""
    public var shard: String = ""
    /// Rows in this node's training shard (its averaging weight).
    public var shardSize: Int = 0
    /// Input preprocessing, as stored in exported safetensors metadata.
    public var preprocessing: [String: String] = [:]
    /// Known peers, sorted.
    public var peers: [String] = []
    public var exchanges = Exchanges()
    /// Exchanges the insider bounds refused or capped (SPEC §5.3).
    public var rejected = Rejected()
    public var bytesIn: Int = 0
    public var bytesOut: Int = 0
    public var uptimeSeconds: Double = 0
    /// Last checkpoint written, as a round number; null when none.
    public var checkpointRound: Int?
    /// Round the node resumed from a checkpoint at start; null when it started fresh.
    public var resumedFromRound: Int?
    /// The node's identity: its Curve25519 public key, 64 hex digits (issue 9); null when unknown.
    public var identity: String?
    /// True when the node's TCP connections are encrypted and authenticated (it has a
    /// network key); false on a plaintext node; null when unknown (an older node).
    public var secure: Bool?
    /// Known peers' identities: endpoint -> 64 hex digits the endpoint proved when this node
    /// dialed it, or null when not known yet (or on a plaintext network).
    public var peerIdentities: [String: String?] = [:]
    /// Push-sum state (SPEC §5.5); null when the node averages synchronously.
    public var pushSum: PushSum?
    /// Convergence detection and the end of training (SPEC §5.9); null on a bootstrap or an older peer.
    public var convergence: Convergence?
    /// The URL of the node's Prometheus metrics (`--metrics-listen`, README "Metrics"); null without.
    public var metrics: String?
    /// A peer's configured bootstrap (`--bootstrap`), HOST:PORT, whether or not it still
    /// answers (so that `gossipctl watch` can list it); null on a bootstrap or without one.
    public var bootstrap: String?
    /// Which program trains a peer's model: "swift" (its own trainer) or "external"
    /// (`--trainer external`, SPEC §5.12); absent on a bootstrap.
    public var trainer: String?
    /// An external peer's pull/push counters (SPEC §5.12); absent otherwise.
    public var external: External?

    /// The `external` object of an external peer's status (SPEC §5.12).
    public struct External: Codable, Sendable, Equatable {
        /// Pulls served and pushes applied since the node started.
        public var pulls = 0
        public var pushes = 0
        /// Pushes refused (unknown version, schema, non-finite, busy).
        public var pushesRefused = 0
        /// The version a pull would get now (the latest one handed out), 0 before the first pull.
        public var version: UInt64 = 0
        /// The averaging weight the node uses (the samples of the latest push; 1 before it).
        public var weight: Double = 1
        public init() {}
        enum CodingKeys: String, CodingKey {
            case pulls, pushes, pushesRefused = "pushes_refused", version, weight
        }
    }

    /// The `convergence` object of a peer's status (SPEC §5.9).
    public struct Convergence: Codable, Sendable, Equatable {
        /// False with --rounds: no detection, no end by votes.
        public var enabled = false
        /// This peer judged itself converged and voted done (sticky).
        public var converged = false
        /// The final model is written (phase done, or stopping after it).
        public var finished = false
        /// Done voters this peer knows, sorted.
        public var voters: [String] = []
        /// Voters among the members this peer knows plus itself.
        public var votesCounted = 0
        /// Votes needed to end: --quorum, or every member plus itself.
        public var votesNeeded = 0
        /// The learning rate in force (lowered on loss plateaus).
        public var learningRate: Double = 0
        /// Learning-rate reductions so far.
        public var reductions = 0
        /// Windows of rounds judged so far.
        public var windowsJudged = 0
        /// Relative improvement of the last window's mean loss over the previous one; null before two windows.
        public var lossImprovement: Double?
        /// The judged distance of the models met in the last window; null when it met too few.
        public var distance: Double?
        /// Models met in the last window.
        public var modelsMet = 0
        /// Final averaging steps done.
        public var finalRounds = 0
        /// Path of the final model; null until written (or without --state-dir).
        public var finalModel: String?
        /// Converged at the lowest learning rate with the models met still over the distance threshold.
        public var relaxed = false
        public init() {}

        enum CodingKeys: String, CodingKey {
            case enabled, converged, finished, voters, votesCounted = "votes_counted", votesNeeded = "votes_needed"
            case learningRate = "lr", reductions, windowsJudged = "windows_judged", lossImprovement = "loss_improvement"
            case distance = "max_distance", modelsMet = "models_met", finalRounds = "final_rounds", finalModel = "final_model"
            case relaxed
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            enabled = try c.decodeIfPresent(Bool.self, forKey: .enabled) ?? false
            converged = try c.decodeIfPresent(Bool.self, forKey: .converged) ?? false
            finished = try c.decodeIfPresent(Bool.self, forKey: .finished) ?? false
            voters = try c.decodeIfPresent([String].self, forKey: .voters) ?? []
            votesCounted = try c.decodeIfPresent(Int.self, forKey: .votesCounted) ?? 0
            votesNeeded = try c.decodeIfPresent(Int.self, forKey: .votesNeeded) ?? 0
            learningRate = try c.decodeIfPresent(Double.self, forKey: .learningRate) ?? 0
            reductions = try c.decodeIfPresent(Int.self, forKey: .reductions) ?? 0
            windowsJudged = try c.decodeIfPresent(Int.self, forKey: .windowsJudged) ?? 0
            lossImprovement = try c.decodeIfPresent(Double.self, forKey: .lossImprovement)
            distance = try c.decodeIfPresent(Double.self, forKey: .distance)
            modelsMet = try c.decodeIfPresent(Int.self, forKey: .modelsMet) ?? 0
            finalRounds = try c.decodeIfPresent(Int.self, forKey: .finalRounds) ?? 0
            finalModel = try c.decodeIfPresent(String.self, forKey: .finalModel)
            relaxed = try c.decodeIfPresent(Bool.self, forKey: .relaxed) ?? false
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(enabled, forKey: .enabled)
            try c.encode(converged, forKey: .converged)
            try c.encode(finished, forKey: .finished)
            try c.encode(voters, forKey: .voters)
            try c.encode(votesCounted, forKey: .votesCounted)
            try c.encode(votesNeeded, forKey: .votesNeeded)
            try c.encode(finiteOrNil(learningRate) ?? 0, forKey: .learningRate)
            try c.encode(reductions, forKey: .reductions)
            try c.encode(windowsJudged, forKey: .windowsJudged)
            try c.encode(finiteOrNil(lossImprovement), forKey: .lossImprovement)
            try c.encode(finiteOrNil(distance), forKey: .distance)
            try c.encode(modelsMet, forKey: .modelsMet)
            try c.encode(finalRounds, forKey: .finalRounds)
            try c.encode(finalModel, forKey: .finalModel)
            try c.encode(relaxed, forKey: .relaxed)
        }
    }

    public init(role: String, endpoint: String, phase: String, architecture: String, schemaHash: UInt64) {
        self.role = role
        self.endpoint = endpoint
        self.phase = phase
        self.architecture = architecture
        self.schemaHash = StatusReport.hex(schemaHash)
    }

    public static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, 16 - s.count)) + s
    }

    enum CodingKeys: String, CodingKey {
        case role, endpoint, phase, architecture, schemaHash = "schema_hash", step, round
        case samplesSeen = "samples_seen", loss, accuracy, heldOutLoss = "held_out_loss"
        case heldOutCount = "held_out_count", dataset, shard, shardSize = "shard_size", preprocessing
        case peers, exchanges, rejected, bytesIn = "bytes_in", bytesOut = "bytes_out", uptimeSeconds = "uptime_seconds"
        case checkpointRound = "checkpoint_round", resumedFromRound = "resumed_from_round"
        case identity, secure, peerIdentities = "peer_identities"
        case pushSum = "push_sum"
        case convergence
        case metrics
        case bootstrap
        case trainer, external
    }

    /// The `peer_identities` object of a membership table: every member, with the identity it proved or null.
    static func identities(of m: Membership) -> [String: String?] {
        var out: [String: String?] = [:]
        for e in m.endpoints { out[e] = .some(m.identity(of: e).map(Membership.hex)) }
        return out
    }

    /// Encodes every key, optional ones as `null`, so scripts always find the same keys.
    /// Non-finite numbers (a diverged loss) are encoded as `null` too: JSON has no NaN.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(role, forKey: .role)
        try c.encode(endpoint, forKey: .endpoint)
        try c.encode(phase, forKey: .phase)
        try c.encode(architecture, forKey: .architecture)
        try c.encode(schemaHash, forKey: .schemaHash)
        try c.encode(step, forKey: .step)
        try c.encode(round, forKey: .round)
        try c.encode(samplesSeen, forKey: .samplesSeen)
        try c.encode(finiteOrNil(loss), forKey: .loss)
        try c.encode(finiteOrNil(accuracy), forKey: .accuracy)
        try c.encode(finiteOrNil(heldOutLoss), forKey: .heldOutLoss)
        try c.encode(heldOutCount, forKey: .heldOutCount)
        try c.encode(dataset, forKey: .dataset)
        try c.encode(shard, forKey: .shard)
        try c.encode(shardSize, forKey: .shardSize)
        try c.encode(preprocessing, forKey: .preprocessing)
        try c.encode(peers, forKey: .peers)
        try c.encode(exchanges, forKey: .exchanges)
        try c.encode(rejected, forKey: .rejected)
        try c.encode(bytesIn, forKey: .bytesIn)
        try c.encode(bytesOut, forKey: .bytesOut)
        try c.encode(finiteOrNil(uptimeSeconds) ?? 0, forKey: .uptimeSeconds)
        try c.encode(checkpointRound, forKey: .checkpointRound)
        try c.encode(resumedFromRound, forKey: .resumedFromRound)
        try c.encode(identity, forKey: .identity)
        try c.encode(secure, forKey: .secure)
        try c.encode(peerIdentities, forKey: .peerIdentities)
        try c.encode(pushSum, forKey: .pushSum)
        // Only a peer has one: a bootstrap's document keeps its keys.
        try c.encodeIfPresent(convergence, forKey: .convergence)
        try c.encode(metrics, forKey: .metrics)
        // Only a peer started with --bootstrap has one.
        try c.encodeIfPresent(bootstrap, forKey: .bootstrap)
        try c.encodeIfPresent(trainer, forKey: .trainer)
        try c.encodeIfPresent(external, forKey: .external)
    }

    /// Reads a status object as SPEC §5.4 defines it: only `role` is required; every other key
    /// may be missing (or `null`) and then takes its "not known" value (0, "", empty, nil).
    /// Keys this version does not know are ignored.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        role = try c.decode(String.self, forKey: .role)
        endpoint = try c.decodeIfPresent(String.self, forKey: .endpoint) ?? ""
        phase = try c.decodeIfPresent(String.self, forKey: .phase) ?? ""
        architecture = try c.decodeIfPresent(String.self, forKey: .architecture) ?? ""
        schemaHash = try c.decodeIfPresent(String.self, forKey: .schemaHash) ?? ""
        step = try c.decodeIfPresent(Int.self, forKey: .step) ?? 0
        round = try c.decodeIfPresent(Int.self, forKey: .round) ?? 0
        samplesSeen = try c.decodeIfPresent(Int.self, forKey: .samplesSeen) ?? 0
        loss = try c.decodeIfPresent(Double.self, forKey: .loss)
        accuracy = try c.decodeIfPresent(Double.self, forKey: .accuracy)
        heldOutLoss = try c.decodeIfPresent(Double.self, forKey: .heldOutLoss)
        heldOutCount = try c.decodeIfPresent(Int.self, forKey: .heldOutCount) ?? 0
        dataset = try c.decodeIfPresent(String.self, forKey: .dataset) ?? ""
        shard = try c.decodeIfPresent(String.self, forKey: .shard) ?? ""
        shardSize = try c.decodeIfPresent(Int.self, forKey: .shardSize) ?? 0
        preprocessing = try c.decodeIfPresent([String: String].self, forKey: .preprocessing) ?? [:]
        peers = try c.decodeIfPresent([String].self, forKey: .peers) ?? []
        exchanges = try c.decodeIfPresent(Exchanges.self, forKey: .exchanges) ?? Exchanges()
        rejected = try c.decodeIfPresent(Rejected.self, forKey: .rejected) ?? Rejected()
        bytesIn = try c.decodeIfPresent(Int.self, forKey: .bytesIn) ?? 0
        bytesOut = try c.decodeIfPresent(Int.self, forKey: .bytesOut) ?? 0
        uptimeSeconds = try c.decodeIfPresent(Double.self, forKey: .uptimeSeconds) ?? 0
        checkpointRound = try c.decodeIfPresent(Int.self, forKey: .checkpointRound)
        resumedFromRound = try c.decodeIfPresent(Int.self, forKey: .resumedFromRound)
        identity = try c.decodeIfPresent(String.self, forKey: .identity)
        secure = try c.decodeIfPresent(Bool.self, forKey: .secure)
        peerIdentities = try c.decodeIfPresent([String: String?].self, forKey: .peerIdentities) ?? [:]
        pushSum = try c.decodeIfPresent(PushSum.self, forKey: .pushSum)
        convergence = try c.decodeIfPresent(Convergence.self, forKey: .convergence)
        metrics = try c.decodeIfPresent(String.self, forKey: .metrics)
        bootstrap = try c.decodeIfPresent(String.self, forKey: .bootstrap)
        trainer = try c.decodeIfPresent(String.self, forKey: .trainer)
        external = try c.decodeIfPresent(External.self, forKey: .external)
    }

    /// The JSON text (sorted keys, so output is stable).
    public func json(pretty: Bool = false) -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? enc.encode(self)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    public static func parse(_ json: String) throws -> StatusReport {
        try JSONDecoder().decode(StatusReport.self, from: Data(json.utf8))
    }
}

/// `v` when it is a finite number, else nil (JSON has no NaN or infinity: such a value is
/// encoded as `null`).
private func finiteOrNil(_ v: Double?) -> Double? { v.flatMap { $0.isFinite ? $0 : nil } }
