// Exact-resume checkpoints: the model plus the trainer's state (momentum, generator, data
// order and cursor, counters) in one safetensors file, written atomically, read strictly.
//
// File layout (format "gossip-trainer-v1"), one safetensors file:
//   <name>                       the model tensors under their usual names (layers.0.weight ...),
//                                so `SafeTensors.read` and numpy readers still find the model
//   optimizer.momentum.<name>    SGD momentum of <name>, same shape
//   trainer.data_order           [rows, 2] F32: row index i of the epoch permutation stored as
//                                (i / 65536, i % 65536), both exact in float32
//   __metadata__                 the caller's keys plus
//     trainer.format "gossip-trainer-v1", trainer.step, trainer.samples_seen, trainer.epochs,
//     trainer.cursor, trainer.batch, trainer.data_rows (decimal), trainer.rng (four 16-digit
//     hex words, comma-separated), trainer.data_fingerprint (16 hex digits)
//
// A kill -9 during `write` can leave a temporary file `<path>.tmp-<pid>-<random>` next to the
// checkpoint (the rename never happened, so the previous checkpoint is intact); call
// `removeLeftoverTemporaryFiles(in:)` on the state directory at start-up.

import Foundation

/// Everything besides the weights and the hyperparameters that decides a `Trainer`'s next steps.
///
/// Invariant (checked by `Trainer.restoreState` and `TrainerCheckpoint.decode`): `order` is a
/// permutation of `0..<order.count`, `0 <= cursor <= order.count`, `velocity` is finite and laid
/// out like the parameters, `rngState` is four words not all zero.
public struct TrainerState: Sendable, Equatable {
    /// SGD momentum, one float per parameter, in the parameters' storage order.
    public var velocity: [Float]
    /// The trainer's xoshiro256** state (shuffles, input noise, shifts all draw from it).
    public var rngState: [UInt64]
    /// The current epoch's permutation of the data rows.
    public var order: [Int]
    /// Position in `order` of the next batch's first row.
    public var cursor: Int
    /// Rows per step (the trainer's effective batch size).
    public var batchSize: Int
    /// Steps run so far (selects the learning rate of the schedule).
    public var stepsDone: Int
    /// Training rows processed so far.
    public var samplesSeen: Int
    /// Completed passes over the data.
    public var epochsDone: Int
    /// `fingerprint(of:)` of the data the state was made for.
    public var dataFingerprint: UInt64

    /// Creates a state; `Trainer.exportState()` is the usual source.
    public init(velocity: [Float], rngState: [UInt64], order: [Int], cursor: Int, batchSize: Int,
                stepsDone: Int, samplesSeen: Int, epochsDone: Int, dataFingerprint: UInt64) {
        self.velocity = velocity
        self.rngState = rngState
        self.order = order
        self.cursor = cursor
        self.batchSize = batchSize
        self.stepsDone = stepsDone
        self.samplesSeen = samplesSeen
        self.epochsDone = epochsDone
        self.dataFingerprint = dataFingerprint
    }

    /// FNV-1a 64 over the row count, feature count and labels: tells a shard from another
    /// without hashing every feature.
    public static func fingerprint(of data: Dataset) -> UInt64 {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16 + data.labels.count)
        for v in [UInt64(data.count), UInt64(data.featureCount)] { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        bytes += data.labels
        return fnv1a64(bytes)
    }

    /// Throws `MLError.invalidArgument` unless `order` is a permutation of `0..<order.count`.
    static func validatePermutation(_ order: [Int]) throws {
        var seen = [Bool](repeating: false, count: order.count)
        for (i, r) in order.enumerated() {
            guard r >= 0, r < order.count, !seen[r] else {
                throw MLError(.invalidArgument, "saved data order is not a permutation of 0..<\(order.count) (entry \(i) is \(r)); the state is corrupt")
            }
            seen[r] = true
        }
    }
}

/// A model and its trainer's state, as one checkpoint file.
public struct TrainerCheckpoint: Sendable, Equatable {
    /// The model.
    public var parameters: ParameterSet
    /// The trainer's state for an exact resume.
    public var state: TrainerState
    /// The caller's metadata (arch, round, dataset, ...), without the `trainer.` keys.
    public var metadata: [String: String]

