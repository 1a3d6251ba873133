// Convergence detection and the end of training (SPEC §5.9), as values that do no I/O:
// - `ConvergenceDetector` judges, from this peer's per-round training loss and the relative
//   L2 distances of the models it met, whether it has converged; on a plateau it first lowers
//   the learning rate ("reduce on plateau").
// - `VoteSet` is the grow-only set of peers that voted "done", and the quorum rule.
// The node (PeerConvergence.swift) feeds them events under its lock and acts on the result.
//
// Threat model (also SPEC §5.9): a vote is a claim by an endpoint. Any member holding the
// network key can forge votes for other endpoints, or claim to have finished; it can thereby
// end training early (the network then exits with the current, possibly worse, model). A
// "finished" peer's model is fetched with GetModel and judged like an exchange reply (schema,
// finite weights, the outlier bound of SPEC §5.3), so it cannot hand out a far-off model. Outsiders cannot vote (the Noise channel).
// Votes are bounded: at most `Limits.maxPeers` endpoints, each a valid HOST:PORT.
import GossipWire

/// Options of convergence detection and the end of training (`gossipd peer --converge-*`,
/// `--quorum`, `--final-rounds`, `--serve-when-done`).
public struct ConvergenceConfig: Sendable, Equatable {
    /// Rounds per window: the loss is judged on the mean of one window against the previous one.
    public var window = 20
    /// The loss has stopped improving when `(previous mean - this mean) / previous mean` is below this.
    public var lossDelta = 0.01
    /// Converged only when the models met in the window are within this relative L2 distance
    /// (the 90th percentile of the window's distances; see `distanceQuantile`).
    public var distance = 0.01
    /// Models the window must have met (accepted) before the distance criterion can hold.
    public var minModelsMet = 3
    /// The quantile of the window's distances judged against `distance` (0.9: one far model
    /// in ten is tolerated, e.g. a peer that just joined).
    public var distanceQuantile = 0.9
    /// Learning-rate reductions (each by `lrFactor`) before the peer may judge itself
    /// converged. Only without --rounds (with --rounds the cosine schedule sets the rate).
    public var reductions = 2
    /// Factor of one reduction.
    public var lrFactor = 0.5
    /// The learning rate is never lowered below this fraction of the configured one.
    public var minLRScale = 1.0 / 64
    /// Votes needed to end (nil: every member this peer knows plus itself).
    public var quorum: Int?
    /// Averaging steps after the votes cover the network, before the final model is written.
    public var finalRounds = 10
    /// After the final model is written, keep serving (phase `done`) instead of exiting.
    public var serveWhenDone = false
    /// False disables detection and the end by votes (a peer run with --rounds).
    public var enabled = true

    public init() {}
}

/// What the detector asks the node to do after a round.
public enum ConvergenceAction: Sendable, Equatable {
    case none
    /// Multiply the configured learning rate by `scale` (cumulative) from now on.
    case setLearningRateScale(Double)
    /// This peer judges itself converged: vote done (sticky).
    case converged
}

/// The local convergence judgement (SPEC §5.9). A value: feed it rounds and met models.
public struct ConvergenceDetector: Sendable, Equatable {
    public let config: ConvergenceConfig
    /// May it lower the learning rate (false with --rounds: the schedule owns it)?
    public let mayReduceRate: Bool
    /// Losses of the current window.
    private(set) var losses: [Double] = []
    /// Distances of the models met during the current window.
    private(set) var distances: [Double] = []
    /// Mean loss of the previous complete window.
    public private(set) var previousMean: Double?
    /// Relative improvement of the last complete window over the one before; nil before two windows.
    public private(set) var lastImprovement: Double?
    /// The judged distance (quantile) of the last complete window; nil when it met too few models.
    public private(set) var lastDistance: Double?
    /// Models met in the last complete window.
    public private(set) var lastModelsMet = 0
    public private(set) var reductionsDone = 0
    public private(set) var learningRateScale = 1.0
    /// Sticky once set.
    public private(set) var converged = false
    /// Converged at the lowest learning rate although the models met were farther than `distance`.
    public private(set) var relaxed = false
    public private(set) var windowsJudged = 0

    public init(config: ConvergenceConfig, mayReduceRate: Bool) {
        self.config = config
        self.mayReduceRate = mayReduceRate
    }

