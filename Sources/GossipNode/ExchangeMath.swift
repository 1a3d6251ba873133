// The arithmetic of an exchange on raw weights, as pure functions and values:
// - the responder's weighted average of its own weights and the request's, written into a
//   separate buffer so the model is untouched until the result is installed (one vectorised
//   pass: GossipML's averaging kernel, which fixes the exact float32 formula of SPEC §5.3);
// - the insider bounds of SPEC §5.3: the weight cap (neither side of one average may count
//   for more than `cap` times the other) and the relative L2 distance of an incoming model
//   from the receiver's, judged by an adaptive outlier bound over recently accepted distances.
//
// Threat model (SPEC §5.3, "What the bounds defend"): one member that holds the network key
// scaling or noising the weights it sends, or lying about its averaging weight, cannot move
// an honest model by more than the bound allows per exchange. Colluding members, Sybils that
// hold the key, and slow poisoning that stays within the bound are not defended.
import Foundation
import GossipML
import GossipWire

enum ExchangeMath {
    /// `out = average(own, incoming)` with the weights' coefficients (SPEC §5.3).
    ///
    /// Precondition: `incoming.data` holds `own.count` little-endian float32 values and
    /// `out.count == own.count`.
    static func average(own: [Float], ownWeight: Double, incoming: ModelState, incomingWeight: Double,
                        into out: inout [Float]) {
        precondition(out.count == own.count && incoming.data.count == own.count * 4, "ExchangeMath.average: sizes differ")
        out.withUnsafeMutableBufferPointer { dst in
            own.withUnsafeBufferPointer { src in _ = dst.update(fromContentsOf: src) }
            incoming.data.withUnsafeBytes { raw in
                raw.withMemoryRebound(to: Float.self) { f in
                    Averaging.weightedAverage(into: dst, weight: ownWeight, other: f, weight: incomingWeight)
                }
            }
        }
    }

    /// `‖incoming − own‖₂ / ‖own‖₂` over all weights as one vector (SPEC §5.3), read in place:
    /// one vectorised pass over both float32 buffers, no copy; a lossy model (SPEC §6.5) is
    /// dequantized run by run through a stack buffer (`LossyCodec.forEachRun`), never into a
    /// model-sized one. +∞ or NaN when the sums overflow float32 (a model of huge values), or
    /// for a lossy model that does not decode: such a distance is never within a bound.
    ///
    /// Precondition: `incoming` holds `own.count` weights (float32, or lossy).
    static func relativeDistance(own: [Float], incoming: ModelState) -> Double {
        if incoming.table.isLossy {
            precondition(incoming.table.elementCount == own.count, "ExchangeMath.relativeDistance: sizes differ")
            var diff = 0.0, norm = 0.0
            let decoded: Bool = own.withUnsafeBufferPointer { o in
                incoming.data.withUnsafeBytes { raw in
                    (try? LossyCodec.forEachRun(raw, table: incoming.table) { at, run in
                        let (d, n) = Averaging.sumsOfSquares(UnsafeBufferPointer(rebasing: o[at..<(at + run.count)]), run)
                        diff += d
                        norm += n
                    }) != nil
                }
            }
            return decoded ? Averaging.relativeL2(diff: diff, norm: norm) : .nan
        }
        precondition(incoming.data.count == own.count * 4, "ExchangeMath.relativeDistance: sizes differ")
        return incoming.data.withUnsafeBytes { raw in
            raw.withMemoryRebound(to: Float.self) { inc in
                own.withUnsafeBufferPointer { Averaging.relativeL2Distance($0, inc) }
            }
        }
    }

    /// The weights one average uses (SPEC §5.3, the weight cap): each is clamped to at most
    /// `cap` times the other, so neither side's coefficient exceeds `cap / (1 + cap)`.
    /// `incomingCapped` is true when the other side's claim was lowered.
    ///
    /// Precondition: both weights finite and > 0, `cap` ≥ 1. With a power-of-two `cap` the
    /// products are exact, so the caller's check of the reply's weight (`≤ cap × own`)
    /// reproduces the responder's clamp bit for bit.
    static func cappedWeights(own: Double, incoming: Double, cap: Double)
        -> (own: Double, incoming: Double, incomingCapped: Bool) {
        precondition(own > 0 && incoming > 0 && own.isFinite && incoming.isFinite && cap >= 1,
                     "cappedWeights: weights must be finite and positive, cap at least 1")
        let usedIncoming = min(incoming, cap * own)
        let usedOwn = min(own, cap * incoming)
        return (usedOwn, usedIncoming, usedIncoming < incoming)
    }