    /// Format name in `trainer.format`.
    public static let format = "gossip-trainer-v1"
    /// Prefix of the momentum tensors.
    public static let momentumPrefix = "optimizer.momentum."
    /// Name of the data-order tensor.
    public static let orderTensor = "trainer.data_order"

    /// Creates a checkpoint value.
    public init(parameters: ParameterSet, state: TrainerState, metadata: [String: String]) {
        self.parameters = parameters
        self.state = state
        self.metadata = metadata
    }

    /// The trainer's current weights and state, with `metadata`.
    public init(trainer: Trainer, metadata: [String: String]) {
        self.init(parameters: trainer.parameters, state: trainer.exportState(), metadata: metadata)
    }

    static func bad(_ m: String) -> MLError { MLError(.invalidSafeTensors, "checkpoint: " + m) }

    /// The safetensors bytes of this checkpoint.
    ///
    /// - Throws: `MLError.invalidArgument` when a metadata key starts with `trainer.` or a
    ///   tensor name is reserved (`optimizer.` / `trainer.` prefix), or the state does not fit
    ///   the parameters; `MLError.invalidSafeTensors` from the encoder.
    public func encode() throws -> [UInt8] {
        let (set, meta) = try combined()
        return try SafeTensors.encode(set, metadata: meta)
    }

    /// Model, momentum and order tensors in one parameter set, and the full metadata.
    func combined() throws -> (ParameterSet, [String: String]) {
        if let k = metadata.keys.first(where: { $0.hasPrefix("trainer.") }) {
            throw MLError(.invalidArgument, "metadata key '\(k)' is reserved for the trainer state; rename it")
        }
        if let s = parameters.specs.first(where: { $0.name.hasPrefix("optimizer.") || $0.name.hasPrefix("trainer.") }) {
            throw MLError(.invalidArgument, "tensor name '\(s.name)' is reserved for the trainer state; rename it")
        }
        guard state.velocity.count == parameters.parameterCount else {
            throw MLError(.invalidArgument, "momentum has \(state.velocity.count) floats, the model \(parameters.parameterCount); export state and parameters from the same trainer")
        }
        guard state.order.allSatisfy({ $0 >= 0 && $0 <= Int(UInt32.max) }) else {
            throw MLError(.invalidArgument, "data order holds a row index outside 0...\(UInt32.max); the state is corrupt")
        }
        var layout = parameters.layout
        layout += parameters.specs.map { (Self.momentumPrefix + $0.name, $0.shape) }
        layout.append((Self.orderTensor, [state.order.count, 2]))
        var storage = parameters.storage
        storage.reserveCapacity(2 * parameters.parameterCount + 2 * state.order.count)
        storage += state.velocity
        for r in state.order {
            storage.append(Float(r >> 16))
            storage.append(Float(r & 0xffff))
        }
        let set = try ParameterSet(specs: layout, storage: storage)
        var meta = metadata
        meta["trainer.format"] = Self.format
        meta["trainer.step"] = String(state.stepsDone)
        meta["trainer.samples_seen"] = String(state.samplesSeen)
        meta["trainer.epochs"] = String(state.epochsDone)
        meta["trainer.cursor"] = String(state.cursor)
        meta["trainer.batch"] = String(state.batchSize)
        meta["trainer.data_rows"] = String(state.order.count)
        meta["trainer.rng"] = state.rngState.map { hex16($0) }.joined(separator: ",")
        meta["trainer.data_fingerprint"] = hex16(state.dataFingerprint)
        return (set, meta)
    }

