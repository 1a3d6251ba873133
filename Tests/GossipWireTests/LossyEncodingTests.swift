// The lossy wire encodings (SPEC §6.1, §6.5): conversions with their error bounds and edge
// cases (ties, subnormals, infinities, NaN, the largest values), the I8 block layout, hostile
// I8 scales, the schema hash, and which messages accept which dtypes.
import Foundation
import Testing
@testable import GossipWire

private func roundTrip(_ values: [Float], _ dtype: DType) throws -> [Float] {
    let t = TensorTable(tensors: [TensorInfo(name: "w", shape: [values.count])]).encoded(as: dtype)
    var bytes = [UInt8](repeating: 0, count: t.dataByteCount)
    let bad = values.withUnsafeBufferPointer { f in bytes.withUnsafeMutableBytes { LossyCodec.encode(f, table: t, into: $0) } }
    #expect(bad == 0)
    var out = [Float](repeating: 0, count: values.count)
    let r: Result<Void, WireError> = bytes.withUnsafeBytes { b in
        out.withUnsafeMutableBufferPointer { o in Result { () throws(WireError) in try LossyCodec.decode(b, table: t, into: o) } }
    }
    try r.get()
    return out
}

private func encoded(_ values: [Float], _ dtype: DType) -> (bytes: [UInt8], bad: Int) {
    let t = TensorTable(tensors: [TensorInfo(name: "w", shape: [values.count])]).encoded(as: dtype)
    var bytes = [UInt8](repeating: 0, count: t.dataByteCount)
    let bad = values.withUnsafeBufferPointer { f in bytes.withUnsafeMutableBytes { LossyCodec.encode(f, table: t, into: $0) } }
    return (bytes, bad)
}

private func halves(_ bytes: [UInt8]) -> [UInt16] {
    stride(from: 0, to: bytes.count, by: 2).map { UInt16(bytes[$0]) | UInt16(bytes[$0 + 1]) << 8 }
}

private func randomValues(_ n: Int, seed: UInt64) -> [Float] {
    var s = seed
    return (0..<n).map { _ in
        s = s &* 6364136223846793005 &+ 1442695040888963407
        let u = Float(s >> 40) / Float(1 << 24)          // [0, 1)
        let e = Float(Int((s >> 20) % 12)) - 8            // magnitudes 2^-8 ... 2^3
        return (u * 2 - 1) * Float(pow(2.0, Double(e)))
    }
}

@Suite struct LossyEncodingTests {
    @Test func byteCountsFollowFromTheShape() {
        #expect(DType.bfloat16.byteCount(elements: 10) == 20)
        #expect(DType.float16.byteCount(elements: 10) == 20)
        #expect(DType.int8.byteCount(elements: 0) == 0)
        #expect(DType.int8.byteCount(elements: 1) == 5)
        #expect(DType.int8.byteCount(elements: 256) == 260)
        #expect(DType.int8.byteCount(elements: 257) == 265)
        #expect(DType.int8.byteCount(elements: Int.max) == nil)
        #expect(TensorInfo.checkedByteCount(shape: [300], dtype: .int8) == 308)
        #expect(TensorInfo.checkedByteCount(shape: [1 << 62, 4], dtype: .bfloat16) == nil)
    }

    @Test func schemaHashNamesTheModelDtype() {
        // SPEC §6.3: the encoding does not change the hash.
        #expect(Fixtures.table.encoded(as: .int8).schemaHash == Fixtures.table.schemaHash)
        #expect(TensorTable(tensors: Fixtures.table.encoded(as: .bfloat16).tensors).schemaHash == 0x2595_8d0c_ab31_add1)
    }

    @Test(arguments: [DType.bfloat16, .float16, .int8])
    func roundTripErrorIsWithinHalfAStep(_ dtype: DType) throws {
        let x = randomValues(1000, seed: 7)
        let y = try roundTrip(x, dtype)
        for b in stride(from: 0, to: x.count, by: DType.int8BlockSize) {
            let block = x[b..<min(x.count, b + DType.int8BlockSize)]
            let maxabs = block.map(abs).max()!
            for i in block.indices {
                let err = abs(Double(y[i]) - Double(x[i]))
                switch dtype {
                case .bfloat16: #expect(err <= Double(abs(x[i])) * 0x1p-8)
                case .float16: #expect(err <= max(Double(abs(x[i])) * 0x1p-11, 0x1p-25))
                default: #expect(err <= Double(maxabs / 127) * 0.5 * (1 + 1e-6))
                }
            }
        }
    }

