// ModelPull (type 15) and ModelPush (type 16), SPEC §5.12 "External trainers": a training
// program on the node's machine pulls the node's current model (inline, or written by the
// node into a file the program names) and pushes back what it trained. Served only on the
// local control socket or to an --admin-key identity.

/// ModelPull request: `text path`. Empty path: the reply carries the model inline; otherwise
/// the node writes the model as a safetensors file at `path` (same machine) and the reply
/// carries only the version and the file's size.
public struct ModelPullRequest: Sendable, Equatable {
    public var path: String
    public init(path: String) { self.path = path }

    /// Encodes the payload: `text path`.
    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        try checkText(path, "path", limits: limits)
        var w = ByteWriter(capacity: ByteWriter.size(ofText: path))
        w.writeText(path)
        return ByteSlice(w.storage)
    }

    public static func decode(_ payload: ByteSlice, limits: Limits = .default) throws(WireError) -> ModelPullRequest {
        try payload.read { (r) throws(WireError) in ModelPullRequest(path: try r.readText("path", maxBytes: limits.maxTextBytes)) }
    }
}

/// ModelPull reply: `u64 version`, `u8 form`; form 0 (inline): a ModelState (§6.1) to the end
/// of the payload; form 1 (file): `u64 byte_count`, the size of the file the node wrote.
public struct ModelPullReply: Sendable, Equatable {
    public enum Body: Sendable, Equatable {
        case inline(ModelState)
        case file(byteCount: UInt64)
    }
    public var version: UInt64
    public var body: Body
    public init(version: UInt64, body: Body) { self.version = version; self.body = body }

    /// Encodes an inline reply from raw weights, copied once.
    public static func encodeInline(version: UInt64, architecture: String, round: UInt64, step: UInt64, samples: UInt64,
                                    table: TensorTable, data: UnsafeRawBufferPointer,
                                    limits: Limits = .default) throws(WireError) -> ByteSlice {
        try ModelState.encodePayload(
            prefixSize: 9, writePrefix: { w in w.write(version); w.write(UInt8(0)) },
            architecture: architecture, round: round, step: step, samples: samples, table: table,
            dataCount: data.count, limits: limits) { dst in
            if data.count > 0 { dst.baseAddress!.copyMemory(from: data.baseAddress!, byteCount: data.count) }
        }
    }

    /// Encodes this reply.
    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        switch body {
        case .file(let n):
            var w = ByteWriter(capacity: 17)
            w.write(version)
            w.write(UInt8(1))
            w.write(n)
            return ByteSlice(w.storage)
        case .inline(let m):
            return try m.data.withUnsafeBytes { (d) throws(WireError) in
                try ModelPullReply.encodeInline(version: version, architecture: m.architecture, round: m.round, step: m.step,
                                                samples: m.samples, table: m.table, data: d, limits: limits)
            }
        }
    }

    /// Decodes the payload; an inline model's `data` is a view into `payload`.
    public static func decode(_ payload: ByteSlice, limits: Limits = .default) throws(WireError) -> ModelPullReply {
        try payload.read { (r) throws(WireError) in
            let version = try r.readUInt64("version")
            let formAt = r.position
            let form = try r.readUInt8("form")
            switch form {
            case 0:
                let m = try ModelState.read(&r, payload: payload, limits: limits, expectedSchemaHash: nil)
                return ModelPullReply(version: version, body: .inline(m))
            case 1:
                return ModelPullReply(version: version, body: .file(byteCount: try r.readUInt64("byte_count")))
            default:
                throw WireError(.malformed, at: formAt, "ModelPull reply form \(form) is neither 0 (inline) nor 1 (file)")
            }
        }
    }
}

/// ModelPush request: `u64 base_version`, `u64 samples`, `u64 steps`, `text path`; with an
/// empty path a ModelState (§6.1) follows to the end of the payload, otherwise nothing (the
/// node reads the safetensors file at `path`).
public struct ModelPushRequest: Sendable, Equatable {
    public var baseVersion: UInt64
    public var samples: UInt64
    public var steps: UInt64
    public var path: String
    /// The pushed weights when `path` is empty.
    public var model: ModelState?

    public init(baseVersion: UInt64, samples: UInt64, steps: UInt64, path: String, model: ModelState?) {
        self.baseVersion = baseVersion; self.samples = samples; self.steps = steps; self.path = path; self.model = model
    }

    /// Encodes the payload. Precondition-free: a request with a path and a model, or with
    /// neither, is refused with `.malformed`.
    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        try checkText(path, "path", limits: limits)
        let prefix = 24 + ByteWriter.size(ofText: path)
        let write: (inout ByteWriter) -> Void = { [self] w in
            w.write(baseVersion); w.write(samples); w.write(steps); w.writeText(path)
        }
        switch (path.isEmpty, model) {
        case (false, nil):
            var w = ByteWriter(capacity: prefix)
            write(&w)
            return ByteSlice(w.storage)
        case (true, let m?):
            return try m.data.withUnsafeBytes { (d) throws(WireError) in
                try ModelState.encodePayload(prefixSize: prefix, writePrefix: write, architecture: m.architecture,
                                             round: m.round, step: m.step, samples: m.samples, table: m.table,
                                             dataCount: d.count, limits: limits) { dst in
                    if d.count > 0 { dst.baseAddress!.copyMemory(from: d.baseAddress!, byteCount: d.count) }
                }
            }
        default:
            throw WireError(.malformed, "a ModelPush carries either a path or an inline model, exactly one of them")
        }
    }

    /// Decodes the payload; an inline model's `data` is a view into `payload`.
    /// - Parameter expectedSchemaHash: refuse (`.schemaMismatch`) another schema before reading weights.
    public static func decode(_ payload: ByteSlice, limits: Limits = .default,
                              expectedSchemaHash: UInt64? = nil) throws(WireError) -> ModelPushRequest {
        try payload.read { (r) throws(WireError) in
            let base = try r.readUInt64("base_version")
            let samples = try r.readUInt64("samples")
            let steps = try r.readUInt64("steps")
            let path = try r.readText("path", maxBytes: limits.maxTextBytes)
            if !path.isEmpty {
                try r.expectEnd("the path of a ModelPush that names a file")
                return ModelPushRequest(baseVersion: base, samples: samples, steps: steps, path: path, model: nil)
            }
            let m = try ModelState.read(&r, payload: payload, limits: limits, expectedSchemaHash: expectedSchemaHash)
            return ModelPushRequest(baseVersion: base, samples: samples, steps: steps, path: "", model: m)
        }
    }
}

/// ModelPush reply: `u64 version` (the node's model version right after the push was applied)
/// and `f64 relative_l2_change` (how far the push moved the node's model, §5.4's measure).
public struct ModelPushReply: Sendable, Equatable {
    public var version: UInt64
    public var relativeL2Change: Double
    public init(version: UInt64, relativeL2Change: Double) { self.version = version; self.relativeL2Change = relativeL2Change }

    public func encode(limits: Limits = .default) throws(WireError) -> ByteSlice {
        try checkWeight(relativeL2Change)
        var w = ByteWriter(capacity: 16)
        w.write(version)
        w.write(relativeL2Change)
        return ByteSlice(w.storage)
    }

    public static func decode(_ payload: ByteSlice, limits: Limits = .default) throws(WireError) -> ModelPushReply {
        try payload.read { (r) throws(WireError) in
            ModelPushReply(version: try r.readUInt64("version"), relativeL2Change: try readWeight(&r))
        }
    }
}