    /// Parses and validates checkpoint bytes: safetensors structure, format, every tensor's
    /// presence and shape, finiteness of weights and momentum, the permutation, the counters.
    ///
    /// - Throws: `MLError.invalidSafeTensors` saying what is wrong (the file is then unusable:
    ///   move it away to start fresh).
    public static func decode(_ bytes: [UInt8]) throws -> TrainerCheckpoint {
        let (all, meta) = try SafeTensors.decode(bytes)
        guard meta["trainer.format"] == format else {
            throw bad("trainer.format is \(meta["trainer.format"].map { "'\($0)'" } ?? "missing"), expected '\(format)'; this is not an exact-resume checkpoint (a plain model file?)")
        }
        let modelSpecs = all.specs.filter { !$0.name.hasPrefix("optimizer.") && !$0.name.hasPrefix("trainer.") }
        guard !modelSpecs.isEmpty else { throw bad("no model tensors") }
        let names = modelSpecs.map(\.name)
        let ordered = SafeTensors.canonicalOrder(names) ?? names
        let byName = Dictionary(uniqueKeysWithValues: all.specs.map { ($0.name, $0) })
        let modelLayout = ordered.compactMap { n in byName[n].map { (n, $0.shape) } }
        var params = ParameterSet(specs: modelLayout)
        var velocity = [Float](repeating: 0, count: params.parameterCount)
        for s in params.specs {
            guard let src = byName[s.name] else { throw bad("tensor '\(s.name)' vanished") }
            params.storage.replaceSubrange(s.range, with: all.storage[src.range])
            guard let m = byName[momentumPrefix + s.name] else {
                throw bad("tensor '\(s.name)' has no momentum tensor '\(momentumPrefix + s.name)'")
            }
            guard m.shape == s.shape else {
                throw bad("momentum '\(m.name)' has shape \(m.shape), its tensor \(s.shape)")
            }
            velocity.replaceSubrange(s.range, with: all.storage[m.range])
        }
        let known = Set(names).union(names.map { momentumPrefix + $0 }).union([orderTensor])
        if let extra = all.specs.first(where: { !known.contains($0.name) }) {
            throw bad("unexpected tensor '\(extra.name)' (a momentum tensor without a model tensor, or an unknown trainer tensor)")
        }
        guard params.allFinite else { throw bad("the model holds NaN or Inf") }
        guard velocity.withUnsafeBufferPointer({ Kernels.allFinite($0) }) else { throw bad("the momentum holds NaN or Inf") }

        func int(_ key: String) throws -> Int {
            guard let t = meta[key], let v = Int(t), v >= 0 else {
                throw bad("\(key) is \(meta[key].map { "'\($0)'" } ?? "missing"), expected a non-negative integer")
            }
            return v
        }
        func hexWord(_ t: Substring, _ key: String) throws -> UInt64 {
            guard t.count == 16, let v = UInt64(t, radix: 16) else { throw bad("\(key) holds '\(t)', expected 16 hex digits") }
            return v
        }
        let rows = try int("trainer.data_rows")
        guard let o = byName[orderTensor], o.shape == [rows, 2] else {
            throw bad("\(orderTensor) is missing or its shape \(byName[orderTensor]?.shape ?? []) is not [\(rows), 2] (trainer.data_rows)")
        }
        var order = [Int](repeating: 0, count: rows)
        for i in 0..<rows {
            let hi = all.storage[o.offset + 2 * i], lo = all.storage[o.offset + 2 * i + 1]
            guard hi >= 0, hi <= 65535, hi == hi.rounded(), lo >= 0, lo <= 65535, lo == lo.rounded() else {
                throw bad("\(orderTensor) row \(i) is (\(hi), \(lo)), not two integers in 0...65535")
            }
            order[i] = Int(hi) << 16 | Int(lo)
        }
        do { try TrainerState.validatePermutation(order) } catch let e as MLError { throw bad(e.message) }
        let cursor = try int("trainer.cursor")
        guard cursor <= rows else { throw bad("trainer.cursor \(cursor) is past the \(rows) rows") }
        let batch = try int("trainer.batch")
        guard batch >= 1 else { throw bad("trainer.batch is 0") }
        let words = (meta["trainer.rng"] ?? "").split(separator: ",", omittingEmptySubsequences: false)
        guard words.count == 4 else { throw bad("trainer.rng must be four comma-separated hex words, got '\(meta["trainer.rng"] ?? "")'") }
        let rng = try words.map { try hexWord($0, "trainer.rng") }
        guard rng.contains(where: { $0 != 0 }) else { throw bad("trainer.rng is all zero, which no generator can be in") }
        guard let fpText = meta["trainer.data_fingerprint"] else { throw bad("trainer.data_fingerprint is missing") }
        let fp = try hexWord(Substring(fpText), "trainer.data_fingerprint")
        let state = TrainerState(velocity: velocity, rngState: rng, order: order, cursor: cursor, batchSize: batch,
                                 stepsDone: try int("trainer.step"), samplesSeen: try int("trainer.samples_seen"),
                                 epochsDone: try int("trainer.epochs"), dataFingerprint: fp)
        return TrainerCheckpoint(parameters: params, state: state, metadata: meta.filter { !$0.key.hasPrefix("trainer.") })
    }
}

private func hex16(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}

