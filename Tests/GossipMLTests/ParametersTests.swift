// Tests of ParameterSet, schema hash, deterministic init, GEMM, and the MLP gradient.

import Foundation
import Testing
@testable import GossipML

@Suite struct ParametersTests {
    @Test func schemaHashPinned() {
        let p = ParameterSet(specs: [("layers.0.weight", [2, 3]), ("layers.0.bias", [2])])
        #expect(p.schemaString == "layers.0.weight:F32:2,3\nlayers.0.bias:F32:2\n")
        // Computed independently with Python FNV-1a 64 over the string above.
        #expect(p.schemaHash == 0x2595_8d0c_ab31_add1)
    }

    @Test func layoutIsPackedInOrder() throws {
        let arch = try MLPArchitecture(parsing: "4,3,2")
        let p = ParameterSet(specs: arch.parameterSpecs)
        #expect(p.specs.map(\.name) == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"])
        #expect(p.specs.map(\.offset) == [0, 12, 15, 21])
        #expect(p.parameterCount == 23)
        #expect(p.tensor(named: "layers.1.weight")?.count == 6)
        #expect(p.tensor(named: "nope") == nil)
    }

    @Test func allFiniteDetectsNaNAndInf() {
        var p = ParameterSet(specs: [("a", [37])])
        #expect(p.allFinite)
        p.storage[36] = .nan
        #expect(!p.allFinite)
        p.storage[36] = 0
        p.storage[3] = -.infinity
        #expect(!p.allFinite)
    }

    @Test func architectureErrors() {
        #expect(throws: MLError.self) { try MLPArchitecture(parsing: "784") }
        #expect(throws: MLError.self) { try MLPArchitecture(parsing: "784,0,10") }
        #expect(throws: MLError.self) { try MLPArchitecture(parsing: "784,x,10") }
        #expect((try? MLPArchitecture(parsing: "784,256,128,10"))?.description == "784,256,128,10")
    }

    @Test func prngPinned() {
        var g = SeededGenerator(seed: 0)
        // Reference values from a Python transcription of SplitMix64 + xoshiro256**.
        #expect(g.next() == 0x99ec_5f36_cb75_f2b4)
        #expect(g.next() == 0xbf6e_1f78_4956_452a)
    }

    @Test func initIsDeterministicAndPinned() throws {
        let arch = try MLPArchitecture(parsing: "4,3,2")
        let a = arch.makeParameters(seed: 42), b = arch.makeParameters(seed: 42)
        #expect(a.storage.map(\.bitPattern) == b.storage.map(\.bitPattern))
        #expect(arch.makeParameters(seed: 43) != a)
        // Pinned: Python transcription of the init, FNV-1a 64 of the little-endian bytes.
        #expect(a.storageChecksum == 0x976f_70e6_84c3_7f6b)
        #expect(a.storage[0] == -1.019323468208313)
        let bound = Float((6.0 / 4.0).squareRoot())
        #expect(a.storage[0..<12].allSatisfy { abs($0) <= bound })
    }

    /// Double-precision reference loss of the MLP on `x` (rows) and labels.
    static func referenceLoss(_ arch: MLPArchitecture, _ w: [Double], _ x: [[Double]], _ y: [Int]) -> Double {
        var total = 0.0
        for (row, label) in zip(x, y) {
            var h = row
            var off = 0
            for l in 0..<arch.layerCount {
                let i = arch.layerSizes[l], o = arch.layerSizes[l + 1]
                var z = [Double](repeating: 0, count: o)
                for r in 0..<o {
                    var s = w[off + i * o + r]
                    for c in 0..<i { s += w[off + r * i + c] * h[c] }
                    z[r] = l < arch.layerCount - 1 ? max(s, 0) : s
                }
                off += i * o + o
                h = z
            }
            let m = h.max()!
            let lse = m + log(h.map { exp($0 - m) }.reduce(0, +))
            total += lse - h[label]
        }
        return total / Double(x.count)
    }

    @Test func gradientMatchesFiniteDifferences() throws {
        let arch = try MLPArchitecture(parsing: "5,7,4,3")
        let p = arch.makeParameters(seed: 9)
        var rng = SeededGenerator(seed: 5)
        let rows = 6
        let feats = (0..<(rows * 5)).map { _ in rng.nextFloat() * 2 - 1 }
        let labels: [UInt8] = [0, 1, 2, 1, 0, 2]
        let data = try Dataset(name: "t", features: feats, labels: labels, featureCount: 5, classCount: 3)
        let (loss, grad) = try lossAndGradient(architecture: arch, parameters: p, data: data)
        let w = p.storage.map(Double.init)
        let x = (0..<rows).map { r in (0..<5).map { Double(feats[r * 5 + $0]) } }
        let y = labels.map(Int.init)
        let ref = Self.referenceLoss(arch, w, x, y)
        #expect(abs(Double(loss) - ref) < 1e-5)
        let eps = 1e-6
        var maxErr = 0.0
        for i in 0..<w.count {
            var wp = w, wm = w
            wp[i] += eps; wm[i] -= eps
            let fd = (Self.referenceLoss(arch, wp, x, y) - Self.referenceLoss(arch, wm, x, y)) / (2 * eps)
            let err = abs(fd - Double(grad.storage[i])) / max(1e-3, abs(fd) + abs(Double(grad.storage[i])))
            maxErr = max(maxErr, err)
        }
        #expect(maxErr < 1e-3, "max relative gradient error \(maxErr)")
    }

    @Test func gemmMatchesNaiveOnOddSizes() {
        let scratch = GemmScratch()
        var rng = SeededGenerator(seed: 1)
        for (m, n, k) in [(1, 1, 1), (7, 17, 5), (13, 33, 9), (6, 16, 0), (2, 40, 31)] {
            let a = (0..<(m * k)).map { _ in rng.nextFloat() - 0.5 }
            let bt = (0..<(n * k)).map { _ in rng.nextFloat() - 0.5 }  // stored [n, k], read as B = btᵀ
            var c = [Float](repeating: .nan, count: m * n)
            a.withUnsafeBufferPointer { ap in bt.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                Kernels.gemm(m: m, n: n, k: k, a: ap.baseAddress ?? UnsafePointer(bitPattern: 8)!, ars: k, acs: 1,
                             b: bp.baseAddress ?? UnsafePointer(bitPattern: 8)!, brs: 1, bcs: k,
                             c: cp.baseAddress!, scratch: scratch)
            } } }
            for i in 0..<m { for j in 0..<n {
                var s: Float = 0
                for p in 0..<k { s += a[i * k + p] * bt[j * k + p] }
                #expect(abs(c[i * n + j] - s) < 1e-5)
            } }
        }
    }
}
