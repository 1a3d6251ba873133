// Per-chunk payload compression: zlib format (RFC 1950, window bits 15), optionally after a
// byte-shuffle filter that groups byte k of every 4-byte element together, which helps
// zlib on float32 weights. Inflation is bounded by the declared size (no decompression bombs).
import CZlib

/// How a sender compresses payload chunks.
public enum CompressionMode: Sendable, Equatable, CustomStringConvertible {
    case none
    /// zlib at `level` (1 fastest ... 9 smallest), shuffling 4-byte elements first when `shuffle`.
    case zlib(level: Int32, shuffle: Bool)

    public var description: String {
        switch self {
        case .none: "none"
        case .zlib(let level, let shuffle): "zlib-\(level)\(shuffle ? "+shuffle" : "")"
        }
    }
}

public enum Compression {
    /// The zlib library version linked at run time (`zlibVersion()`), e.g. "1.2.13".
    public static var zlibVersion: String { String(cString: CZlib.zlibVersion()) }

    /// The zlib version the compressed golden vectors (Protocol/vectors) were made with. Their
    /// compressed bytes are reproducible only with this version at the same level and strategy;
    /// other versions may emit different, equally valid streams (receivers only ever compare the
    /// inflated bytes).
    public static let goldenVectorZlibVersion = "1.2.13"

    /// The largest compressed payload a receiver accepts for a chunk of `n` bytes:
    /// `n + n/8 + 64`. zlib itself never needs more than `compressBound(n)` (about
    /// `n + n/1000 + 13`); the eighth covers other deflaters, whose fixed-Huffman blocks spend
    /// up to 9 bits per byte. Refusing more bounds what a receiver buffers before inflating by
    /// the chunk's own, type-checked size (SPEC §7).
    public static func maxDeflatedSize(_ n: Int) -> Int {
        n + (n >> 3) + 64
    }

    /// Byte-shuffles `src` into `dst` (same count): for the `n = count / 4` whole elements,
    /// `dst[k * n + i] = src[4 * i + k]`; the `count % 4` trailing bytes are copied as they are.
    public static func shuffle(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer) {
        precondition(src.count == dst.count)
        let n = src.count / 4
        guard let s = src.baseAddress?.assumingMemoryBound(to: UInt8.self),
              let d = dst.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        let d0 = d, d1 = d + n, d2 = d + 2 * n, d3 = d + 3 * n
        for i in 0..<n {
            let w = UnsafeRawPointer(s + 4 * i).loadUnaligned(as: UInt32.self).littleEndian
            d0[i] = UInt8(truncatingIfNeeded: w)
            d1[i] = UInt8(truncatingIfNeeded: w >> 8)
            d2[i] = UInt8(truncatingIfNeeded: w >> 16)
            d3[i] = UInt8(truncatingIfNeeded: w >> 24)
        }
        for t in (4 * n)..<src.count { d[t] = s[t] }
    }

    /// Inverse of `shuffle`.
    public static func unshuffle(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer) {
        precondition(src.count == dst.count)
        let n = src.count / 4
        guard let s = src.baseAddress?.assumingMemoryBound(to: UInt8.self),
              let d = dst.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        let s0 = s, s1 = s + n, s2 = s + 2 * n, s3 = s + 3 * n
        for i in 0..<n {
            let w = UInt32(s0[i]) | UInt32(s1[i]) << 8 | UInt32(s2[i]) << 16 | UInt32(s3[i]) << 24
            UnsafeMutableRawPointer(d + 4 * i).storeBytes(of: w.littleEndian, as: UInt32.self)
        }
        for t in (4 * n)..<src.count { d[t] = s[t] }
    }

