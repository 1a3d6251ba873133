// Lossy wire encodings of float32 weights (SPEC §6.1, §6.5): a model's float32 values
// written into a ModelState data section as F16, BF16 or block-scaled I8, and any data
// section read back into float32 ("dequantized") with the receiver's checks: an I8 scale
// that is negative, NaN or infinite is refused, and so is any value that is not finite after
// dequantization. The conversions are CGossipKernels' vectorised C loops (F16C for F16 where
// the CPU has it). An F32 tensor is copied as it is.
import CGossipKernels

public enum LossyCodec {
    /// Writes `src` (the table's element count of floats, table order) into `dst` (the
    /// table's `dataByteCount` bytes), each tensor in its dtype. Returns how many values are
    /// not finite in the encoding (inputs that are NaN or infinite, or F16/BF16 values that
    /// overflowed to infinity): a sender must not send such an encoding.
    ///
    /// Precondition: the sizes match the table.
    public static func encode(_ src: UnsafeBufferPointer<Float>, table: TensorTable,
                              into dst: UnsafeMutableRawBufferPointer) -> Int {
        precondition(src.count == table.elementCount && dst.count == table.dataByteCount, "LossyCodec.encode: sizes differ")
        var bad = 0
        forEachTensor(of: table) { t, n, floatAt, byteAt in
            let s = src.baseAddress! + floatAt
            let d = dst.baseAddress! + byteAt
            switch t.dtype {
            case .float32:
                d.copyMemory(from: s, byteCount: n * 4)
                for i in 0..<n where !s[i].isFinite { bad += 1 }
            case .bfloat16:
                bad += Int(gossip_f32_to_bf16(s, d.assumingMemoryBound(to: UInt16.self), n))
            case .float16:
                bad += Int(gossip_f32_to_f16(s, d.assumingMemoryBound(to: UInt16.self), n))
            case .int8:
                bad += Int(gossip_f32_to_i8(s, d.assumingMemoryBound(to: UInt8.self), n))
            }
        }
        return bad
    }

    /// Reads `data` (laid out as `table` says) into float32 `dst` (the table's element
    /// count). Throws `.malformed` (INVALID_ARGUMENT) for an I8 block scale that is negative
    /// (sign bit set), NaN or infinite, and for any value that is NaN or infinite after
    /// dequantization (nothing in `dst` may be used then).
    public static func decode(_ data: UnsafeRawBufferPointer, table: TensorTable,
                              into dst: UnsafeMutableBufferPointer<Float>) throws(WireError) {
        let bad = try decodeCountingNonFinite(data, table: table, into: dst)
        guard bad == 0 else { throw nonFinite(bad, table) }
    }

    /// `decode` without the finiteness check (for inspectors): returns how many values are
    /// NaN or infinite; still throws for a bad I8 scale.
    public static func decodeCountingNonFinite(_ data: UnsafeRawBufferPointer, table: TensorTable,
                                               into dst: UnsafeMutableBufferPointer<Float>) throws(WireError) -> Int {
        precondition(dst.count == table.elementCount && data.count == table.dataByteCount, "LossyCodec.decode: sizes differ")
        var bad = 0
        try forEachTensor(of: table) { (t, n, floatAt, byteAt) throws(WireError) in
            bad += try decodeRun(t, data.baseAddress! + byteAt, dst.baseAddress! + floatAt, n)
        }
        return bad
    }

    /// Dequantizes `n` values of tensor `t` (`n` ≤ its count; for I8 from the start of a block),
    /// the tensor's values from index `first` on, from `s` into `d`; returns how many are NaN or
    /// infinite, throws for a bad I8 scale (naming its block in the tensor).
    @inline(__always)
    private static func decodeRun(_ t: TensorInfo, _ s: UnsafeRawPointer, _ d: UnsafeMutablePointer<Float>,
                                  _ n: Int, from first: Int = 0) throws(WireError) -> Int {
        switch t.dtype {
        case .float32:
            UnsafeMutableRawPointer(d).copyMemory(from: s, byteCount: n * 4)
            var bad = 0
            for i in 0..<n where !d[i].isFinite { bad += 1 }
            return bad
        case .bfloat16:
            return gossip_bf16_to_f32(s.assumingMemoryBound(to: UInt16.self), d, n)
        case .float16:
            return gossip_f16_to_f32(s.assumingMemoryBound(to: UInt16.self), d, n)
        case .int8:
            let r = gossip_i8_to_f32(s.assumingMemoryBound(to: UInt8.self), d, n)
            if r < 0 { throw badScale(s, elements: n, firstBlock: first / DType.int8BlockSize, tensor: t.name) }   // (size_t)-1: a bad scale
            return r
        }
    }

