// The tensor payload: dtype codes, the tensor table, the schema hash, and `ModelState`, whose
// weights are one contiguous little-endian section at a 64-byte aligned payload offset.
// Encoding copies the weights exactly once (into the one output buffer); decoding validates
// the whole table (limits, overflow-checked shape products, schema hash) before a single
// weight byte is touched and then exposes the weights as a view (see Protocol/SPEC.md,
// "Tensor payload").

/// Element type of a tensor (one byte on the wire). Models are float32; `float16`,
/// `bfloat16` and `int8` are lossy wire encodings of float32 tensors (SPEC §6.1, §6.5),
/// which a message accepts only where its decoder says so (GetModel: F32 only).
public enum DType: UInt8, Sendable, CaseIterable {
    case float32 = 1, float16 = 2, bfloat16 = 3, int8 = 4

    /// The name used in the schema hash (`F32`, `F16`, `BF16`, `I8`).
    public var hashName: String {
        switch self {
        case .float32: "F32"
        case .float16: "F16"
        case .bfloat16: "BF16"
        case .int8: "I8"
        }
    }

    /// Bytes per element (int8: without the block scales, see `byteCount(elements:)`).
    public var size: Int {
        switch self {
        case .float32: 4
        case .float16, .bfloat16: 2
        case .int8: 1
        }
    }

    /// Elements per int8 block (one float32 scale, then the block's values; SPEC §6.1).
    public static let int8BlockSize = 256

    /// The name `--wire-dtype` uses: `f32`, `fp16`, `bf16`, `int8`.
    public var optionName: String {
        switch self {
        case .float32: "f32"
        case .float16: "fp16"
        case .bfloat16: "bf16"
        case .int8: "int8"
        }
    }

    /// Parses an `optionName` (also the SPEC names `F32`, `F16`, `BF16`, `I8`, any case).
    public init?(optionName: String) {
        switch optionName.lowercased() {
        case "f32", "float32": self = .float32
        case "fp16", "f16", "float16": self = .float16
        case "bf16", "bfloat16": self = .bfloat16
        case "int8", "i8": self = .int8
        default: return nil
        }
    }

    /// True for the lossy encodings (every dtype but F32).
    public var isLossy: Bool { self != .float32 }

    /// Every dtype this implementation decodes.
    public static let all: Set<DType> = Set(DType.allCases)

    /// Bytes `n` elements take on the wire: `n × size`, for I8 plus 4 bytes of scale per
    /// started block of `int8BlockSize`; nil on overflow or a negative `n`.
    public func byteCount(elements n: Int) -> Int? {
        guard n >= 0 else { return nil }
        if self == .int8 {
            let blocks = n / DType.int8BlockSize + (n % DType.int8BlockSize == 0 ? 0 : 1)
            let (s, o) = n.addingReportingOverflow(blocks &* 4)
            return o || blocks > Int.max / 4 ? nil : s
        }
        let (p, o) = n.multipliedReportingOverflow(by: size)
        return o ? nil : p
    }
}

/// One tensor's entry in a tensor table.
public struct TensorInfo: Sendable, Equatable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// Bytes of data: product of `shape` times the dtype size.
    public var byteCount: Int

    public init(name: String, dtype: DType, shape: [Int], byteCount: Int) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.byteCount = byteCount
    }

    /// A float32 tensor with `byteCount` computed from `shape` (traps on a negative or
    /// overflowing shape: use for shapes you built yourself).
    public init(name: String, shape: [Int]) {
        let elements = shape.reduce(1) { precondition($1 >= 0, "negative dimension"); return $0 * $1 }
        self.init(name: name, dtype: .float32, shape: shape, byteCount: elements * 4)
    }

    /// Bytes of a tensor of `shape` in `dtype` (`DType.byteCount(elements:)`), or nil on
    /// overflow or a negative dimension.
    public static func checkedByteCount(shape: [Int], dtype: DType) -> Int? {
        guard let n = checkedElementCount(shape: shape) else { return nil }
        return dtype.byteCount(elements: n)
    }

    /// Product of `shape` (1 for a scalar), or nil on overflow or a negative dimension.
    public static func checkedElementCount(shape: [Int]) -> Int? {
        var n = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (p, o) = n.multipliedReportingOverflow(by: d)
            if o { return nil }
            n = p
        }
        return n
    }

    /// Element count of `shape` (the shape was validated when the entry was built or read).
    public var elementCount: Int { TensorInfo.checkedElementCount(shape: shape) ?? 0 }
}

