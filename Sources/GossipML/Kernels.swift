// Vectorised kernels over contiguous Float storage: a packed, register-blocked GEMM and helpers.
//
// The GEMM computes C[M,N] = A[M,K] · B[K,N] where A and B are read through arbitrary
// (row, column) strides, so the three products of an MLP layer need no explicit transposes:
//   forward  Y  = X · Wᵀ   (B read as Wᵀ through strides)
//   backward dW = dYᵀ · X  (A read as dYᵀ through strides)
//   backward dX = dY · W
// Operands are packed into contiguous panels (A: MR rows interleaved; B: NR columns), zero
// padded at the edges, and a 6x16 micro-kernel keeps twelve SIMD8 accumulators in registers
// while streaming K.
//
// Two micro-kernels, chosen at run time (`MicroKernel.best`): the AVX2/FMA one in C
// (CGossipKernels, compiled for AVX2/FMA per function) on x86_64 CPUs that have both, and the
// portable Swift one (SIMD8 multiply, then add) everywhere else. Nothing else in GossipML is
// compiled for a particular CPU, so the library runs on any CPU of its architecture.

import CGossipKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The GEMM micro-kernel implementations.
///
/// They differ in rounding: the AVX2 kernel fuses each multiply-add (one rounding), the
/// portable one rounds the product and the sum. Training results are therefore reproducible
/// per kernel, not across kernels; the averaging rule (SPEC §5.3) does not use either.
public enum MicroKernel: String, Sendable, CaseIterable {
    /// SIMD8 multiply then add, in Swift; runs on every CPU.
    case portable
    /// 256-bit fused multiply-add, in C; needs an x86_64 CPU with AVX2 and FMA.
    case avx2fma

    /// Whether this CPU can run the kernel.
    public var isSupported: Bool {
        switch self {
        case .portable: return true
        case .avx2fma: return MicroKernel.cpuHasAVX2FMA
        }
    }

    private static let cpuHasAVX2FMA: Bool = gossip_cpu_has_avx2_fma() != 0

    /// The kernel GossipML uses: `avx2fma` when the CPU supports it, else `portable`. The
    /// environment variable `GOSSIP_ML_KERNEL=portable` forces the portable kernel (to run
    /// what a CPU without AVX2 runs); any other value is ignored.
    public static let best: MicroKernel = {
        if let forced = getenv("GOSSIP_ML_KERNEL"), String(cString: forced) == "portable" { return .portable }
        return cpuHasAVX2FMA ? .avx2fma : .portable
    }()
}

/// Reusable packing buffers for `Kernels.gemm`; grows on demand, never shrinks.
final class GemmScratch {
    private(set) var packA: UnsafeMutablePointer<Float>
    private(set) var packB: UnsafeMutablePointer<Float>
    private var capA: Int
    private var capB: Int

    init(capacityA: Int = 0, capacityB: Int = 0) {
        capA = max(capacityA, 16)
        capB = max(capacityB, 16)
        packA = .allocate(capacity: capA)
        packB = .allocate(capacity: capB)
    }

    deinit {
        packA.deallocate()
        packB.deallocate()
    }

    /// Makes sure the buffers hold at least `a` and `b` floats (allocates only when growing).
    func reserve(a: Int, b: Int) {
        if a > capA {
            packA.deallocate()
            capA = a
            packA = .allocate(capacity: a)
        }
        if b > capB {
            packB.deallocate()
            capB = b
            packB = .allocate(capacity: b)
        }
    }

    /// Floats `gemm` needs for given sizes.
    static func requirement(m: Int, n: Int, k: Int) -> (a: Int, b: Int) {
        let panels = (m + Kernels.mr - 1) / Kernels.mr
        return (panels * Kernels.mr * max(k, 1), max(k, 1) * Kernels.nr)
    }
}

/// Low-level numeric kernels. Pointers must be valid for the stated extents.
enum Kernels {
    /// Micro-kernel rows.
    static let mr = 6
    /// Micro-kernel columns (two SIMD8 vectors).
    static let nr = 16

