// Named float32 tensors in one contiguous buffer (a "state dict"), plus the schema hash.

/// One named tensor inside a `ParameterSet`: its shape and where it starts in `storage`.
public struct TensorSpec: Sendable, Equatable, Hashable {
    /// Tensor name, e.g. `layers.0.weight`.
    public let name: String
    /// Dimensions, row-major (C order).
    public let shape: [Int]
    /// Start of this tensor in `ParameterSet.storage`, counted in floats.
    public let offset: Int

    /// Creates a spec. `offset` is in floats.
    public init(name: String, shape: [Int], offset: Int) {
        self.name = name
        self.shape = shape
        self.offset = offset
    }

    /// Number of elements (product of `shape`; 1 for a scalar).
    public var count: Int { shape.reduce(1, *) }

    /// Range of this tensor in `storage`.
    public var range: Range<Int> { offset..<(offset + count) }
}

/// An ordered set of named float32 tensors stored back to back in one `[Float]`.
///
/// Invariant: `specs[i].offset == sum of counts of specs[0..<i]` and
/// `storage.count == parameterCount`, i.e. tensors are packed in order with no padding, so
/// averaging and (de)serialisation are single passes over `storage`. A value type: copies
/// share storage until written (copy-on-write through `[Float]`).
public struct ParameterSet: Sendable, Equatable {
    /// Tensor layout, in storage order.
    public private(set) var specs: [TensorSpec]
    /// All tensor data, contiguous, in `specs` order.
    public var storage: [Float]

    /// Creates a zero-filled set with the given tensors, in the given order.
    public init(specs: [(name: String, shape: [Int])]) {
        var out: [TensorSpec] = []
        out.reserveCapacity(specs.count)
        var offset = 0
        for s in specs {
            let spec = TensorSpec(name: s.name, shape: s.shape, offset: offset)
            out.append(spec)
            offset += spec.count
        }
        self.specs = out
        self.storage = [Float](repeating: 0, count: offset)
    }

    /// Creates a set from a layout and matching storage.
    ///
    /// - Throws: `MLError.schemaMismatch` when `storage.count` differs from the layout's size.
    public init(specs: [(name: String, shape: [Int])], storage: [Float]) throws {
        self.init(specs: specs)
        guard storage.count == self.storage.count else {
            throw MLError(.schemaMismatch,
                          "storage has \(storage.count) floats but the tensor shapes need \(self.storage.count); pass storage laid out exactly as the specs")
        }
        self.storage = storage
    }

    /// Total number of floats.
    public var parameterCount: Int { storage.count }

    /// The (name, shape) layout, usable to build another set with the same schema.
    public var layout: [(name: String, shape: [Int])] { specs.map { ($0.name, $0.shape) } }

    /// The canonical schema string hashed by `schemaHash`: `name:F32:d0,d1\n` per tensor.
    public var schemaString: String {
        var s = ""
        for spec in specs {
            s += spec.name + ":F32:" + spec.shape.map(String.init).joined(separator: ",") + "\n"
        }
        return s
    }

    /// FNV-1a 64 of the UTF-8 bytes of `schemaString` (part of the wire protocol).
    ///
    /// Example: `layers.0.weight [2,3]`, `layers.0.bias [2]` hash the string
    /// `"layers.0.weight:F32:2,3\nlayers.0.bias:F32:2\n"`.
    public var schemaHash: UInt64 { fnv1a64(Array(schemaString.utf8)) }

    /// Whether `other` has the same tensor names, shapes and order.
    public func hasSameSchema(as other: ParameterSet) -> Bool { specs == other.specs }

    /// The spec of the tensor called `name`, if any.
    public func spec(named name: String) -> TensorSpec? { specs.first { $0.name == name } }

    /// The data of tensor `name` (a slice of `storage`), or nil when there is no such tensor.
    public func tensor(named name: String) -> ArraySlice<Float>? {
        guard let s = spec(named: name) else { return nil }
        return storage[s.range]
    }

    /// Replaces the data of tensor `name`; returns false when the name or size does not match.
    @discardableResult
    public mutating func setTensor(named name: String, _ values: [Float]) -> Bool {
        guard let s = spec(named: name), s.count == values.count else { return false }
        storage.replaceSubrange(s.range, with: values)
        return true
    }

    /// True when no element is NaN or infinite (vectorised: x*0 is 0 only for finite x).
    public var allFinite: Bool {
        storage.withUnsafeBufferPointer { Kernels.allFinite($0) }
    }

    /// The same check over raw weights (e.g. as received, before they become a parameter set).
    public static func allFinite(_ values: UnsafeBufferPointer<Float>) -> Bool { Kernels.allFinite(values) }

    /// FNV-1a 64 over the little-endian bytes of `storage` (a checksum of the weights).
    public var storageChecksum: UInt64 {
        storage.withUnsafeBytes { fnv1a64(UnsafeRawBufferPointer($0)) }
    }
}

/// FNV-1a 64-bit hash (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
public func fnv1a64<C: Sequence>(_ bytes: C) -> UInt64 where C.Element == UInt8 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes {
        h ^= UInt64(b)
        h = h &* 0x0000_0100_0000_01b3
    }
    return h
}