/// The schema hash shared with GossipML: FNV-1a 64 over the table's description.
public enum SchemaHash {
    public static let offsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325
    public static let prime: UInt64 = 0x0000_0100_0000_01b3

    /// FNV-1a 64 of `bytes`, continuing from `initial`.
    public static func fnv1a<S: Sequence>(_ bytes: S, initial: UInt64 = offsetBasis) -> UInt64 where S.Element == UInt8 {
        var h = initial
        for b in bytes { h = (h ^ UInt64(b)) &* prime }
        return h
    }

    /// The text that is hashed: per tensor `name:F32:d0,d1,...\n`, in table order. The hash
    /// names the model's dtype, which is always F32: a tensor sent as F16, BF16 or I8 is a
    /// lossy wire encoding of an F32 tensor (SPEC §6.3, §6.5), so the encoding does not change
    /// the schema hash and a node compares schemas before it looks at encodings.
    public static func description(of tensors: [TensorInfo]) -> String {
        var s = ""
        for t in tensors {
            s += t.name + ":" + DType.float32.hashName + ":" + t.shape.map(String.init).joined(separator: ",") + "\n"
        }
        return s
    }

    /// The schema hash of `tensors` (names, dtypes and shapes, in order).
    public static func of(_ tensors: [TensorInfo]) -> UInt64 {
        fnv1a(description(of: tensors).utf8)
    }
}

/// The tensors of a model (names, dtypes, shapes, sizes) and their schema hash.
public struct TensorTable: Sendable, Equatable {
    public var schemaHash: UInt64
    public var tensors: [TensorInfo]

    public init(schemaHash: UInt64, tensors: [TensorInfo]) {
        self.schemaHash = schemaHash
        self.tensors = tensors
    }

    /// A table whose schema hash is computed from `tensors`.
    public init(tensors: [TensorInfo]) {
        self.init(schemaHash: SchemaHash.of(tensors), tensors: tensors)
    }

    /// Total data bytes of all tensors.
    public var dataByteCount: Int { tensors.reduce(0) { $0 + $1.byteCount } }

    /// Total elements of all tensors.
    public var elementCount: Int { tensors.reduce(0) { $0 + $1.elementCount } }

    /// This table with every tensor in `dtype` (byte counts recomputed); the schema hash is
    /// unchanged (it names the model's dtype, F32). Traps on a shape whose size overflows.
    public func encoded(as dtype: DType) -> TensorTable {
        TensorTable(schemaHash: schemaHash, tensors: tensors.map {
            TensorInfo(name: $0.name, dtype: dtype, shape: $0.shape, byteCount: TensorInfo.checkedByteCount(shape: $0.shape, dtype: dtype)!)
        })
    }

    /// True when some tensor is in a lossy encoding.
    public var isLossy: Bool { tensors.contains { $0.dtype.isLossy } }

    /// Byte offset of each tensor's data within the data section.
    public var dataOffsets: [Int] {
        var out: [Int] = []
        out.reserveCapacity(tensors.count)
        var o = 0
        for t in tensors { out.append(o); o += t.byteCount }
        return out
    }

    /// Encoded size of the table (hash, count, entries).
    var encodedSize: Int {
        var n = 8 + 4
        for t in tensors { n += ByteWriter.size(ofString: t.name) + 1 + 1 + 8 * t.shape.count + 8 }
        return n
    }