/// Reads and writes exact-resume checkpoints in a state directory.
public enum CheckpointStore {
    /// Writes `checkpoint` to `path` atomically: a temporary file in the same directory,
    /// fsync, rename onto `path`, fsync of the directory. A crash at any point leaves either
    /// the previous file or the new one at `path`, never a mix.
    ///
    /// - Throws: `MLError.io` naming the path and the system error; `MLError.invalidArgument`
    ///   from `TrainerCheckpoint.encode`.
    public static func write(_ checkpoint: TrainerCheckpoint, to path: String) throws {
        let (set, meta) = try checkpoint.combined()
        try SafeTensors.write(set, metadata: meta, to: path)
    }

    /// Reads and validates the checkpoint at `path` (see `TrainerCheckpoint.decode`).
    ///
    /// - Throws: `MLError.io` when the file cannot be read, `MLError.invalidSafeTensors`
    ///   (prefixed with the path) when it is not a valid checkpoint.
    public static func read(path: String) throws -> TrainerCheckpoint {
        let bytes = try DatasetLoader.readFile(path)
        do {
            return try TrainerCheckpoint.decode(bytes)
        } catch let e as MLError {
            throw MLError(e.kind, "\(path): \(e.message); move the file away to start fresh")
        }
    }

    /// Reads a state directory's model file for a restart: an exact-resume checkpoint gives
    /// its weights, metadata and state; a plain model file (as gossip wrote before exact
    /// resume, or `gossipctl model`) gives weights and metadata and `state` nil, so the caller
    /// resumes the weights only. Either way the weights are checked to be finite.
    ///
    /// - Throws: `MLError.io` when the file cannot be read; `MLError.invalidSafeTensors`
    ///   (prefixed with the path) when it is malformed, a checkpoint fails validation, or the
    ///   weights hold NaN or Inf.
    public static func readForResume(path: String) throws -> (parameters: ParameterSet, metadata: [String: String], state: TrainerState?) {
        let bytes = try DatasetLoader.readFile(path)
        do {
            let (all, meta) = try SafeTensors.decode(bytes)
            if meta["trainer.format"] != nil {
                let c = try TrainerCheckpoint.decode(bytes)
                return (c.parameters, c.metadata, c.state)
            }
            guard all.allFinite else { throw TrainerCheckpoint.bad("the model holds NaN or Inf") }
            return (all, meta, nil)
        } catch let e as MLError {
            throw MLError(e.kind, "\(path): \(e.message); move the file away to start fresh")
        }
    }

    /// Whether `name` is a temporary file of `SafeTensors.write` / `write`: `<file>.tmp-<pid>-<n>`.
    public static func isTemporaryFileName(_ name: String) -> Bool {
        guard let r = name.range(of: ".tmp-", options: .backwards), r.lowerBound != name.startIndex else { return false }
        let parts = name[r.upperBound...].split(separator: "-", omittingEmptySubsequences: false)
        return parts.count == 2 && parts.allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }
    }

    /// Removes temporary checkpoint files (`isTemporaryFileName`) left in `directory` by a
    /// process killed while writing. Call at start-up, before the first checkpoint, when no
    /// other process writes checkpoints into `directory`. Returns the names removed.
    /// A directory that does not exist holds nothing to remove.
    ///
    /// - Throws: `MLError.io` when the directory cannot be listed or a file cannot be removed.
    @discardableResult
    public static func removeLeftoverTemporaryFiles(in directory: String) throws -> [String] {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: directory, isDirectory: &isDir) else { return [] }
        guard isDir.boolValue else {
            throw MLError(.io, "state directory '\(directory)' is not a directory; give a directory path")
        }
        let names: [String]
        do { names = try fm.contentsOfDirectory(atPath: directory) } catch {
            throw MLError(.io, "cannot list state directory '\(directory)': \(error.localizedDescription); check its permissions")
        }
        var removed: [String] = []
        for name in names.sorted() where isTemporaryFileName(name) {
            let path = (directory as NSString).appendingPathComponent(name)
            guard let attrs = try? fm.attributesOfItem(atPath: path), attrs[.type] as? FileAttributeType == .typeRegular else { continue }
            do { try fm.removeItem(atPath: path) } catch {
                throw MLError(.io, "cannot remove leftover temporary file '\(path)': \(error.localizedDescription); remove it by hand")
            }
            removed.append(name)
        }
        return removed
    }
}
