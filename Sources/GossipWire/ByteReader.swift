// Bounds-checked little-endian reader over borrowed bytes. Reads use loadUnaligned; every
// read past the end throws `.truncated` naming the offset. Never traps on input.

/// Reads little-endian values from a byte buffer it does not own.
public struct ByteReader {
    public let bytes: UnsafeRawBufferPointer
    /// Offset of the next byte to read, relative to `bytes`.
    public private(set) var offset: Int
    /// Added to offsets in error messages (e.g. the payload's offset in the frame).
    public let baseOffset: Int

    public init(_ bytes: UnsafeRawBufferPointer, baseOffset: Int = 0) {
        self.bytes = bytes
        self.offset = 0
        self.baseOffset = baseOffset
    }

    public var remaining: Int { bytes.count - offset }
    public var isAtEnd: Bool { offset == bytes.count }
    /// The absolute offset of the next byte, for error messages.
    public var position: Int { baseOffset + offset }

    @inline(__always)
    private mutating func take(_ n: Int, _ what: String) throws(WireError) -> Int {
        guard n >= 0, n <= remaining else {
            throw WireError(.truncated, at: position, "\(what) needs \(n) bytes but only \(remaining) remain")
        }
        let start = offset
        offset += n
        return start
    }

    public mutating func readUInt8(_ what: String = "u8") throws(WireError) -> UInt8 {
        let at = try take(1, what)
        return bytes[at]
    }
    public mutating func readUInt16(_ what: String = "u16") throws(WireError) -> UInt16 {
        let at = try take(2, what)
        return UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt16.self))
    }
    public mutating func readUInt32(_ what: String = "u32") throws(WireError) -> UInt32 {
        let at = try take(4, what)
        return UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self))
    }
    public mutating func readUInt64(_ what: String = "u64") throws(WireError) -> UInt64 {
        let at = try take(8, what)
        return UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self))
    }
    public mutating func readFloat(_ what: String = "f32") throws(WireError) -> Float {
        Float(bitPattern: try readUInt32(what))
    }
    public mutating func readDouble(_ what: String = "f64") throws(WireError) -> Double {
        Double(bitPattern: try readUInt64(what))
    }

    /// Borrows the next `n` bytes (no copy).
    public mutating func readBytes(_ n: Int, _ what: String = "bytes") throws(WireError) -> UnsafeRawBufferPointer {
        let at = try take(n, what)
        return UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)])
    }

    /// Skips `n` bytes.
    public mutating func skip(_ n: Int, _ what: String = "padding") throws(WireError) {
        _ = try take(n, what)
    }

    /// Reads the spec's `str`: u16 byte length, then that many bytes of valid UTF-8.
    /// - Throws: `.limitExceeded` past `maxBytes` (before reading the bytes), `.invalidUTF8`.
    public mutating func readString(_ what: String, maxBytes: Int) throws(WireError) -> String {
        let lengthAt = position
        let n = Int(try readUInt16("\(what) length"))
        guard n <= maxBytes else {
            throw WireError(.limitExceeded, at: lengthAt, "\(what) is \(n) bytes, above the limit of \(maxBytes)")
        }
        let at = position
        let raw = try readBytes(n, what)
        guard let s = String(validating: raw, as: UTF8.self) else {
            throw WireError(.invalidUTF8, at: at, "\(what) is not valid UTF-8")
        }
        return s
    }

    /// Reads the spec's `text`: u32 byte length, then that many bytes of valid UTF-8.
    /// - Throws: `.limitExceeded` past `maxBytes` (before reading the bytes), `.truncated`, `.invalidUTF8`.
    public mutating func readText(_ what: String, maxBytes: Int) throws(WireError) -> String {
        let lengthAt = position
        let n = UInt64(try readUInt32("\(what) length"))
        guard n <= UInt64(Swift.max(0, maxBytes)) else {
            throw WireError(.limitExceeded, at: lengthAt, "\(what) is \(n) bytes, above the limit of \(maxBytes)")
        }
        let at = position
        let raw = try readBytes(Int(n), what)
        guard let s = String(validating: raw, as: UTF8.self) else {
            throw WireError(.invalidUTF8, at: at, "\(what) is not valid UTF-8")
        }
        return s
    }

    /// Throws unless every byte was consumed.
    public func expectEnd(_ what: String) throws(WireError) {
        guard isAtEnd else {
            throw WireError(.lengthMismatch, at: position, "\(remaining) unexpected trailing bytes after \(what)")
        }
    }
}