    /// Checks the table as an encoder: limits, dtypes, byte counts, and the schema hash.
    func validateForEncoding(limits: Limits) throws(WireError) {
        guard tensors.count <= limits.maxTensors else {
            throw WireError(.limitExceeded, "\(tensors.count) tensors exceed the limit of \(limits.maxTensors)")
        }
        var seen = Set<String>()
        for t in tensors {
            try checkName(t.name, "tensor name", limits: limits)
            guard t.shape.count <= limits.maxDimensions else {
                throw WireError(.limitExceeded, "tensor '\(t.name)' has \(t.shape.count) dimensions, above the limit of \(limits.maxDimensions)")
            }
            guard let n = TensorInfo.checkedByteCount(shape: t.shape, dtype: t.dtype), n == t.byteCount else {
                throw WireError(.malformed, "tensor '\(t.name)' declares \(t.byteCount) bytes, which does not match shape \(t.shape) of \(t.dtype.hashName)")
            }
            guard seen.insert(t.name).inserted else {
                throw WireError(.malformed, "tensor name '\(t.name)' appears twice in the table")
            }
        }
        guard SchemaHash.of(tensors) == schemaHash else {
            throw WireError(.malformed, "table schemaHash 0x\(String(schemaHash, radix: 16)) is not the hash of its tensors; build it with TensorTable(tensors:)")
        }
    }

    mutating func write(_ w: inout ByteWriter) {
        w.write(schemaHash)
        w.write(UInt32(tensors.count))
        for t in tensors {
            w.writeString(t.name)
            w.write(t.dtype.rawValue)
            w.write(UInt8(t.shape.count))
            for d in t.shape { w.write(UInt64(d)) }
            w.write(UInt64(t.byteCount))
        }
    }

    /// Reads and fully validates a table. Checks `expectedSchemaHash` right after reading the
    /// declared hash, before the entries.
    /// - Parameter dtypes: the dtypes this message may carry; another known one is refused
    ///   with `.unsupported` (UNIMPLEMENTED), naming the dtype and `--wire-dtype`.
    static func read(_ r: inout ByteReader, limits: Limits, expectedSchemaHash: UInt64?,
                     dtypes: Set<DType> = [.float32]) throws(WireError) -> TensorTable {
        let hashAt = r.position
        let declared = try r.readUInt64("schema hash")
        if let expected = expectedSchemaHash, expected != 0, expected != declared {
            throw WireError(.schemaMismatch, at: hashAt,
                            "model schema hash 0x\(String(declared, radix: 16)) differs from this node's 0x\(String(expected, radix: 16)); the peers run different architectures")
        }
        let countAt = r.position
        let count = try r.readUInt32("tensor count")
        guard UInt64(count) <= UInt64(Swift.max(0, limits.maxTensors)) else {
            throw WireError(.limitExceeded, at: countAt, "\(count) tensors exceed the limit of \(limits.maxTensors)")
        }
        // Each entry takes at least 12 bytes; refuse counts the payload cannot hold before reserving.
        guard Int(count) <= r.remaining / 12 else {
            throw WireError(.truncated, at: countAt, "\(count) tensor entries cannot fit in the \(r.remaining) remaining bytes")
        }
        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(Int(count))
        var seen = Set<String>()
        var total = 0
        for i in 0..<Int(count) {
            let entryAt = r.position
            let name = try r.readString("tensor \(i) name", maxBytes: limits.maxNameBytes)
            let dtypeAt = r.position
            let code = try r.readUInt8("tensor \(i) dtype")
            guard let dtype = DType(rawValue: code) else {
                throw WireError(.malformed, at: dtypeAt, "tensor '\(name)' has unknown dtype code \(code)")
            }
            guard dtypes.contains(dtype) else {
                let ok = DType.allCases.filter { dtypes.contains($0) }
                throw WireError(.unsupported, at: dtypeAt,
                                "tensor '\(name)' has dtype \(dtype.hashName) (--wire-dtype \(dtype.optionName)), which this receiver does not accept in this message; it accepts \(ok.map(\.optionName).joined(separator: ",")) (\(ok.map(\.hashName).joined(separator: ", "))): send F32 (--wire-dtype f32) or one of those")
            }
            let ndimAt = r.position
            let ndim = Int(try r.readUInt8("tensor \(i) rank"))
            guard ndim <= limits.maxDimensions else {
                throw WireError(.limitExceeded, at: ndimAt, "tensor '\(name)' has \(ndim) dimensions, above the limit of \(limits.maxDimensions)")
            }
            var shape: [Int] = []
            shape.reserveCapacity(ndim)
            for k in 0..<ndim {
                let dimAt = r.position
                let d = try r.readUInt64("tensor \(i) dimension \(k)")
                guard d <= UInt64(Int.max) else {
                    throw WireError(.malformed, at: dimAt, "tensor '\(name)' dimension \(k) is \(d), too large")
                }
                shape.append(Int(d))
            }
            let countFieldAt = r.position
            let bytes = try r.readUInt64("tensor \(i) byte count")
            guard let expected = TensorInfo.checkedByteCount(shape: shape, dtype: dtype) else {
                throw WireError(.malformed, at: entryAt, "tensor '\(name)' shape \(shape) has an element count that overflows")
            }
            guard bytes == UInt64(expected) else {
                throw WireError(.lengthMismatch, at: countFieldAt,
                                "tensor '\(name)' declares \(bytes) bytes but shape \(shape) of \(dtype.hashName) needs \(expected)")
            }
            let (sum, o) = total.addingReportingOverflow(expected)
            guard !o else { throw WireError(.malformed, at: countFieldAt, "tensor byte counts overflow when summed") }
            total = sum
            guard seen.insert(name).inserted else {
                throw WireError(.malformed, at: entryAt, "tensor name '\(name)' appears twice in the table")
            }
            tensors.append(TensorInfo(name: name, dtype: dtype, shape: shape, byteCount: expected))
        }
        let computed = SchemaHash.of(tensors)
        guard computed == declared else {
            throw WireError(.malformed, at: hashAt,
                            "declared schema hash 0x\(String(declared, radix: 16)) is not the hash of the table (0x\(String(computed, radix: 16))); the table is corrupt")
        }
        return TensorTable(schemaHash: declared, tensors: tensors)
    }
}

