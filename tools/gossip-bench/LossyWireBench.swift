// Lossy wire encodings in the `wire` suite (SPEC §6.5): MB/s of float32 weights converted to
// BF16, F16 and block-scaled I8 (`*_encode_mb_s`: input float32 bytes per second through
// `LossyCodec.encode`) and back (`*_decode_mb_s`: float32 bytes produced per second through
// `LossyCodec.decode`, which also checks every value is finite), best of `reps` runs on the
// suite's weights; plus the wire bytes relative to F32 (`*_bytes_vs_f32`) and the largest
// relative error of one round trip (`*_max_rel_err`, relative to the largest |x|).
import Foundation
import GossipWire

func runLossyConversionBench(source: [Float], reps: Int, out: (String) -> Void) throws {
    let table = TensorTable(tensors: [TensorInfo(name: "w", shape: [source.count])])
    let mb = Double(source.count * 4) / 1e6
    let maxabs = source.map(abs).max() ?? 1
    for dtype in [DType.bfloat16, .float16, .int8] {
        let wire = table.encoded(as: dtype)
        var bytes = [UInt8](repeating: 0, count: wire.dataByteCount)
        var back = [Float](repeating: 0, count: source.count)
        var tEnc = Double.infinity, tDec = Double.infinity
        for _ in 0..<reps {
            let s = now()
            let bad = source.withUnsafeBufferPointer { f in bytes.withUnsafeMutableBytes { LossyCodec.encode(f, table: wire, into: $0) } }
            tEnc = min(tEnc, now() - s)
            guard bad == 0 else { throw WireError(.malformed, "bench: \(bad) values not encodable as \(dtype.hashName)") }
        }
        for _ in 0..<reps {
            let s = now()
            let r: Result<Void, WireError> = bytes.withUnsafeBytes { b in
                back.withUnsafeMutableBufferPointer { o in Result { () throws(WireError) in try LossyCodec.decode(b, table: wire, into: o) } }
            }
            try r.get()
            tDec = min(tDec, now() - s)
        }
        var err: Float = 0
        for i in source.indices { err = max(err, abs(back[i] - source[i])) }
        let name = dtype.optionName
        out("\(name)_encode_mb_s: \(String(format: "%.1f", mb / tEnc))")
        out("\(name)_decode_mb_s: \(String(format: "%.1f", mb / tDec))")
        out("\(name)_bytes_vs_f32: \(String(format: "%.4f", Double(wire.dataByteCount) / Double(source.count * 4)))")
        out("\(name)_max_rel_err: \(String(format: "%.3g", Double(err / maxabs)))")
    }
}
