// Owned, fixed-size raw byte storage: the one place the wire layer allocates payload memory.
// Frames are assembled into it and tensors are encoded into it, so large payloads are
// written once and never joined or re-copied.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fixed-size, 64-byte-aligned block of bytes owned by this object.
///
/// Mutable through `mutableBytes`; callers that share an instance across threads must not
/// mutate it after handing it over (it is treated as immutable once a message is built or
/// completed), which is why it is `@unchecked Sendable`.
public final class ByteStorage: @unchecked Sendable {
    /// Number of bytes.
    public let count: Int
    private let base: UnsafeMutableRawPointer
    /// The receive budget this storage is charged to (credited back in `deinit`), if any.
    let ledger: ReceiveBuffers?

    /// Allocates `count` uninitialized bytes (zero-filled when `zeroed`).
    public init(count: Int, zeroed: Bool = false) {
        precondition(count >= 0, "negative storage size")
        self.count = count
        self.ledger = nil
        self.base = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(count, 1), alignment: 64)
        if zeroed { base.initializeMemory(as: UInt8.self, repeating: 0, count: count) }
    }

    /// Allocates `count` uninitialized bytes already charged to `ledger`, which is credited
    /// when this storage is freed.
    init(count: Int, chargedTo ledger: ReceiveBuffers) {
        self.count = count
        self.ledger = ledger
        self.base = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(count, 1), alignment: 64)
    }

    /// Copies `bytes` into a new storage.
    public convenience init<C: Collection>(copying bytes: C) where C.Element == UInt8 {
        self.init(count: bytes.count)
        let dst = UnsafeMutableRawBufferPointer(start: base, count: count)
        if bytes.withContiguousStorageIfAvailable({ dst.copyMemory(from: UnsafeRawBufferPointer($0)) }) == nil {
            var i = 0
            for b in bytes { dst[i] = b; i += 1 }
        }
    }

    deinit {
        base.deallocate()
        ledger?.credit(count)
    }

    /// The bytes, read-only. Valid while `self` is alive.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
    /// The bytes, writable. Valid while `self` is alive.
    public var mutableBytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: count) }

    /// Runs `body` over the bytes.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        defer { withExtendedLifetime(self) {} }
        return try body(bytes)
    }

    /// A copy of the bytes as an array (for tests and small payloads).
    public var array: [UInt8] { [UInt8](bytes) }
}

extension ByteSlice: Equatable {
    /// Slices are equal when their bytes are equal.
    public static func == (a: ByteSlice, b: ByteSlice) -> Bool {
        a.count == b.count && a.withUnsafeBytes { x in b.withUnsafeBytes { y in
            x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } }
    }
}

/// A view of a range of a `ByteStorage`; keeps the storage alive.
public struct ByteSlice: Sendable {
    public let storage: ByteStorage
    public let range: Range<Int>

    public init(_ storage: ByteStorage, _ range: Range<Int>? = nil) {
        let r = range ?? 0..<storage.count
        precondition(r.lowerBound >= 0 && r.upperBound <= storage.count, "slice out of bounds")
        self.storage = storage
        self.range = r
    }

    public var count: Int { range.count }
    /// The bytes of the slice; valid while this slice (or its storage) is alive.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage.bytes[range]) }
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        defer { withExtendedLifetime(storage) {} }
        return try body(bytes)
    }
    public var array: [UInt8] { [UInt8](bytes) }
}