/// Throws unless `s` fits `limits.maxNameBytes`.
func checkName(_ s: String, _ what: String, limits: Limits) throws(WireError) {
    let n = s.utf8.count
    guard n <= limits.maxNameBytes, n <= Int(UInt16.max) else {
        throw WireError(.limitExceeded, "\(what) is \(n) bytes, above the limit of \(limits.maxNameBytes)")
    }
}

/// Throws unless `s` fits `limits.maxTextBytes`.
func checkText(_ s: String, _ what: String, limits: Limits) throws(WireError) {
    let n = s.utf8.count
    guard n <= limits.maxTextBytes, n <= Int(UInt32.max) else {
        throw WireError(.limitExceeded, "\(what) is \(n) bytes, above the limit of \(limits.maxTextBytes)")
    }
}

/// A model: architecture, training counters, a tensor table, and the weights.
///
/// `data` is the tensors' little-endian float32 values packed in table order; after decoding
/// it is a view into the received payload (no copy), 64-byte aligned in memory.
public struct ModelState: Sendable, Equatable {
    public var architecture: String
    public var round: UInt64
    public var step: UInt64
    public var samples: UInt64
    public var table: TensorTable
    public var data: ByteSlice

    public init(architecture: String, round: UInt64, step: UInt64, samples: UInt64, table: TensorTable, data: ByteSlice) {
        self.architecture = architecture
        self.round = round
        self.step = step
        self.samples = samples
        self.table = table
        self.data = data
    }

    /// Alignment of the data section within the message payload.
    public static let dataAlignment = 64