    @inline(__always)
    static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    @inline(__always)
    static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
    }

    /// c += a * b, product and sum each rounded (the portable kernel; Swift never fuses them).
    @inline(__always)
    static func madd(_ c: inout SIMD8<Float>, _ a: SIMD8<Float>, _ b: SIMD8<Float>) {
        c += a * b
    }

    /// C[m,n] (row-major, leading dimension n) = A · B.
    ///
    /// A element (i, p) is `a[i*ars + p*acs]`; B element (p, j) is `b[p*brs + j*bcs]`.
    /// C is overwritten. `scratch` must not be used concurrently. `kernel` must be supported
    /// by this CPU (`MicroKernel.isSupported`); the default is `MicroKernel.best`.
    static func gemm(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, ars: Int, acs: Int,
        b: UnsafePointer<Float>, brs: Int, bcs: Int,
        c: UnsafeMutablePointer<Float>,
        scratch: GemmScratch,
        kernel: MicroKernel = .best
    ) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            c.initialize(repeating: 0, count: m * n)
            return
        }
        let req = GemmScratch.requirement(m: m, n: n, k: k)
        scratch.reserve(a: req.a, b: req.b)
        let pa = scratch.packA
        let pb = scratch.packB
        let panels = (m + mr - 1) / mr

        // Pack A: panel q holds rows q*mr ..< q*mr+mr, element (r, p) at [p*mr + r].
        for q in 0..<panels {
            let dst = pa + q * mr * k
            for r in 0..<mr {
                let i = q * mr + r
                if i < m {
                    let src = a + i * ars
                    if acs == 1 {
                        for p in 0..<k { dst[p * mr + r] = src[p] }
                    } else {
                        for p in 0..<k { dst[p * mr + r] = src[p * acs] }
                    }
                } else {
                    for p in 0..<k { dst[p * mr + r] = 0 }
                }
            }
        }

        var j0 = 0
        while j0 < n {
            let w = min(nr, n - j0)
            // Pack B columns j0 ..< j0+w: element (p, jj) at [p*nr + jj], zero padded.
            if bcs == 1 {
                for p in 0..<k {
                    let src = b + p * brs + j0
                    let dst = pb + p * nr
                    if w == nr {
                        store8(load8(src), dst)
                        store8(load8(src + 8), dst + 8)
                    } else {
                        for jj in 0..<nr { dst[jj] = jj < w ? src[jj] : 0 }
                    }
                }
            } else {
                for jj in 0..<nr {
                    if jj < w {
                        let src = b + (j0 + jj) * bcs
                        if brs == 1 {
                            for p in 0..<k { pb[p * nr + jj] = src[p] }
                        } else {
                            for p in 0..<k { pb[p * nr + jj] = src[p * brs] }
                        }
                    } else {
                        for p in 0..<k { pb[p * nr + jj] = 0 }
                    }
                }
            }
            #if arch(x86_64)
            if kernel == .avx2fma {
                precondition(kernel.isSupported, "gemm: the AVX2/FMA kernel was requested on a CPU without AVX2 and FMA")
                for q in 0..<panels {
                    let rows = min(mr, m - q * mr)
                    gossip_gemm_microkernel_6x16_avx2_fma(k, pa + q * mr * k, pb, c + q * mr * n + j0, n, rows, w)
                }
                j0 += nr
                continue
            }
            #endif
            for q in 0..<panels {
                let rows = min(mr, m - q * mr)
                microKernel(k: k, pa: pa + q * mr * k, pb: pb,
                            c: c + q * mr * n + j0, ldc: n, rows: rows, cols: w)
            }
            j0 += nr
        }
    }

    /// 6x16 block of C from packed panels; writes only `rows` x `cols`.
    @inline(__always)
    static func microKernel(
        k: Int, pa: UnsafePointer<Float>, pb: UnsafePointer<Float>,
        c: UnsafeMutablePointer<Float>, ldc: Int, rows: Int, cols: Int
    ) {
        var c00 = SIMD8<Float>(), c01 = SIMD8<Float>()
        var c10 = SIMD8<Float>(), c11 = SIMD8<Float>()
        var c20 = SIMD8<Float>(), c21 = SIMD8<Float>()
        var c30 = SIMD8<Float>(), c31 = SIMD8<Float>()
        var c40 = SIMD8<Float>(), c41 = SIMD8<Float>()
        var c50 = SIMD8<Float>(), c51 = SIMD8<Float>()
        var ap = pa
        var bp = pb
        for _ in 0..<k {
            let b0 = load8(bp), b1 = load8(bp + 8)
            var av = SIMD8<Float>(repeating: ap[0])
            madd(&c00, av, b0); madd(&c01, av, b1)
            av = SIMD8<Float>(repeating: ap[1])
            madd(&c10, av, b0); madd(&c11, av, b1)
            av = SIMD8<Float>(repeating: ap[2])
            madd(&c20, av, b0); madd(&c21, av, b1)
            av = SIMD8<Float>(repeating: ap[3])
            madd(&c30, av, b0); madd(&c31, av, b1)
            av = SIMD8<Float>(repeating: ap[4])
            madd(&c40, av, b0); madd(&c41, av, b1)
            av = SIMD8<Float>(repeating: ap[5])
            madd(&c50, av, b0); madd(&c51, av, b1)
            ap += 6
            bp += 16
        }
        if rows == 6 && cols == 16 {
            store8(c00, c); store8(c01, c + 8)
            store8(c10, c + ldc); store8(c11, c + ldc + 8)
            store8(c20, c + 2 * ldc); store8(c21, c + 2 * ldc + 8)
            store8(c30, c + 3 * ldc); store8(c31, c + 3 * ldc + 8)
            store8(c40, c + 4 * ldc); store8(c41, c + 4 * ldc + 8)
            store8(c50, c + 5 * ldc); store8(c51, c + 5 * ldc + 8)
            return
        }
        storeRow(c00, c01, c, cols)
        if rows > 1 { storeRow(c10, c11, c + ldc, cols) }
        if rows > 2 { storeRow(c20, c21, c + 2 * ldc, cols) }
        if rows > 3 { storeRow(c30, c31, c + 3 * ldc, cols) }
        if rows > 4 { storeRow(c40, c41, c + 4 * ldc, cols) }
        if rows > 5 { storeRow(c50, c51, c + 5 * ldc, cols) }
    }

    @inline(__always)
    static func storeRow(_ v0: SIMD8<Float>, _ v1: SIMD8<Float>, _ c: UnsafeMutablePointer<Float>, _ cols: Int) {
        if cols == 16 {
            store8(v0, c); store8(v1, c + 8)
            return
        }
        for j in 0..<cols { c[j] = j < 8 ? v0[j] : v1[j - 8] }
    }

    /// True when every element is finite.
    static func allFinite(_ x: UnsafeBufferPointer<Float>) -> Bool {
        guard let base = x.baseAddress else { return true }
        let n = x.count
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            acc += load8(base + i) * 0
            i += 8
        }
        var tail: Float = 0
        while i < n {
            tail += base[i] * 0
            i += 1
        }
        return acc == SIMD8<Float>() && tail == 0
    }
}
