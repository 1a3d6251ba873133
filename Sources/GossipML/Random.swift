// Seeded, bit-reproducible pseudo-random numbers (SplitMix64 seeding xoshiro256**).
//
// Integer generation is exact everywhere. Floats in [0, 1) are built from the top 24 (Float)
// or 53 (Double) bits with one exact multiply, so the same seed gives the same bytes on every
// machine. Only the Dirichlet/Gamma sampler uses libm (`log`, `cos`), which is deterministic
// for a given libm.

import Foundation

/// SplitMix64 step: used to expand a 64-bit seed into xoshiro state and to mix seeds.
@inlinable
public func splitMix64(_ state: inout UInt64) -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// xoshiro256** generator seeded through SplitMix64; deterministic across machines.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    @usableFromInline var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    /// Creates a generator whose whole output stream is a pure function of `seed`.
    public init(seed: UInt64) {
        var sm = seed
        s0 = splitMix64(&sm); s1 = splitMix64(&sm); s2 = splitMix64(&sm); s3 = splitMix64(&sm)
    }

    /// The four xoshiro256** state words (s0, s1, s2, s3): with `init(state:)`, a generator
    /// saved and restored continues exactly where it stopped.
    public var state: [UInt64] { [s0, s1, s2, s3] }

    /// Restores a generator from `state` (as read from `state`).
    ///
    /// - Throws: `MLError.invalidArgument` unless there are exactly four words, not all zero
    ///   (the all-zero state is the one xoshiro256** can never leave or reach).
    public init(state: [UInt64]) throws {
        guard state.count == 4, state.contains(where: { $0 != 0 }) else {
            throw MLError(.invalidArgument, "a generator state is four 64-bit words, not all zero; got \(state.count) words \(state); the saved state is corrupt")
        }
        s0 = state[0]; s1 = state[1]; s2 = state[2]; s3 = state[3]
    }

    /// Next 64 random bits.
    @inlinable
    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = (s3 << 45) | (s3 >> 19)
        return result
    }

    /// Uniform Float in [0, 1) from the top 24 bits (exact).
    @inlinable
    public mutating func nextFloat() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// Uniform Double in [0, 1) from the top 53 bits (exact).
    @inlinable
    public mutating func nextDouble() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Uniform integer in 0..<bound (bound > 0), unbiased (Lemire's method).
    @inlinable
    public mutating func nextInt(below bound: Int) -> Int {
        precondition(bound > 0)
        let b = UInt64(bound)
        var m = next().multipliedFullWidth(by: b)
        if m.low < b {
            let threshold = (0 &- b) % b
            while m.low < threshold { m = next().multipliedFullWidth(by: b) }
        }
        return Int(m.high)
    }

    /// Shuffles `array` in place (Fisher-Yates, deterministic for a given generator state).
    public mutating func shuffle<T>(_ array: inout [T]) {
        var i = array.count - 1
        while i > 0 {
            let j = nextInt(below: i + 1)
            if i != j { array.swapAt(i, j) }
            i -= 1
        }
    }

    /// Standard normal sample (Box-Muller).
    public mutating func nextGaussian() -> Double {
        let u1 = 1.0 - nextDouble()  // (0, 1]
        let u2 = nextDouble()
        return (-2.0 * log(u1)).squareRoot() * cos(2.0 * Double.pi * u2)
    }

    /// Gamma(shape, 1) sample (Marsaglia-Tsang; boosted for shape < 1).
    public mutating func nextGamma(shape: Double) -> Double {
        if shape < 1 {
            let u = 1.0 - nextDouble()
            return nextGamma(shape: shape + 1) * pow(u, 1.0 / shape)
        }
        let d = shape - 1.0 / 3.0
        let c = 1.0 / (9.0 * d).squareRoot()
        while true {
            var x: Double, v: Double
            repeat {
                x = nextGaussian()
                v = 1.0 + c * x
            } while v <= 0
            v = v * v * v
            let u = 1.0 - nextDouble()
            if log(u) < 0.5 * x * x + d - d * v + d * log(v) { return d * v }
        }
    }

    /// Dirichlet(alpha, ..., alpha) sample of dimension `count`.
    public mutating func nextDirichlet(alpha: Double, count: Int) -> [Double] {
        var g = (0..<count).map { _ in nextGamma(shape: alpha) }
        let sum = g.reduce(0, +)
        if sum <= 0 || !sum.isFinite {
            return [Double](repeating: 1.0 / Double(count), count: count)
        }
        for i in g.indices { g[i] /= sum }
        return g
    }
}