    /// The error for `bad` values that are NaN or infinite after decoding `table`.
    private static func nonFinite(_ bad: Int, _ table: TensorTable) -> WireError {
        let kinds = Set(table.tensors.map(\.dtype.hashName)).sorted().joined(separator: "/")
        return WireError(.malformed, "\(bad) model weights are NaN or infinite after decoding \(kinds); refused")
    }

    /// The one walk over a tensor table that `encode` and `decode` share: calls `body` for
    /// each tensor that has elements, in table order, with its element count, the offset of
    /// its first value in the float32 array (`floatAt`) and of its first byte in the data
    /// section (`byteAt`). Empty tensors are passed over (their bytes, if any, still counted).
    @inline(__always)
    private static func forEachTensor<E: Error>(
        of table: TensorTable,
        _ body: (_ tensor: TensorInfo, _ elements: Int, _ floatAt: Int, _ byteAt: Int) throws(E) -> Void
    ) throws(E) {
        var floatAt = 0, byteAt = 0
        for t in table.tensors {
            let n = t.elementCount
            if n > 0 { try body(t, n, floatAt, byteAt) }
            floatAt += n
            byteAt += t.byteCount
        }
    }

    /// Checks `data` (laid out as `table` says) as `decode` would, without a destination:
    /// the same errors (a bad I8 scale, a value not finite after dequantization), run by run
    /// through a small stack buffer (`forEachRun`). A receiver runs it before it takes its
    /// exchange slot, so a bad lossy model is INVALID_ARGUMENT (SPEC §5.3 step 3) even when
    /// the receiver is busy.
    public static func validate(_ data: UnsafeRawBufferPointer, table: TensorTable) throws(WireError) {
        try forEachRun(data, table: table) { _, _ in }
    }

    /// Floats per run of `forEachRun`: 16 I8 blocks (16 KiB of stack).
    public static let runLength = 16 * DType.int8BlockSize

    /// Dequantizes `data` (laid out as `table` says) run by run, in table order, through a
    /// stack buffer of `runLength` floats, and calls `body` with each run's offset in the
    /// float32 array and its values (valid during the call only): a model read as float32
    /// without a model-sized buffer. Runs never cross a tensor (I8 blocks restart at each).
    /// Throws as `decode` does: for a bad I8 scale at the run that holds it, for values that
    /// are not finite after the last run; `body` may have seen earlier runs either way, so a
    /// caller that changes state in `body` must have validated `data` first (`validate`, the
    /// same walk with an empty body).
    public static func forEachRun(_ data: UnsafeRawBufferPointer, table: TensorTable,
                                  _ body: (_ floatAt: Int, _ values: UnsafeBufferPointer<Float>) -> Void) throws(WireError) {
        precondition(data.count == table.dataByteCount, "LossyCodec.forEachRun: sizes differ")
        let run = runLength
        let r: Result<Int, WireError> = withUnsafeTemporaryAllocation(of: Float.self, capacity: run) { tmp in
            Result { () throws(WireError) -> Int in
                var bad = 0
                try forEachTensor(of: table) { (t, n, floatAt, byteAt) throws(WireError) in
                    var done = 0, inAt = byteAt
                    while done < n {
                        let k = Swift.min(run, n - done)
                        bad += try decodeRun(t, data.baseAddress! + inAt, tmp.baseAddress!, k, from: done)
                        body(floatAt + done, UnsafeBufferPointer(start: tmp.baseAddress!, count: k))
                        inAt += t.dtype.byteCount(elements: k)!
                        done += k
                    }
                }
                return bad
            }
        }
        let bad = try r.get()
        guard bad == 0 else { throw nonFinite(bad, table) }
    }

    /// The error for the first bad scale of the `n` I8 values at `s`, whose first block is
    /// block `firstBlock` of its tensor.
    private static func badScale(_ s: UnsafeRawPointer, elements n: Int, firstBlock: Int, tensor: String) -> WireError {
        var at = 0, block = 0
        while at < n {
            let bits = s.loadUnaligned(fromByteOffset: at + block * 4, as: UInt32.self)
            if bits >= 0x7f80_0000 {
                let v = Float(bitPattern: bits)
                return WireError(.malformed, "tensor '\(tensor)' int8 block \(firstBlock + block) has scale \(v) (bits 0x\(String(bits, radix: 16))); a scale must be +0 or a positive finite float32 (SPEC §6.1); refused")
            }
            at += DType.int8BlockSize
            block += 1
        }
        return WireError(.malformed, "tensor '\(tensor)' has an invalid int8 scale; refused")
    }