    @Test func bf16RoundsToNearestEvenAndKeepsSpecials() throws {
        let cases: [(UInt32, UInt16)] = [
            (0x3f80_8000, 0x3f80),          // tie, even below
            (0x3f81_8000, 0x3f82),          // tie, even above
            (0x3f80_8001, 0x3f81),          // just above the tie
            (0x0000_0001, 0x0000),          // the smallest subnormal rounds to 0
            (0x0001_8000, 0x0002),          // a subnormal tie to even
            (0x7f80_0000, 0x7f80),          // +inf
            (0xff80_0000, 0xff80),          // -inf
            (0x7f7f_ffff, 0x7f80),          // FLT_MAX rounds up to +inf (IEEE)
            (0x7f7f_0000, 0x7f7f),          // the largest bf16
            (0x7fc0_0001, 0x7fc0),          // quiet NaN stays NaN
            (0x7f80_0001, 0x7fc0),          // signalling NaN with a low payload: quieted
            (0x8000_0000, 0x8000),          // -0
        ]
        let x = cases.map { Float(bitPattern: $0.0) }
        let (bytes, bad) = encoded(x, .bfloat16)
        #expect(halves(bytes) == cases.map(\.1))
        #expect(bad == 5)   // inf, -inf, FLT_MAX -> inf, two NaNs (the largest bf16 is finite)
    }

    @Test func f16RoundsToNearestEvenWithSubnormalsAndOverflow() throws {
        let cases: [(Float, UInt16)] = [
            (1, 0x3c00), (-2, 0xc000), (65504, 0x7bff), (65519.99, 0x7bff), (65520, 0x7c00), (1e9, 0x7c00),
            (1 + 0x1p-11, 0x3c00), (1 + 3 * 0x1p-11, 0x3c02),   // ties to even
            (0x1p-14, 0x0400), (0x1p-24, 0x0001), (0x1p-25, 0x0000), (3 * 0x1p-26, 0x0001), (0x1p-26, 0x0000),
            (0x1.8p-24, 0x0002),            // 1.5 subnormal steps: tie to even = 2
            (-0.0, 0x8000), (.infinity, 0x7c00), (-.infinity, 0xfc00),
        ]
        let (bytes, bad) = encoded(cases.map(\.0), .float16)
        #expect(halves(bytes) == cases.map(\.1))
        #expect(bad == 4)
        let nan = encoded([.nan], .float16)
        #expect(nan.bytes[1] & 0x7c == 0x7c && (nan.bytes[0] != 0 || nan.bytes[1] & 0x03 != 0))
        // Every binary16 value decodes exactly and re-encodes to itself.
        let all = (0...0xffff).map { UInt16($0) }.filter { $0 & 0x7c00 != 0x7c00 }
        var raw = [UInt8]()
        for h in all { raw.append(UInt8(h & 0xff)); raw.append(UInt8(h >> 8)) }
        let t = TensorTable(tensors: [TensorInfo(name: "w", shape: [all.count])]).encoded(as: .float16)
        var f = [Float](repeating: 0, count: all.count)
        let r: Result<Void, WireError> = raw.withUnsafeBytes { b in f.withUnsafeMutableBufferPointer { o in Result { () throws(WireError) in try LossyCodec.decode(b, table: t, into: o) } } }
        try r.get()
        #expect(halves(encoded(f, .float16).bytes) == all)
        #expect(f[1] == 0x1p-24 && f[0x3c00] == 1)
    }

    @Test func int8BlocksHoldAScaleThenTheValues() throws {
        var x = [Float](repeating: 0, count: 300)
        for i in 0..<256 { x[i] = Float(i - 128) / 64 }     // block 0: maxabs 2
        x[256] = -0.5; x[257] = 0.25                        // block 1: maxabs 0.5, rest 0
        let (bytes, bad) = encoded(x, .int8)
        #expect(bad == 0 && bytes.count == 308)
        let s0 = Float(bitPattern: UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24)
        #expect(s0 == Float(2) / 127)
        #expect(Int8(bitPattern: bytes[4]) == -127)          // -2 -> -127
        #expect(Int8(bitPattern: bytes[4 + 128]) == 0)
        let s1at = 4 + 256
        let s1 = Float(bitPattern: UInt32(bytes[s1at]) | UInt32(bytes[s1at + 1]) << 8 | UInt32(bytes[s1at + 2]) << 16 | UInt32(bytes[s1at + 3]) << 24)
        #expect(s1 == 0.5 / 127)
        #expect(Int8(bitPattern: bytes[s1at + 4]) == -127)
        #expect(Int8(bitPattern: bytes[s1at + 5]) == Int8((Float(0.25) / s1).rounded(.toNearestOrEven)))
        // An all-zero block has scale 0 and decodes to zeros.
        let z = try roundTrip([0, 0, 0], .int8)
        #expect(z == [0, 0, 0])
        #expect(encoded([0, 0, 0], .int8).bytes == [0, 0, 0, 0, 0, 0, 0])
        // Non-finite inputs make the encoding unsendable.
        #expect(encoded([1, .nan], .int8).bad == 1 && encoded([.infinity], .int8).bad == 1)
    }

