// The `wire` benchmark suite: encode and decode of a 10M-float32 (40 MB) GossipExchange
// request against memcpy of the same bytes (measured in the same run), with and without the
// CRC-32 checksum, and zlib level-1 ratio and speed on normally distributed weights without
// and with byte-shuffle.
// zlib_parallel_speedup: MB/s of zlib-1 + shuffle compression of the same 40 MB as the node
// sends it (4 MiB chunks, CRC on) with its chunks on all cores (`ParallelChunks.width` = the
// core count) over the same on one core; `zlib_ratio_shuffle_1core` and `_parallel` show the
// ratio is unchanged (the frames are byte-identical). `zlib_parallel_inflate_speedup`: the
// same for a receiver (`MessageDecoder` fed 256 KiB reads, chunks inflated on workers).
//
// What is timed, exactly (every figure is the best of `reps` runs; `_vs_memcpy` is
// memcpy time / codec time, so 1.0 means "as fast as one memcpy of the weights"):
//
// - encode: a sender in steady state. It encodes [Float] -> payload into its reusable
//   `PayloadBuffer` (the previous message has been sent and released, so the buffer is
//   reused: header fields, table, 64-byte padding, one memcpy of the data section) and
//   splits it into frames (headers only; frame payloads are views). Not timed: the socket
//   write. `encode_alloc` is the same through the allocating API (a fresh 40 MB buffer each
//   time, so it also pays the kernel's first-touch page faults).
// - decode: a receiver whose transport reads straight into the space `MessageDecoder` hands
//   out (`writableSpace`/`didWrite`, 256 KiB reads). The bytes getting from the kernel into
//   that space is the socket read, i.e. a kernel copy that every receiver pays whatever its
//   codec; it is simulated here with a memcpy per read and timed separately. `decode` is
//   everything else the receiver does, all of it timed: `writableSpace` and `didWrite` (header
//   parsing and validation, the copy of the few payload bytes that arrive in the staging
//   buffer with a header, reassembly, checksum when the frames carry one), `nextMessage`,
//   the body decode with the expected schema hash (table validation; the weights stay a
//   view), and the one copy of the weights into the preallocated destination [Float].
//   `receive_decode` adds the simulated socket reads (the whole loop's wall time).
//   One decoder is reused across runs, as a connection runs it; it recycles its 40 MB message
//   buffer once the previous message has been released, as a node does in steady state.
// - Not timed anywhere: finiteness checks of the weights (the node's job, not the codec's),
//   and allocating the destination (done once, outside the loop).
import Foundation
import GossipWire

/// Best wall time of `reps` runs of `body`.
private func best(_ reps: Int, _ body: () throws -> Void) rethrows -> Double {
    var t = Double.infinity
    for _ in 0..<reps {
        let s = now()
        try body()
        t = min(t, now() - s)
    }
    return t
}

private func fmt(_ x: Double) -> String { String(format: "%.3f", x) }