    /// A model was accepted at relative L2 `distance` from this peer's (any direction).
    /// Non-finite or negative values are ignored; the window keeps at most 4 × `window` of them.
    public mutating func modelMet(distance: Double) {
        guard distance.isFinite, distance >= 0 else { return }
        distances.append(distance)
        let cap = max(16, 4 * max(1, config.window))
        if distances.count > cap { distances.removeFirst(distances.count - cap) }
    }

    /// A training round ended with mean loss `loss`. Returns what to do.
    public mutating func roundCompleted(loss: Double) -> ConvergenceAction {
        guard config.enabled, !converged, loss.isFinite else { return .none }
        losses.append(loss)
        guard losses.count >= max(1, config.window) else { return .none }
        let mean = losses.reduce(0, +) / Double(losses.count)
        let met = distances
        losses = []
        distances = []
        windowsJudged += 1
        lastModelsMet = met.count
        lastDistance = met.count >= config.minModelsMet ? ConvergenceDetector.quantile(met, config.distanceQuantile) : nil
        guard let prev = previousMean else {
            previousMean = mean
            return .none
        }
        previousMean = mean
        let improvement = prev > 0 ? (prev - mean) / prev : 0
        lastImprovement = improvement
        guard improvement < config.lossDelta else { return .none }
        // A plateau.
        let close = lastDistance.map { $0 <= config.distance } ?? false
        let enoughReductions = !mayReduceRate || reductionsDone >= config.reductions
        if enoughReductions, close {
            converged = true
            return .converged
        }
        if mayReduceRate, learningRateScale * config.lrFactor >= config.minLRScale - 1e-12 {
            reductionsDone += 1
            learningRateScale *= config.lrFactor
            return .setLearningRateScale(learningRateScale)
        }
        // At the lowest rate (or with a schedule that owns it) and still a plateau: training
        // has nothing more to give. Converged when enough models were met, even if they are
        // farther than `distance`: the final averaging steps bring them together, and a
        // network that never ends is worse (`relaxed` says so in status and logs).
        if enoughReductions, lastDistance != nil, mayReduceRate {
            converged = true
            relaxed = true
            return .converged
        }
        return .none
    }

    /// Resumes the rate reductions of a checkpoint (the windows start afresh). `scale` is
    /// bounded to [minLRScale, 1], `reductions` to [0, 64].
    public mutating func resume(learningRateScale scale: Double, reductions: Int) {
        guard scale.isFinite else { return }
        learningRateScale = min(1, max(config.minLRScale, scale))
        reductionsDone = min(64, max(0, reductions))
    }

    /// The `q` quantile (nearest rank) of non-empty `values`.
    static func quantile(_ values: [Double], _ q: Double) -> Double {
        let s = values.sorted()
        let rank = Int((min(max(q, 0), 1) * Double(s.count)).rounded(.up))
        return s[min(s.count - 1, max(0, rank - 1))]
    }
}

/// The done votes a peer knows: a grow-only set of endpoints, bounded.
public struct VoteSet: Sendable, Equatable {
    public let capacity: Int
    public private(set) var voters: Set<String> = []

    public init(capacity: Int) { self.capacity = max(1, capacity) }

    /// Adds valid endpoints (HOST:PORT) until the capacity is reached. Returns how many were new.
    @discardableResult
    public mutating func merge<S: Sequence>(_ endpoints: S) -> Int where S.Element == String {
        var added = 0
        for e in endpoints where voters.count < capacity && !voters.contains(e) && Membership.isEndpoint(e) {
            voters.insert(e)
            added += 1
        }
        return added
    }

    /// The votes this peer needs before it ends: the quorum, or every known member plus itself.
    public static func needed(members: [String], me: String, quorum: Int?) -> Int {
        if let q = quorum { return max(1, q) }
        return Set(members + [me]).count
    }

    /// True when the votes end training: with a quorum, at least that many voters; else every
    /// member in `members` and `me` has voted.
    public func covers(members: [String], me: String, quorum: Int?) -> Bool {
        if let q = quorum { return voters.count >= max(1, q) }
        return voters.contains(me) && members.allSatisfy { voters.contains($0) }
    }

    /// Voters that are among `members` or `me` (what status shows as votes toward the end).
    public func counted(members: [String], me: String) -> Int {
        Set(members + [me]).filter { voters.contains($0) }.count
    }

    public var sorted: [String] { voters.sorted() }
}
