// Both GEMM micro-kernels, run explicitly in the debug test build, bit for bit against scalar
// references of their own rounding: the AVX2/FMA kernel is one fused multiply-add per step,
// the portable kernel a rounded product then a rounded sum, p in order 0 ..< k for both.

import Foundation
import Testing
@testable import GossipML

@Suite struct KernelTests {
    /// Sizes around the 6x16 block edges, strided (transposed) operands included.
    static let shapes: [(m: Int, n: Int, k: Int)] = [(1, 1, 1), (7, 17, 5), (13, 33, 9), (6, 16, 0), (2, 40, 31),
                                                     (6, 16, 64), (12, 32, 3), (5, 15, 100), (19, 1, 7)]

    /// Runs `gemm` with `kernel` on random A [m,k] and B read as btᵀ (bt stored [n,k]) and
    /// checks every element against `reference(a row, bt row)` bit for bit.
    static func check(_ kernel: MicroKernel, reference: ([Float], [Float]) -> Float) {
        let scratch = GemmScratch()
        var rng = SeededGenerator(seed: 3)
        for (m, n, k) in shapes {
            let a = (0..<(m * k)).map { _ in rng.nextFloat() * 2 - 1 }
            let bt = (0..<(n * k)).map { _ in rng.nextFloat() * 2 - 1 }
            var c = [Float](repeating: .nan, count: m * n)
            a.withUnsafeBufferPointer { ap in bt.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                Kernels.gemm(m: m, n: n, k: k, a: ap.baseAddress ?? UnsafePointer(bitPattern: 8)!, ars: k, acs: 1,
                             b: bp.baseAddress ?? UnsafePointer(bitPattern: 8)!, brs: 1, bcs: k,
                             c: cp.baseAddress!, scratch: scratch, kernel: kernel)
            } } }
            for i in 0..<m { for j in 0..<n {
                let want = reference(Array(a[(i * k)..<(i * k + k)]), Array(bt[(j * k)..<(j * k + k)]))
                #expect(c[i * n + j].bitPattern == want.bitPattern,
                        "\(kernel) m \(m) n \(n) k \(k) at (\(i), \(j)): \(c[i * n + j]) vs \(want)")
            } }
        }
    }

    @Test func portableKernelIsRoundedMultiplyThenAdd() {
        Self.check(.portable) { a, b in
            var s: Float = 0
            for p in a.indices {
                let prod = a[p] * b[p]
                s = s + prod
            }
            return s
        }
    }

    @Test(.enabled(if: MicroKernel.avx2fma.isSupported, "this CPU lacks AVX2 or FMA: the AVX2/FMA kernel cannot run here"))
    func avx2KernelIsOneFusedMultiplyAddPerStep() {
        Self.check(.avx2fma) { a, b in
            var s: Float = 0
            for p in a.indices { s = s.addingProduct(a[p], b[p]) }
            return s
        }
    }

    @Test func bestKernelIsSupportedAndUsedByDefault() {
        #expect(MicroKernel.best.isSupported)
        #expect(MicroKernel.portable.isSupported)
        #if !arch(x86_64)
        #expect(!MicroKernel.avx2fma.isSupported)
        #endif
        if ProcessInfo.processInfo.environment["GOSSIP_ML_KERNEL"] == nil {
            #expect(MicroKernel.best == (MicroKernel.avx2fma.isSupported ? .avx2fma : .portable))
        }
    }

    /// The two kernels agree to float32 rounding on a whole training gradient (different
    /// rounding, same mathematics), so a network can mix CPUs.
    @Test(.enabled(if: MicroKernel.avx2fma.isSupported, "this CPU lacks AVX2 or FMA: nothing to compare the portable kernel with"))
    func kernelsAgreeWithinRounding() {
        let scratch = GemmScratch()
        var rng = SeededGenerator(seed: 9)
        let (m, n, k) = (37, 45, 200)
        let a = (0..<(m * k)).map { _ in rng.nextFloat() * 2 - 1 }
        let b = (0..<(k * n)).map { _ in rng.nextFloat() * 2 - 1 }
        var out: [[Float]] = []
        for kernel in [MicroKernel.portable, .avx2fma] {
            var c = [Float](repeating: 0, count: m * n)
            a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                Kernels.gemm(m: m, n: n, k: k, a: ap.baseAddress!, ars: k, acs: 1, b: bp.baseAddress!, brs: n, bcs: 1,
                             c: cp.baseAddress!, scratch: scratch, kernel: kernel)
            } } }
            out.append(c)
        }
        for i in 0..<(m * n) { #expect(abs(out[0][i] - out[1][i]) <= 1e-4 * max(1, abs(out[0][i]))) }
    }
}
