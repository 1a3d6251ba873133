// Averaging kernels for gossip: weighted in-place average and relative L2 distance.

/// Vectorised kernels that combine two parameter sets.
public enum Averaging {
    /// a = (wa*a + wb*b) / (wa + wb), in place, by the exact rule of `weightedAverage(into:...)`.
    ///
    /// Precondition: same schema, wa >= 0, wb >= 0, wa + wb > 0 (all finite).
    public static func weightedAverage(_ a: inout ParameterSet, weight wa: Double,
                                       with b: ParameterSet, weight wb: Double) {
        precondition(a.specs == b.specs, "weightedAverage: parameter sets have different schemas")
        a.storage.withUnsafeMutableBufferPointer { ap in
            b.storage.withUnsafeBufferPointer { bp in
                weightedAverage(into: ap, weight: wa, other: bp, weight: wb)
            }
        }
    }

    /// The two float32 coefficients of the averaging rule: `ca = float32(wa / (wa + wb))` and
    /// `cb = float32(wb / (wa + wb))`, the sum and the divisions in float64 (IEEE 754,
    /// round to nearest even), each quotient rounded to float32 once.
    ///
    /// The weights are used as float64 exactly as given (the wire's `f64 weight`); they are
    /// not rounded to float32 first. Precondition: wa >= 0, wb >= 0, wa + wb > 0, finite.
    public static func coefficients(weight wa: Double, other wb: Double) -> (ca: Float, cb: Float) {
        precondition(wa >= 0 && wb >= 0 && wa.isFinite && wb.isFinite && wa + wb > 0,
                     "weightedAverage: weights must be finite, >= 0, with a positive sum")
        let total = wa + wb
        return (Float(wa / total), Float(wb / total))
    }

    /// Raw kernel, the exact averaging rule of the protocol (SPEC §5.3):
    /// `a[i] = float32(float32(a[i] * ca) + float32(b[i] * cb))` with `(ca, cb)` from
    /// `coefficients(weight:other:)`.
    ///
    /// Two float32 products, each rounded, then one float32 sum, rounded: **not fused** (no
    /// FMA). Swift never contracts `x * y + z` into an FMA, so the SIMD loop and the scalar
    /// tail compute the same bits on every CPU (SSE, AVX2, NEON) and in every build, and numpy
    /// reproduces them with `a * np.float32(ca) + b * np.float32(cb)` on float32 arrays.
    public static func weightedAverage(into a: UnsafeMutableBufferPointer<Float>, weight wa: Double,
                                       other b: UnsafeBufferPointer<Float>, weight wb: Double) {
        precondition(a.count == b.count, "weightedAverage: buffers differ in length")
        let (ca, cb) = coefficients(weight: wa, other: wb)
        guard let ap = a.baseAddress, let bp = b.baseAddress else { return }
        let n = a.count
        var i = 0
        let va = SIMD16<Float>(repeating: ca), vb = SIMD16<Float>(repeating: cb)
        while i + 16 <= n {
            let x = UnsafeRawPointer(ap + i).loadUnaligned(as: SIMD16<Float>.self)
            let y = UnsafeRawPointer(bp + i).loadUnaligned(as: SIMD16<Float>.self)
            let px = x * va, py = y * vb
            UnsafeMutableRawPointer(ap + i).storeBytes(of: px + py, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n {
            let px = ap[i] * ca, py = bp[i] * cb
            ap[i] = px + py
            i += 1
        }
    }

    /// ||a - b|| / max(||a||, 1e-30): relative L2 distance of `a` from `b` (asymmetric: scaled by a).
    ///
    /// Sums are accumulated in Float SIMD lanes per 4096-element block, then in Double.
    /// Precondition: same schema.
    public static func relativeL2Distance(_ a: ParameterSet, _ b: ParameterSet) -> Double {
        precondition(a.specs == b.specs, "relativeL2Distance: parameter sets have different schemas")
        return a.storage.withUnsafeBufferPointer { ap in
            b.storage.withUnsafeBufferPointer { bp in
                let (diff, norm) = sumsOfSquares(ap, bp)
                return relativeL2(diff: diff, norm: norm)
            }
        }
    }

    /// The same distance over raw float buffers of equal length (e.g. a model as received).
    public static func relativeL2Distance(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>) -> Double {
        precondition(a.count == b.count, "relativeL2Distance: buffers differ in length")
        let (diff, norm) = sumsOfSquares(a, b)
        return relativeL2(diff: diff, norm: norm)
    }

    /// The relative L2 distance from the two sums of `sumsOfSquares`: `√diff / max(√norm, 1e-30)`.
    public static func relativeL2(diff: Double, norm: Double) -> Double {
        diff.squareRoot() / max(norm.squareRoot(), 1e-30)
    }

    /// (sum (a-b)^2, sum a^2): the two sums of `relativeL2Distance`, for callers that see a
    /// model in pieces and add them up.
    public static func sumsOfSquares(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>) -> (Double, Double) {
        guard let ap = a.baseAddress, let bp = b.baseAddress else { return (0, 0) }
        let n = min(a.count, b.count)
        var diff = 0.0, norm = 0.0
        var start = 0
        while start < n {
            let end = min(n, start + 4096)
            var d = SIMD16<Float>(), s = SIMD16<Float>()
            var i = start
            while i + 16 <= end {
                let x = UnsafeRawPointer(ap + i).loadUnaligned(as: SIMD16<Float>.self)
                let y = UnsafeRawPointer(bp + i).loadUnaligned(as: SIMD16<Float>.self)
                let e = x - y
                d += e * e
                s += x * x
                i += 16
            }
            var dd = Double(d.sum()), ss = Double(s.sum())
            while i < end {
                let e = Double(ap[i]) - Double(bp[i])
                dd += e * e
                ss += Double(ap[i]) * Double(ap[i])
                i += 1
            }
            diff += dd
            norm += ss
            start = end
        }
        return (diff, norm)
    }
}
