// A test hook, not a feature: the attacks of SPEC §5.3's threat model, so that end-to-end
// tests can run a real insider against honest peers (`gossipd peer --misbehave MODE`, a
// hidden option). The attacker trains normally and answers like an honest peer, but every
// model it sends (its requests and its replies) is distorted, or it lies about its weight.
import GossipML

/// How a test attacker distorts what it sends.
public enum Misbehaviour: Sendable, Equatable, CustomStringConvertible {
    /// Every weight it sends is multiplied by this factor (`scale:50`).
    case scale(Float)
    /// Every tensor it sends is replaced by Gaussian noise with that tensor's RMS (`noise`).
    case noise
    /// It claims this averaging weight in its requests, and averages and replies with it as
    /// its own weight (`claim:1e9`).
    case claim(Double)

    /// Parses `scale:F`, `noise` or `claim:W`.
    /// - Throws: `NodeError` naming the accepted forms.
    public init(parsing s: String) throws {
        let parts = s.split(separator: ":", maxSplits: 1).map(String.init)
        switch (parts.first, parts.count) {
        case ("noise", 1): self = .noise
        case ("scale", 2):
            guard let f = Float(parts[1]), f.isFinite else { throw NodeError("--misbehave scale:F needs a finite factor, got '\(s)'") }
            self = .scale(f)
        case ("claim", 2):
            guard let w = Double(parts[1]), w.isFinite, w > 0 else { throw NodeError("--misbehave claim:W needs a positive weight, got '\(s)'") }
            self = .claim(w)
        default:
            throw NodeError("--misbehave '\(s)': use scale:F, noise or claim:W")
        }
    }

    public var description: String {
        switch self {
        case .scale(let f): "scale:\(f)"
        case .noise: "noise"
        case .claim(let w): "claim:\(w)"
        }
    }

    /// The weight it claims instead of `honest`.
    func weight(honest: Double) -> Double {
        if case .claim(let w) = self { return w }
        return honest
    }

    /// The model it sends instead of `params` (a copy; `params` is untouched). A weight
    /// claim sends the model as it is.
    func distort(_ params: ParameterSet, rng: inout SeededGenerator) -> ParameterSet {
        var out = params
        switch self {
        case .claim:
            break
        case .scale(let f):
            for i in out.storage.indices { out.storage[i] *= f }
        case .noise:
            for spec in out.specs {
                let r = spec.range
                guard !r.isEmpty else { continue }
                var sum = 0.0
                for i in r { sum += Double(out.storage[i]) * Double(out.storage[i]) }
                let rms = (sum / Double(r.count)).squareRoot()
                for i in r { out.storage[i] = Float(rng.nextGaussian() * rms) }
            }
        }
        return out
    }
}