    /// Compresses `src` into a new storage as one zlib stream.
    /// - Throws: `.compressionFailed` if zlib reports an error.
    public static func deflate(_ src: UnsafeRawBufferPointer, level: Int32, shuffle doShuffle: Bool) throws(WireError) -> ByteSlice {
        var input = src
        var scratch: ByteStorage? = nil
        if doShuffle && src.count >= 4 {
            let s = ByteStorage(count: src.count)
            shuffle(src, into: s.mutableBytes)
            scratch = s
            input = s.bytes
        }
        return try withExtendedLifetime(scratch) { () throws(WireError) -> ByteSlice in
            var stream = z_stream()
            var rc = deflateInit2_(&stream, level, Z_DEFLATED, 15, 8, Z_DEFAULT_STRATEGY,
                                   ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
            guard rc == Z_OK else { throw WireError(.compressionFailed, "zlib deflateInit failed (\(rc))") }
            defer { deflateEnd(&stream) }
            let bound = Int(deflateBound(&stream, uLong(input.count)))
            let out = ByteStorage(count: bound)
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(input.count)
            stream.next_out = out.mutableBytes.baseAddress!.assumingMemoryBound(to: Bytef.self)
            stream.avail_out = uInt(bound)
            rc = CZlib.deflate(&stream, Z_FINISH)
            guard rc == Z_STREAM_END else { throw WireError(.compressionFailed, "zlib deflate did not finish (\(rc))") }
            return ByteSlice(out, 0..<Int(stream.total_out))
        }
    }

    /// Inflates one zlib stream from `src` into exactly `dst.count` bytes, then un-shuffles
    /// in place when `shuffled`.
    /// - Parameter offset: stream offset of `src`, for error messages.
    /// - Throws: `.decompressionFailed` for corrupt data, `.decompressionOverflow` when the
    ///   stream would produce more than `dst.count` bytes (nothing past `dst` is written),
    ///   `.lengthMismatch` when it ends short or leaves trailing input.
    public static func inflate(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer,
                               shuffled: Bool, at offset: Int) throws(WireError) {
        var stream = z_stream()
        var rc = inflateInit2_(&stream, 15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else { throw WireError(.decompressionFailed, at: offset, "zlib inflateInit failed (\(rc))") }
        defer { inflateEnd(&stream) }
        // When un-shuffling, inflate into a scratch buffer first.
        let scratch: ByteStorage? = (shuffled && dst.count >= 4) ? ByteStorage(count: dst.count) : nil
        let target = scratch?.mutableBytes ?? dst
        var overflowProbe: UInt8 = 0
        stream.next_in = UnsafeMutablePointer(mutating: src.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.avail_in = uInt(src.count)
        stream.next_out = target.baseAddress?.assumingMemoryBound(to: Bytef.self)
        stream.avail_out = uInt(target.count)
        rc = CZlib.inflate(&stream, Z_FINISH)
        if rc == Z_BUF_ERROR || (rc == Z_OK && stream.avail_out == 0) {
            // Output space is used up: is there more to come? Probe with one spare byte.
            try withUnsafeMutablePointer(to: &overflowProbe) { (probe) throws(WireError) in
                stream.next_out = probe
                stream.avail_out = 1
                rc = CZlib.inflate(&stream, Z_FINISH)
                if stream.avail_out == 0 {
                    throw WireError(.decompressionOverflow, at: offset,
                                    "zlib stream inflates past its declared size of \(dst.count) bytes")
                }
            }
        }
        switch rc {
        case Z_STREAM_END:
            break
        case Z_DATA_ERROR, Z_NEED_DICT:
            let why = stream.msg.map { String(cString: $0) } ?? "invalid data"
            throw WireError(.decompressionFailed, at: offset, "corrupt zlib data: \(why)")
        case Z_BUF_ERROR:
            throw WireError(.lengthMismatch, at: offset,
                            "zlib stream is truncated: it ended after \(stream.total_out) of \(dst.count) declared bytes")
        default:
            throw WireError(.decompressionFailed, at: offset, "zlib inflate failed (\(rc))")
        }
        guard Int(stream.total_out) == dst.count else {
            throw WireError(.lengthMismatch, at: offset,
                            "zlib stream inflated to \(stream.total_out) bytes, not the declared \(dst.count)")
        }
        guard stream.avail_in == 0 else {
            throw WireError(.lengthMismatch, at: offset + Int(stream.total_in),
                            "\(stream.avail_in) trailing bytes after the end of the zlib stream")
        }
        if let scratch { unshuffle(scratch.bytes, into: dst) }
    }
}