func runWireSuite(floats: Int) throws {
    let reps = 7
    let bytes = floats * 4
    let mb = Double(bytes) / 1e6

    // Seeded normal weights (Box-Muller), std 0.05.
    var state: UInt64 = 0x9e37_79b9_7f4a_7c15
    func uniform() -> Double {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return (Double(state >> 11) + 0.5) / Double(1 << 53)
    }
    var source = [Float](repeating: 0, count: floats)
    var i = 0
    while i < floats {
        let r = (-2 * log(uniform())).squareRoot(), th = 2 * Double.pi * uniform()
        source[i] = Float(0.05 * r * cos(th))
        if i + 1 < floats { source[i + 1] = Float(0.05 * r * sin(th)) }
        i += 2
    }
    // A few tensors totalling `floats` values (an MLP-like split).
    let first = floats / 2, second = floats / 4, third = floats - first - second
    let table = TensorTable(tensors: [TensorInfo(name: "layers.0.weight", shape: [first]),
                                      TensorInfo(name: "layers.1.weight", shape: [second]),
                                      TensorInfo(name: "layers.2.weight", shape: [third])])
    // Allocated and touched once, outside every timed loop.
    var destination = [Float](repeating: 1, count: floats)

    // Baseline: memcpy of the same bytes into a warm destination.
    let tMemcpy = best(reps) {
        source.withUnsafeBytes { s in destination.withUnsafeMutableBytes { d in _ = memcpy(d.baseAddress!, s.baseAddress!, bytes) } }
    }

    // Encode: [Float] -> one payload (one copy of the weights) -> frames (headers; payload views).
    func encode(checksum: Bool, into buffer: PayloadBuffer?) throws -> OutboundMessage {
        let payload = try source.withUnsafeBytes { d in
            try GossipExchangeRequest.encode(sender: "127.0.0.1:7001", weight: 600, architecture: "bench", round: 1,
                                             step: 1, samples: 1, table: table, data: d, into: buffer)
        }
        return try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 1, payload: payload, checksum: checksum)
    }
    let sendBuffer = PayloadBuffer()
    var message: OutboundMessage? = try encode(checksum: false, into: sendBuffer)   // first use allocates
    let tEncode = try best(reps) {
        message = nil   // the previous message was sent and released
        message = try encode(checksum: false, into: sendBuffer)
    }
    guard sendBuffer.allocationCount == 1 else { throw WireError(.malformed, "bench: the send buffer was not reused") }
    let tEncodeAlloc = try best(reps) {
        message = nil
        message = try encode(checksum: false, into: nil)
    }

    // The wire bytes as a socket would deliver them.
    func wire(_ m: OutboundMessage) -> ByteStorage {
        let w = ByteStorage(count: m.wireBytes)
        var o = 0
        for f in m.frames {
            f.header.write(to: w.mutableBytes.baseAddress! + o)
            o += FrameHeader.size
            f.payload.withUnsafeBytes { p in (w.mutableBytes.baseAddress! + o).copyMemory(from: p.baseAddress!, byteCount: p.count) }
            o += f.payload.count
        }
        return w
    }
    let plainWire = wire(message!)
    let crcWire = wire(try encode(checksum: true, into: nil))
    message = nil

    /// One message received and decoded; returns (decoder time, simulated socket-read time).
    func receive(_ w: ByteStorage, _ d: MessageDecoder) throws -> (decode: Double, read: Double) {
        var tDecoder = 0.0, tRead = 0.0
        var at = 0
        while at < w.count {
            var s = now()
            let space = d.writableSpace()
            tDecoder += now() - s
            let n = min(space.count, 256 << 10, w.count - at)
            s = now()
            space.baseAddress!.copyMemory(from: w.bytes.baseAddress! + at, byteCount: n)   // the kernel's copy in read(2)
            tRead += now() - s
            s = now()
            try d.didWrite(n)
            tDecoder += now() - s
            at += n
        }
        let s = now()
        guard let m = d.nextMessage() else { throw WireError(.truncated, "bench: no message decoded") }
        let req = try GossipExchangeRequest.decode(m.payload, expectedSchemaHash: table.schemaHash)
        try req.model.copyData(into: &destination)
        tDecoder += now() - s
        return (tDecoder, tRead)
    }
    /// Best decoder time and best whole-receive time over `reps` runs.
    func measure(_ w: ByteStorage, _ d: MessageDecoder) throws -> (decode: Double, receive: Double) {
        _ = try receive(w, d)   // warm-up: the decoder allocates its message buffer once
        var bestDecode = Double.infinity, bestReceive = Double.infinity
        for _ in 0..<reps {
            let t = try receive(w, d)
            bestDecode = min(bestDecode, t.decode)
            bestReceive = min(bestReceive, t.decode + t.read)
        }
        return (bestDecode, bestReceive)
    }
    let connection = MessageDecoder()
    let plain = try measure(plainWire, connection)
    let crc = try measure(crcWire, connection)
    guard destination == source else { throw WireError(.malformed, "bench: decoded weights differ from the source") }

    out("# \(floats) float32 weights = \(bytes) bytes; figures are the best of \(reps) runs; x_vs_memcpy = memcpy time / x time")
    out("# encode: steady-state sender, [Float] -> payload in a reused PayloadBuffer -> frames (no socket write)")
    out("# encode_alloc: the same with the allocating API (fresh buffer: page faults)")
    out("# decode: message already received into MessageDecoder's space: frame validation + reassembly + body decode + copy into [Float]")
    out("# receive_decode: decode plus the simulated socket read (a memcpy per 256 KiB read into the decoder's space)")
    out("# *_crc: the same with CHECKSUMMED frames (CRC-32 checked per frame)")
    out("floats: \(floats)")
    out("memcpy_mb_per_s: \(fmt(mb / tMemcpy))")
    out("encode_mb_per_s: \(fmt(mb / tEncode))")
    out("encode_alloc_mb_per_s: \(fmt(mb / tEncodeAlloc))")
    out("decode_mb_per_s: \(fmt(mb / plain.decode))")
    out("decode_crc_mb_per_s: \(fmt(mb / crc.decode))")
    out("receive_decode_mb_per_s: \(fmt(mb / plain.receive))")
    out("encode_vs_memcpy: \(fmt(tMemcpy / tEncode))")
    out("encode_alloc_vs_memcpy: \(fmt(tMemcpy / tEncodeAlloc))")
    out("decode_vs_memcpy: \(fmt(tMemcpy / plain.decode))")
    out("decode_crc_vs_memcpy: \(fmt(tMemcpy / crc.decode))")
    out("receive_decode_vs_memcpy: \(fmt(tMemcpy / plain.receive))")
    out("receive_decode_crc_vs_memcpy: \(fmt(tMemcpy / crc.receive))")

    // zlib level 1, per 4 MiB chunk as the node sends, without and with the byte-shuffle.
    let raw = source.withUnsafeBytes { ByteSlice(ByteStorage(copying: $0)) }
    for (name, shuffle) in [("plain", false), ("shuffle", true)] {
        var compressed = 0
        let t = try best(2) {
            let m = try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 1, payload: raw,
                                        compression: .zlib(level: 1, shuffle: shuffle), checksum: false)
            compressed = m.frames.reduce(0) { $0 + $1.payload.count }
        }
        out("zlib_ratio_\(name): \(fmt(Double(bytes) / Double(compressed)))")
        out("zlib_\(name)_mb_per_s: \(fmt(mb / t))")
    }
    // Lossy encodings (SPEC §6.5): conversion speed, size and error (LossyWireBench.swift).
    try runLossyConversionBench(source: source, reps: reps, out: out)

    try parallelZlib(raw: raw, mb: mb, bytes: bytes)
}