    /// True when a reply's `weight` keeps the cap: finite, > 0 and at most `cap` times the
    /// weight the caller sent (an honest responder reports the clamped weight it used).
    static func replyWeightWithinCap(_ replyWeight: Double, sent: Double, cap: Double) -> Bool {
        replyWeight.isFinite && replyWeight > 0 && replyWeight <= cap * sent
    }
}

/// The adaptive outlier bound for one direction of exchanges (requests this node answers, or
/// replies it installs; SPEC §5.3). A pure value: the node keeps two of them in `PeerState`.
///
/// `bound` = `warmup` while fewer than `minSamples` distances were accepted (early training,
/// or just after a restart), else `max(floor, k × median(last window accepted distances))`.
/// A distance is admitted when `d ≤ bound` (so NaN and +∞ never are). Only accepted
/// distances enter the window: refused ones cannot drag the bound up.
struct OutlierBound: Sendable, Equatable {
    let policy: ExchangeBounds
    /// The last `policy.window` accepted distances, oldest first.
    private(set) var recent: [Double] = []

    init(policy: ExchangeBounds) { self.policy = policy }

    /// The median of `recent` (mean of the two middle values for an even count); nil when empty.
    var median: Double? {
        guard !recent.isEmpty else { return nil }
        let s = recent.sorted()
        let m = s.count / 2
        return s.count % 2 == 1 ? s[m] : (s[m - 1] + s[m]) / 2
    }

    /// How far this node's own model was moved by its trusted local trainer (an external
    /// trainer's pushes, SPEC §5.12), the last `policy.window` moves, oldest first.
    private(set) var ownMoves: [Double] = []

    /// The bound never falls below twice the largest recent own move, capped at `warmup`: a
    /// node whose trainer just moved its model by `c` expects its partners, trained the same
    /// way, to lie about that far away (SPEC §5.3). Insiders cannot raise it: only this node's
    /// own pushes enter it.
    var ownMoveFloor: Double { min(policy.warmup, 2 * (ownMoves.max() ?? 0)) }

    /// The largest distance admitted now.
    var bound: Double {
        guard recent.count >= policy.minSamples, let m = median else { return policy.warmup }   // ownMoveFloor <= warmup
        return max(policy.floor, policy.k * m, ownMoveFloor)
    }

    /// Records a move of this node's own model by its local trainer (relative L2 change).
    mutating func recordOwnMove(_ change: Double) {
        guard change.isFinite, change > 0 else { return }
        ownMoves.append(change)
        if ownMoves.count > policy.window { ownMoves.removeFirst(ownMoves.count - policy.window) }
    }

    /// True when `distance` is within the bound.
    func admits(_ distance: Double) -> Bool { distance <= bound }

    /// How the bound was derived, for error texts and logs.
    var explanation: String {
        guard recent.count >= policy.minSamples, let m = median else {
            return "the warm-up bound \(shortNumber(policy.warmup)) while fewer than \(policy.minSamples) exchanges were accepted"
        }
        let own = ownMoveFloor > 0 ? ", twice this node's own largest recent push \(shortNumber(ownMoveFloor))" : ""
        return "max(floor \(shortNumber(policy.floor)), \(shortNumber(policy.k)) x median \(shortNumber(m)) of the last \(recent.count) accepted distances\(own))"
    }

    /// Forgets the history: the warm-up bound applies again (the self-check of SPEC §5.3).
    mutating func reset() { recent = [] }

    /// Records the distance of an exchange that was accepted and installed.
    mutating func record(_ distance: Double) {
        guard distance.isFinite, distance >= 0 else { return }
        recent.append(distance)
        if recent.count > policy.window { recent.removeFirst(recent.count - policy.window) }
    }
}

/// A number in a short, readable form for error texts (4 significant digits).
func shortNumber(_ v: Double) -> String {
    guard v.isFinite else { return "\(v)" }
    var s = String(format: "%.4g", v)
    if s.contains("e") { s = s.replacingOccurrences(of: "e+0", with: "e").replacingOccurrences(of: "e+", with: "e") }
    return s
}