    /// Copies the weights into `destination` (one copy); its size must equal `data.count`.
    /// - Throws: `.lengthMismatch` when the sizes differ.
    public func copyData(into destination: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard destination.count == data.count else {
            throw WireError(.lengthMismatch, "destination holds \(destination.count) bytes but the model carries \(data.count)")
        }
        data.withUnsafeBytes { src in
            if src.count > 0 { destination.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: src.count) }
        }
    }

    /// Copies the weights into `destination`, whose count must equal the model's float count.
    public func copyData(into destination: inout [Float]) throws(WireError) {
        let r: Result<Void, WireError> = destination.withUnsafeMutableBytes { d in
            Result { () throws(WireError) in try copyData(into: d) }
        }
        try r.get()
    }

    /// The bytes of tensor `index` (a view).
    public func tensorData(_ index: Int) -> ByteSlice {
        let start = table.tensors[..<index].reduce(0) { $0 + $1.byteCount }
        let lo = data.range.lowerBound + start
        return ByteSlice(data.storage, lo..<(lo + table.tensors[index].byteCount))
    }

    /// Encodes a message payload that ends with a model section, writing the data once.
    ///
    /// - Parameters:
    ///   - prefixSize: bytes of message fields before the model section.
    ///   - writePrefix: writes exactly `prefixSize` bytes.
    ///   - fill: writes the `table.dataByteCount` data bytes into the buffer it is given.
    static func encodePayload(prefixSize: Int, writePrefix: (inout ByteWriter) -> Void,
                              architecture: String, round: UInt64, step: UInt64, samples: UInt64,
                              table: TensorTable, dataCount: Int, limits: Limits, buffer: PayloadBuffer? = nil,
                              fill: (UnsafeMutableRawBufferPointer) -> Void) throws(WireError) -> ByteSlice {
        try checkName(architecture, "architecture", limits: limits)
        try table.validateForEncoding(limits: limits)
        guard dataCount == table.dataByteCount else {
            throw WireError(.lengthMismatch, "data has \(dataCount) bytes but the table's tensors need \(table.dataByteCount)")
        }
        let fieldsEnd = prefixSize + ByteWriter.size(ofString: architecture) + 24 + table.encodedSize + 16
        let dataStart = alignUp(fieldsEnd, dataAlignment)
        let total = dataStart + dataCount
        guard total <= limits.maxMessageBytes else {
            throw WireError(.messageTooLarge, "model message of \(total) bytes exceeds the limit of \(limits.maxMessageBytes)")
        }
        // A reused buffer may be larger than `total`; the payload is its first `total` bytes.
        var w = buffer.map { ByteWriter(storage: $0.storage(minimumCount: total)) } ?? ByteWriter(capacity: total)
        writePrefix(&w)
        precondition(w.offset == prefixSize, "prefix size mismatch")
        w.writeString(architecture)
        w.write(round)
        w.write(step)
        w.write(samples)
        var t = table
        t.write(&w)
        w.write(UInt64(dataStart))
        w.write(UInt64(dataCount))
        w.writeZeros(dataStart - w.offset)   // < 64 bytes of padding; the data is not pre-filled
        // The data section is written once, by `fill` (a single memcpy for contiguous weights).
        fill(UnsafeMutableRawBufferPointer(rebasing: w.storage.mutableBytes[dataStart..<total]))
        return ByteSlice(w.storage, 0..<total)
    }

    /// Reads a model section that runs to the end of `payload`, validating everything before
    /// the data is exposed. `r` reads `payload` from its start.
    static func read(_ r: inout ByteReader, payload: ByteSlice, limits: Limits,
                     expectedSchemaHash: UInt64?, dtypes: Set<DType> = [.float32]) throws(WireError) -> ModelState {
        let architecture = try r.readString("architecture", maxBytes: limits.maxNameBytes)
        let round = try r.readUInt64("round")
        let step = try r.readUInt64("step")
        let samples = try r.readUInt64("samples")
        let table = try TensorTable.read(&r, limits: limits, expectedSchemaHash: expectedSchemaHash, dtypes: dtypes)
        let fieldsEnd = r.position + 16
        let offsetAt = r.position
        let dataOffset = try r.readUInt64("data offset")
        let lengthAt = r.position
        let dataLength = try r.readUInt64("data length")
        guard dataLength == UInt64(table.dataByteCount) else {
            throw WireError(.lengthMismatch, at: lengthAt, "data length \(dataLength) differs from the table's total of \(table.dataByteCount) bytes")
        }
        let expectedOffset = alignUp(fieldsEnd, dataAlignment)
        guard dataOffset == UInt64(expectedOffset) else {
            throw WireError(.malformed, at: offsetAt, "data offset \(dataOffset) must be \(expectedOffset), the next multiple of \(dataAlignment)")
        }
        if expectedOffset <= payload.count, UInt64(payload.count - expectedOffset) != dataLength {
            throw WireError(.lengthMismatch, at: lengthAt,
                            "payload has \(payload.count - expectedOffset) data bytes after offset \(expectedOffset), the table says \(dataLength)")
        }
        let padAt = r.position
        let pad = try r.readBytes(expectedOffset - fieldsEnd, "padding")
        for (i, b) in pad.enumerated() where b != 0 {
            throw WireError(.malformed, at: padAt + i, "padding before the data section must be zero")
        }
        _ = try r.readBytes(Int(dataLength), "tensor data")
        try r.expectEnd("the tensor data")
        let lo = payload.range.lowerBound + expectedOffset
        return ModelState(architecture: architecture, round: round, step: step, samples: samples, table: table,
                          data: ByteSlice(payload.storage, lo..<(lo + Int(dataLength))))
    }

    /// Size of the model section's fields before the padding.
    var fieldsSize: Int { ByteWriter.size(ofString: architecture) + 24 + table.encodedSize + 16 }
}