/// `zlib_parallel_speedup` and `zlib_parallel_inflate_speedup` (see the header).
private func parallelZlib(raw: ByteSlice, mb: Double, bytes: Int) throws {
    let saved = ParallelChunks.width
    defer { ParallelChunks.width = saved }
    let mode = CompressionMode.zlib(level: 1, shuffle: true)
    func compress() throws -> OutboundMessage {
        try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 1, payload: raw, compression: mode, checksum: true)
    }
    func serialized(_ m: OutboundMessage) -> [UInt8] { m.serialized() }
    func inflateAll(_ wire: [UInt8]) throws {
        let d = MessageDecoder(buffers: ReceiveBuffers(budget: 1 << 30))
        try wire.withUnsafeBytes { w in
            var at = 0
            while at < w.count {
                let n = min(256 << 10, w.count - at)
                try d.append(UnsafeRawBufferPointer(rebasing: w[at..<(at + n)]))
                at += n
            }
        }
        guard let m = d.nextMessage(), m.payload.count == bytes else { throw WireError(.truncated, "bench: no message inflated") }
    }
    var results: [(width: Int, deflate: Double, inflate: Double, ratio: Double, wire: [UInt8])] = []
    for width in [1, ParallelChunks.cores] {
        ParallelChunks.width = width
        var m: OutboundMessage? = nil
        let td = try best(3) { m = try compress() }
        let wire = serialized(m!)
        let compressed = m!.frames.reduce(0) { $0 + $1.payload.count }
        let ti = try best(3) { try inflateAll(wire) }
        results.append((width, td, ti, Double(bytes) / Double(compressed), wire))
    }
    let one = results[0], all = results[1]
    guard one.wire == all.wire else { throw WireError(.malformed, "bench: parallel frames differ from one core's") }
    out("# zlib_parallel: zlib-1 + shuffle, 4 MiB chunks, CRC on; 1 core vs \(all.width) cores (chunks in parallel)")
    out("cores: \(all.width)")
    out("zlib_shuffle_1core_mb_per_s: \(fmt(mb / one.deflate))")
    out("zlib_shuffle_parallel_mb_per_s: \(fmt(mb / all.deflate))")
    out("zlib_ratio_shuffle_1core: \(fmt(one.ratio))")
    out("zlib_ratio_shuffle_parallel: \(fmt(all.ratio))")
    out("zlib_parallel_speedup: \(fmt(one.deflate / all.deflate))")
    out("zlib_inflate_1core_mb_per_s: \(fmt(mb / one.inflate))")
    out("zlib_inflate_parallel_mb_per_s: \(fmt(mb / all.inflate))")
    out("zlib_parallel_inflate_speedup: \(fmt(one.inflate / all.inflate))")
}
