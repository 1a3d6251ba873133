// The `wire` benchmark suite: encode and decode of a 10M-float32 model message against memcpy
// of the same bytes (measured in the same run), with and without the CRC-32 checksum, and
// zlib level-1 ratio and speed on normally distributed weights without and with byte-shuffle.
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

func runWireSuite(_ args: [String]) throws {
    let floats = args.first.flatMap(Int.init) ?? 10_000_000
    let reps = 5
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
    var destination = [Float](repeating: 1, count: floats)

    // Baseline: memcpy of the same bytes into a warm destination.
    let tMemcpy = best(reps) {
        source.withUnsafeBytes { s in destination.withUnsafeMutableBytes { d in _ = memcpy(d.baseAddress!, s.baseAddress!, bytes) } }
    }

    // Encode: [Float] -> one payload buffer (one copy) -> frames (headers; payload views).
    var message: OutboundMessage?
    func encode(checksum: Bool) throws -> OutboundMessage {
        let payload = try source.withUnsafeBytes { d in
            try GossipExchangeRequest.encode(sender: "127.0.0.1:7001", weight: 600, architecture: "bench", round: 1,
                                             step: 1, samples: 1, table: table, data: d)
        }
        return try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 1, payload: payload, checksum: checksum)
    }
    let tEncode = try best(reps) { message = try encode(checksum: false) }

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
    let crcWire = wire(try encode(checksum: true))

    // Decode: MessageDecoder fed 256 KiB socket-sized reads into the space it hands out,
    // body decode with the expected schema, one copy into the preallocated destination.
    // One decoder per connection, as a node runs it (it recycles the message buffer).
    func decode(_ w: ByteStorage, _ d: MessageDecoder) throws {
        var at = 0
        while at < w.count {
            let space = d.writableSpace()
            let n = min(space.count, 256 << 10, w.count - at)
            space.baseAddress!.copyMemory(from: w.bytes.baseAddress! + at, byteCount: n)
            try d.didWrite(n)
            at += n
        }
        guard let m = d.nextMessage() else { throw WireError(.truncated, "bench: no message decoded") }
        let req = try GossipExchangeRequest.decode(m.payload, expectedSchemaHash: table.schemaHash)
        try req.model.copyData(into: &destination)
    }
    let connection = MessageDecoder()
    let tDecode = try best(reps) { try decode(plainWire, connection) }
    let tDecodeCRC = try best(reps) { try decode(crcWire, connection) }
    guard destination == source else { throw WireError(.malformed, "bench: decoded weights differ from the source") }

    print("floats: \(floats)")
    print("memcpy_mb_per_s: \(fmt(mb / tMemcpy))")
    print("encode_mb_per_s: \(fmt(mb / tEncode))")
    print("decode_mb_per_s: \(fmt(mb / tDecode))")
    print("decode_crc_mb_per_s: \(fmt(mb / tDecodeCRC))")
    print("encode_vs_memcpy: \(fmt(tMemcpy / tEncode))")
    print("decode_vs_memcpy: \(fmt(tMemcpy / tDecode))")
    print("decode_crc_vs_memcpy: \(fmt(tMemcpy / tDecodeCRC))")

    // zlib level 1, per 4 MiB chunk as the node sends, without and with the byte-shuffle.
    let raw = source.withUnsafeBytes { ByteSlice(ByteStorage(copying: $0)) }
    for (name, shuffle) in [("plain", false), ("shuffle", true)] {
        var compressed = 0
        let t = try best(2) {
            let m = try OutboundMessage(type: .gossipExchange, kind: .request, requestID: 1, payload: raw,
                                        compression: .zlib(level: 1, shuffle: shuffle), checksum: false)
            compressed = m.frames.reduce(0) { $0 + $1.payload.count }
        }
        print("zlib_ratio_\(name): \(fmt(Double(bytes) / Double(compressed)))")
        print("zlib_\(name)_mb_per_s: \(fmt(mb / t))")
    }
}