    @Test(arguments: [Float.nan, .infinity, -.infinity, -1, -0.0, -Float.leastNonzeroMagnitude])
    func hostileInt8ScalesAreRefused(_ scale: Float) throws {
        var bytes = [UInt8](repeating: 1, count: 4 + 3)
        withUnsafeBytes(of: scale.bitPattern.littleEndian) { for i in 0..<4 { bytes[i] = $0[i] } }
        let t = TensorTable(tensors: [TensorInfo(name: "w", shape: [3])]).encoded(as: .int8)
        var out = [Float](repeating: 0, count: 3)
        let r: Result<Void, WireError> = bytes.withUnsafeBytes { b in out.withUnsafeMutableBufferPointer { o in Result { () throws(WireError) in try LossyCodec.decode(b, table: t, into: o) } } }
        let e = #expect(throws: WireError.self) { try r.get() }
        #expect(e?.kind == .malformed && e?.statusCode == .invalidArgument)
        #expect(e?.description.contains("scale") == true)
        // The receiver's check before its exchange slot (no destination) refuses it too.
        let v: Result<Void, WireError> = bytes.withUnsafeBytes { b in Result { () throws(WireError) in try LossyCodec.validate(b, table: t) } }
        #expect(throws: WireError.self) { try v.get() }
    }

    /// `forEachRun` (a model read without a model-sized buffer: push-sum's distance and merge)
    /// gives exactly `decode`'s floats, in order, in runs of at most `runLength` that never
    /// cross a tensor; over a mixed table with sizes around the I8 block and run lengths.
    @Test(arguments: [DType.bfloat16, .float16, .int8, .float32])
    func runsAreTheDecodedModel(_ dtype: DType) throws {
        let sizes = [1, 255, 256, 257, LossyCodec.runLength, LossyCodec.runLength + 1, 3 * LossyCodec.runLength + 300, 0, 7]
        let plain = TensorTable(tensors: sizes.enumerated().map { TensorInfo(name: "t\($0.offset)", shape: [$0.element]) })
        let t = plain.encoded(as: dtype)
        let values = randomValues(plain.elementCount, seed: 7)
        var bytes = [UInt8](repeating: 0, count: t.dataByteCount)
        #expect(values.withUnsafeBufferPointer { f in bytes.withUnsafeMutableBytes { LossyCodec.encode(f, table: t, into: $0) } } == 0)
        var whole = [Float](repeating: 0, count: values.count)
        var r: Result<Void, WireError> = bytes.withUnsafeBytes { b in
            whole.withUnsafeMutableBufferPointer { o in Result { () throws(WireError) in try LossyCodec.decode(b, table: t, into: o) } }
        }
        try r.get()
        var runs = [Float](), starts = [Int](), longest = 0
        r = bytes.withUnsafeBytes { b in
            Result { () throws(WireError) in
                try LossyCodec.forEachRun(b, table: t) { at, run in
                    starts.append(at)
                    #expect(at == runs.count, "runs are in order without gaps")
                    runs.append(contentsOf: run)
                    longest = max(longest, run.count)
                }
            }
        }
        try r.get()
        #expect(runs.map(\.bitPattern) == whole.map(\.bitPattern))
        #expect(longest == LossyCodec.runLength)
        var tensorStarts = Set<Int>(), at = 0
        for n in sizes { tensorStarts.insert(at); at += n }
        for (i, s) in starts.enumerated() {
            let end = i + 1 < starts.count ? starts[i + 1] : runs.count
            #expect(!tensorStarts.contains(where: { $0 > s && $0 < end }), "a run crosses a tensor at \(s)..<\(end)")
        }
        // A bad I8 scale in block 20 of tensor t6 (in its second run): the walk throws, as
        // decode does, naming the block in the tensor.
        if dtype == .int8 {
            var bad = bytes
            let at = t.tensors.prefix(6).reduce(0) { $0 + $1.byteCount } + 20 * (DType.int8BlockSize + 4)
            withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { for i in 0..<4 { bad[at + i] = $0[i] } }
            r = bad.withUnsafeBytes { b in Result { () throws(WireError) in try LossyCodec.forEachRun(b, table: t) { _, _ in } } }
            let e = #expect(throws: WireError.self) { try r.get() }
            #expect(e?.description.contains("tensor 't6' int8 block 20 ") == true, "\(String(describing: e))")
        }
    }

