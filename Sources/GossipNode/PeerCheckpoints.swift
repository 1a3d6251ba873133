// The peer's checkpoint store: one file, `model.safetensors` in the state directory, holding
// the model under its usual tensor names (so `gossipctl model`, numpy and safetensors readers
// read it as a plain model) plus the trainer's whole state (momentum, generator, data order
// and cursor, counters: GossipML's TrainerCheckpoint), so a restarted peer continues exactly
// where it stopped. Written atomically (temporary file in the same directory, fsync, rename,
// fsync of the directory): a kill at any moment leaves the previous checkpoint or the new
// one. Temporary files a killed writer left behind are removed when the store opens.
import Foundation
import GossipML
import Logging

/// Reads and writes the peer's checkpoint in one directory.
final class PeerCheckpoints: Sendable {
    /// What the peer saves, captured under its lock (copies; the write happens outside it).
    struct Snapshot: Sendable {
        var checkpoint: TrainerCheckpoint
        var round: Int
    }

    /// What a checkpoint holds. `trainer` is nil for a model-only file (an older gossip's
    /// checkpoint, or a model exported by hand): then training resumes from the weights alone.
    struct Loaded: Sendable {
        var parameters: ParameterSet
        var metadata: [String: String]
        var trainer: TrainerState?
    }

    let directory: String
    let path: String

    /// Opens (creating it when needed) the state directory and removes stale temporaries.
    /// - Throws: `NodeError` when the directory cannot be created or read.
    init(directory: String, logger: Logger) throws {
        self.directory = directory
        self.path = (directory as NSString).appendingPathComponent("model.safetensors")
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for stale in try CheckpointStore.removeLeftoverTemporaryFiles(in: directory) {
                logger.notice("removed a temporary checkpoint left by an interrupted write", metadata: ["file": "\(stale)"])
            }
        } catch {
            throw NodeError("cannot use --state-dir \(directory): \(error); pick a writable directory")
        }
    }

    /// Writes a checkpoint atomically.
    func write(_ s: Snapshot) throws {
        try CheckpointStore.write(s.checkpoint, to: path)
    }

    /// The checkpoint, or nil when the directory holds none.
    /// - Throws: `NodeError` when the file exists but is not a valid checkpoint.
    func load() throws -> Loaded? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        do {
            let r = try CheckpointStore.readForResume(path: path)
            guard r.parameters.allFinite else { throw NodeError("it holds NaN or Inf weights") }
            return Loaded(parameters: r.parameters, metadata: r.metadata, trainer: r.state)
        } catch {
            throw NodeError("checkpoint \(path) cannot be resumed from: \(error); move it away to start fresh")
        }
    }
}
