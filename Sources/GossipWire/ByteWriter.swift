// Little-endian writer into an exact-size buffer. Encoders compute the size first, create one
// writer, and fill it once; writing past the end is a programming error (precondition).

/// Writes little-endian integers, floats and strings into a preallocated buffer.
public struct ByteWriter {
    /// The buffer being written.
    public let storage: ByteStorage
    /// Bytes written so far.
    public private(set) var offset: Int

    /// A writer over a new storage of exactly `capacity` bytes.
    public init(capacity: Int) {
        self.storage = ByteStorage(count: capacity)
        self.offset = 0
    }

    /// A writer over an existing storage, starting at `offset`.
    public init(storage: ByteStorage, offset: Int = 0) {
        self.storage = storage
        self.offset = offset
    }

    @inline(__always)
    private mutating func reserve(_ n: Int) -> UnsafeMutableRawPointer {
        precondition(offset + n <= storage.count, "ByteWriter overflow: encoder size computation is wrong")
        let p = storage.mutableBytes.baseAddress! + offset
        offset += n
        return p
    }

    public mutating func write(_ v: UInt8) { reserve(1).storeBytes(of: v, as: UInt8.self) }
    public mutating func write(_ v: UInt16) { reserve(2).storeBytes(of: v.littleEndian, as: UInt16.self) }
    public mutating func write(_ v: UInt32) { reserve(4).storeBytes(of: v.littleEndian, as: UInt32.self) }
    public mutating func write(_ v: UInt64) { reserve(8).storeBytes(of: v.littleEndian, as: UInt64.self) }
    public mutating func write(_ v: Float) { write(v.bitPattern) }
    public mutating func write(_ v: Double) { write(v.bitPattern) }

    /// Writes raw bytes.
    public mutating func write(bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
    }

    public mutating func write(bytes: [UInt8]) { bytes.withUnsafeBytes { write(bytes: $0) } }

    /// Writes a string as u16 byte length + UTF-8 bytes (the spec's `str`).
    public mutating func writeString(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            precondition(utf8.count <= Int(UInt16.max), "string too long for the wire")
            write(UInt16(utf8.count))
            write(bytes: UnsafeRawBufferPointer(utf8))
        }
    }

    /// Writes a string as u32 byte length + UTF-8 bytes (the spec's `text`).
    public mutating func writeText(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            write(UInt32(utf8.count))
            write(bytes: UnsafeRawBufferPointer(utf8))
        }
    }

    /// Writes `n` zero bytes (padding).
    public mutating func writeZeros(_ n: Int) {
        guard n > 0 else { return }
        reserve(n).initializeMemory(as: UInt8.self, repeating: 0, count: n)
    }

    /// Encoded size of `s` as the spec's `str`.
    public static func size(ofString s: String) -> Int { 2 + s.utf8.count }

    /// Encoded size of `s` as the spec's `text`.
    public static func size(ofText s: String) -> Int { 4 + s.utf8.count }
}