    /// The error a sender raises when its encoding has `bad` non-finite values.
    static func notEncodable(_ bad: Int, _ dtype: DType) -> WireError {
        switch dtype {
        case .float16:
            WireError(.malformed, "\(bad) weights are NaN or beyond the F16 range (|x| >= 65520) and cannot be sent as F16; use --wire-dtype bf16 or f32")
        default:
            WireError(.malformed, "\(bad) weights are NaN or infinite and cannot be sent as \(dtype.hashName)")
        }
    }
}

extension ModelState {
    /// Dequantizes the weights into `destination` (float32, the table's element count): a
    /// copy for F32, a conversion for F16/BF16/I8 (SPEC §6.5).
    /// - Throws: `.lengthMismatch` for a wrong destination size; `.malformed` for an I8 scale
    ///   that is negative, NaN or infinite, or a value that is not finite after decoding.
    public func dequantize(into destination: inout [Float]) throws(WireError) {
        guard destination.count == table.elementCount else {
            throw WireError(.lengthMismatch, "destination holds \(destination.count) floats but the model carries \(table.elementCount)")
        }
        let r: Result<Void, WireError> = destination.withUnsafeMutableBufferPointer { d in
            data.withUnsafeBytes { src in
                Result { () throws(WireError) in try LossyCodec.decode(src, table: table, into: d) }
            }
        }
        try r.get()
    }

    /// Encodes a message payload whose model section carries `floats` encoded as the wire
    /// table `wire` says (each tensor in its dtype, e.g. `table.encoded(as: .bfloat16)`; F32
    /// is a plain copy).
    /// - Throws: the table's and the limits' errors, and `.malformed` when a value is not
    ///   finite in the encoding (F16 overflow, NaN input), before anything is sent.
    static func encodePayload(prefixSize: Int, writePrefix: (inout ByteWriter) -> Void,
                              architecture: String, round: UInt64, step: UInt64, samples: UInt64,
                              wire: TensorTable, floats: UnsafeBufferPointer<Float>,
                              limits: Limits, buffer: PayloadBuffer?) throws(WireError) -> ByteSlice {
        guard floats.count == wire.elementCount else {
            throw WireError(.lengthMismatch, "\(floats.count) weights but the table's tensors hold \(wire.elementCount)")
        }
        var bad = 0
        let out = try encodePayload(prefixSize: prefixSize, writePrefix: writePrefix, architecture: architecture,
                                    round: round, step: step, samples: samples, table: wire,
                                    dataCount: wire.dataByteCount, limits: limits, buffer: buffer) { dst in
            bad = LossyCodec.encode(floats, table: wire, into: dst)
        }
        guard bad == 0 else { throw LossyCodec.notEncodable(bad, wire.tensors.first(where: { $0.dtype.isLossy })?.dtype ?? .float32) }
        return out
    }
}

extension GossipExchangeRequest {
    /// Encodes the payload with the model's float32 weights encoded as `wire` says (SPEC §6.5).
    public static func encode(sender: String, weight: Double, architecture: String, round: UInt64, step: UInt64,
                              samples: UInt64, wire: TensorTable, floats: UnsafeBufferPointer<Float>,
                              limits: Limits = .default, into buffer: PayloadBuffer? = nil) throws(WireError) -> ByteSlice {
        try checkName(sender, "sender", limits: limits)
        try checkWeight(weight)
        return try ModelState.encodePayload(
            prefixSize: ByteWriter.size(ofString: sender) + 8,
            writePrefix: { w in w.writeString(sender); w.write(weight) },
            architecture: architecture, round: round, step: step, samples: samples, wire: wire,
            floats: floats, limits: limits, buffer: buffer)
    }
}

extension GossipExchangeReply {
    /// Encodes the payload with the model's float32 weights encoded as `wire` says (SPEC §6.5).
    public static func encode(weight: Double, peers: PeerList, architecture: String, round: UInt64, step: UInt64,
                              samples: UInt64, wire: TensorTable, floats: UnsafeBufferPointer<Float>,
                              limits: Limits = .default, into buffer: PayloadBuffer? = nil) throws(WireError) -> ByteSlice {
        try checkWeight(weight)
        try peers.validate(limits: limits)
        return try ModelState.encodePayload(
            prefixSize: 8 + peers.encodedSize,
            writePrefix: { w in w.write(weight); peers.write(&w) },
            architecture: architecture, round: round, step: step, samples: samples, wire: wire,
            floats: floats, limits: limits, buffer: buffer)
    }
}