@inline(__always) func alignUp(_ n: Int, _ a: Int) -> Int { (n + a - 1) / a * a }

extension ModelState {
    /// Encodes a GetModel reply payload from raw weights (copied once into the output).
    ///
    /// - Parameter data: `table.dataByteCount` bytes of little-endian float32, in table order.
    /// - Throws: `WireError` when the table is invalid, exceeds `limits`, or `data` has the wrong size.
    public static func encode(architecture: String, round: UInt64, step: UInt64, samples: UInt64,
                              table: TensorTable, data: UnsafeRawBufferPointer,
                              limits: Limits = .default) throws(WireError) -> ByteSlice {
        try encodePayload(prefixSize: 0, writePrefix: { _ in }, architecture: architecture, round: round, step: step,
                          samples: samples, table: table, dataCount: data.count, limits: limits) { dst in
            if data.count > 0 { dst.baseAddress!.copyMemory(from: data.baseAddress!, byteCount: data.count) }
        }
    }

    /// Encodes a GetModel reply payload into `buffer`'s reusable storage (see `PayloadBuffer`):
    /// a sender that encodes the same model size repeatedly pays only the one copy of the
    /// weights, not a fresh allocation and its page faults. The result is a view of the
    /// buffer's storage; the buffer is reused once that view (and its frames) are released.
    public static func encode(architecture: String, round: UInt64, step: UInt64, samples: UInt64,
                              table: TensorTable, data: UnsafeRawBufferPointer,
                              limits: Limits = .default, into buffer: PayloadBuffer) throws(WireError) -> ByteSlice {
        try encodePayload(prefixSize: 0, writePrefix: { _ in }, architecture: architecture, round: round, step: step,
                          samples: samples, table: table, dataCount: data.count, limits: limits, buffer: buffer) { dst in
            if data.count > 0 { dst.baseAddress!.copyMemory(from: data.baseAddress!, byteCount: data.count) }
        }
    }

    /// Encodes this model as a GetModel reply payload.
    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        try data.withUnsafeBytes { (d) throws(WireError) in
            try ModelState.encode(architecture: architecture, round: round, step: step, samples: samples,
                                  table: table, data: d, limits: limits)
        }
    }

    /// Encodes this model as a GetModel reply payload into `buffer` (see `PayloadBuffer`).
    public func encode(limits: Limits = .default, into buffer: PayloadBuffer) throws(WireError) -> ByteSlice {
        try data.withUnsafeBytes { (d) throws(WireError) in
            try ModelState.encode(architecture: architecture, round: round, step: step, samples: samples,
                                  table: table, data: d, limits: limits, into: buffer)
        }
    }

    /// Decodes a GetModel reply payload.
    /// - Parameter expectedSchemaHash: when set (non-zero), a model with another schema hash is
    ///   refused with `.schemaMismatch` before its table entries or weights are read.
    public static func decode(_ payload: ByteSlice, limits: Limits = .default,
                              expectedSchemaHash: UInt64? = nil) throws(WireError) -> ModelState {
        try payload.withUnsafeBytes { (bytes) throws(WireError) in
            var r = ByteReader(bytes)
            return try read(&r, payload: payload, limits: limits, expectedSchemaHash: expectedSchemaHash)
        }
    }
}
