// The exact averaging rule of SPEC §5.3: the worked example in the spec, checked bit for bit
// against the kernel (SIMD blocks and scalar tail), and a float64 reference of the rule.

import Foundation
import Testing
@testable import GossipML

@Suite struct AveragingRuleTests {
    /// (own, req, result) bit patterns and the weights of the `averaging_example` block of SPEC.md.
    static func specExample() throws -> (a: Double, b: Double, rows: [(UInt32, UInt32, UInt32)]) {
        let spec = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Protocol/SPEC.md")
        let text = try String(contentsOf: spec, encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let start = lines.firstIndex(where: { $0.hasPrefix("averaging_example ") }) else {
            throw MLError(.invalidArgument, "SPEC.md has no 'averaging_example' block in §5.3")
        }
        var a = 0.0, b = 0.0
        for field in lines[start].split(separator: " ").dropFirst() {
            let kv = field.split(separator: "=")
            if kv.count == 2, kv[0] == "a" { a = Double(kv[1]) ?? 0 }
            if kv.count == 2, kv[0] == "b" { b = Double(kv[1]) ?? 0 }
        }
        var rows: [(UInt32, UInt32, UInt32)] = []
        for line in lines[(start + 2)...] {
            let f = line.split(separator: " ").compactMap { UInt32($0, radix: 16) }
            guard f.count == 3 else { break }
            rows.append((f[0], f[1], f[2]))
        }
        return (a, b, rows)
    }

    /// The rule computed in float64: products and the sum of two float32 values are exact or
    /// correctly rounded in float64 (53 >= 2*24 + 2 bits), so rounding once to float32 gives
    /// the float32 result of each operation.
    static func reference(_ own: Float, _ req: Float, _ ca: Float, _ cb: Float) -> Float {
        let px = Float(Double(own) * Double(ca)), py = Float(Double(req) * Double(cb))
        return Float(Double(px) + Double(py))
    }

    @Test func specWorkedExampleIsReproducedBitForBit() throws {
        let ex = try Self.specExample()
        #expect(ex.a == 600 && ex.b == 1400)
        #expect(ex.rows.count == 8)
        let (ca, cb) = Averaging.coefficients(weight: ex.a, other: ex.b)
        #expect(ca.bitPattern == 0x3e99_999a && cb.bitPattern == 0x3f33_3333)
        // 5 copies = 40 floats: two 16-wide SIMD blocks and an 8-float scalar tail.
        let rows = Array(repeating: ex.rows, count: 5).flatMap { $0 }
        var own = rows.map { Float(bitPattern: $0.0) }
        let req = rows.map { Float(bitPattern: $0.1) }
        own.withUnsafeMutableBufferPointer { o in
            req.withUnsafeBufferPointer { r in Averaging.weightedAverage(into: o, weight: ex.a, other: r, weight: ex.b) }
        }
        for (i, row) in rows.enumerated() {
            #expect(own[i].bitPattern == row.2, "element \(i): got \(String(own[i].bitPattern, radix: 16)), SPEC says \(String(row.2, radix: 16))")
            #expect(Self.reference(Float(bitPattern: row.0), Float(bitPattern: row.1), ca, cb).bitPattern == row.2)
        }
    }

    @Test func weightsAreNotRoundedToFloat32First() {
        let (_, cb) = Averaging.coefficients(weight: 16_777_217, other: 3)
        #expect(cb.bitPattern == 0x343f_fffd)
        let (ca2, cb2) = Averaging.coefficients(weight: 1, other: 3)
        #expect(ca2 == 0.25 && cb2 == 0.75)
    }

    @Test func kernelEqualsTheRuleExactlyOnRandomData() {
        var rng = SeededGenerator(seed: 77)
        for (n, wa, wb) in [(0, 1.0, 1.0), (1, 3.0, 1.0), (17, 600.0, 1400.0), (1003, 12_345.0, 7.0), (64, 16_777_217.0, 3.0)] {
            var own = (0..<n).map { _ in (rng.nextFloat() * 8 - 4) * Float(1 + rng.nextInt(below: 1000)) }
            let req = (0..<n).map { _ in (rng.nextFloat() * 8 - 4) * Float(1 + rng.nextInt(below: 1000)) }
            let before = own
            let (ca, cb) = Averaging.coefficients(weight: wa, other: wb)
            var p = ParameterSet(specs: [("x", [n])]), q = p
            p.storage = own
            q.storage = req
            Averaging.weightedAverage(&p, weight: wa, with: q, weight: wb)
            own.withUnsafeMutableBufferPointer { o in
                req.withUnsafeBufferPointer { r in Averaging.weightedAverage(into: o, weight: wa, other: r, weight: wb) }
            }
            for i in 0..<n {
                let want = Self.reference(before[i], req[i], ca, cb)
                #expect(own[i].bitPattern == want.bitPattern, "n \(n) element \(i)")
                #expect(p.storage[i].bitPattern == want.bitPattern, "n \(n) element \(i) (ParameterSet)")
            }
        }
    }
}