    @Test func valuesThatOverflowAfterDequantizationAreRefused() throws {
        // I8: 127 × 3e38 overflows float32.
        var bytes = [UInt8](repeating: 0x7f, count: 4 + 2)
        withUnsafeBytes(of: Float(3e38).bitPattern.littleEndian) { for i in 0..<4 { bytes[i] = $0[i] } }
        let t = TensorTable(tensors: [TensorInfo(name: "w", shape: [2])]).encoded(as: .int8)
        var out = [Float](repeating: 0, count: 2)
        var r: Result<Void, WireError> = bytes.withUnsafeBytes { b in out.withUnsafeMutableBufferPointer { o in Result { () throws(WireError) in try LossyCodec.decode(b, table: t, into: o) } } }
        #expect(throws: WireError.self) { try r.get() }
        r = bytes.withUnsafeBytes { b in Result { () throws(WireError) in try LossyCodec.validate(b, table: t) } }
        #expect(throws: WireError.self) { try r.get() }
        // A valid 300-value I8 tensor (two blocks) passes the check.
        let ok = encoded((0..<300).map { Float($0) / 300 }, .int8).bytes
        let t300 = TensorTable(tensors: [TensorInfo(name: "w", shape: [300])]).encoded(as: .int8)
        r = ok.withUnsafeBytes { b in Result { () throws(WireError) in try LossyCodec.validate(b, table: t300) } }
        #expect(throws: Never.self) { try r.get() }
        // BF16 / F16 infinity and NaN bit patterns.
        for (dtype, h) in [(DType.bfloat16, UInt16(0x7f80)), (.bfloat16, 0xffc1), (.float16, 0x7c00), (.float16, 0xfe00)] {
            let tt = TensorTable(tensors: [TensorInfo(name: "w", shape: [1])]).encoded(as: dtype)
            let raw: [UInt8] = [UInt8(h & 0xff), UInt8(h >> 8)]
            var one: [Float] = [0]
            r = raw.withUnsafeBytes { b in one.withUnsafeMutableBufferPointer { o in Result { () throws(WireError) in try LossyCodec.decode(b, table: tt, into: o) } } }
            #expect(throws: WireError.self) { try r.get() }
        }
    }

    @Test func exchangeMessagesCarryLossyModelsAndGetModelRefusesThem() throws {
        for dtype in [DType.bfloat16, .float16, .int8] {
            let m = Fixtures.lossyModel(dtype)
            #expect(m.table.schemaHash == Fixtures.hash && m.table.tensors.allSatisfy { $0.dtype == dtype })
            var f = [Float](repeating: 0, count: 8)
            try m.dequantize(into: &f)
            for i in 0..<8 { #expect(abs(f[i] - Fixtures.weights[i]) <= abs(Fixtures.weights[i]) * 0.01 + 0.02) }
            // A push carries it too; a GetModel reply (SPEC §6.5: always F32) does not.
            let push = try PushSumRequest(sender: "a:1", mass: 1, model: m).encode()
            #expect(try PushSumRequest.decode(push, expectedSchemaHash: Fixtures.hash).model == m)
            let asGetModel = try m.encode()
            let e = #expect(throws: WireError.self) { try ModelState.decode(asGetModel) }
            #expect(e?.kind == .unsupported && e?.statusCode == .unimplemented)
            #expect(e?.description.contains("--wire-dtype") == true && e?.description.contains(dtype.hashName) == true)
            // A receiver that accepts only F32 answers UNIMPLEMENTED naming the dtype.
            let req = try GossipExchangeRequest(sender: "a:1", weight: 1, model: m).encode()
            let e2 = #expect(throws: WireError.self) { try GossipExchangeRequest.decode(req, dtypes: [.float32]) }
            #expect(e2?.statusCode == .unimplemented && e2?.description.contains(dtype.hashName) == true)
        }
    }

    @Test func f16OverflowIsRefusedBeforeSending() throws {
        let big: [Float] = [1, 70000, 2, 3, 4, 5, 6, 7]
        let e = #expect(throws: WireError.self) {
            try big.withUnsafeBufferPointer { f in
                try GossipExchangeRequest.encode(sender: "a:1", weight: 1, architecture: "3,2", round: 0, step: 0, samples: 0,
                                                 wire: Fixtures.table.encoded(as: .float16), floats: f)
            }
        }
        #expect(e?.description.contains("F16") == true)
    }
}
