// The arithmetic of an exchange on raw weights: the responder's weighted average of its own
// weights and the request's, written into a separate buffer so the model is untouched until
// the result is installed. One vectorised pass (GossipML's averaging kernel, which fixes the
// exact float32 formula SPEC §5.3 gives).
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
}
