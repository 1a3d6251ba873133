// The peer's checkpoint store: one file, `model.safetensors` in the state directory, written
// atomically (temporary file in the same directory, fsync, rename, fsync of the directory),
// so a kill at any moment leaves either the previous checkpoint or the new one. Temporary
// files a killed writer left behind are removed when the store opens.
import Foundation
import GossipML
import Logging

/// Reads and writes the peer's checkpoint in one directory.
final class PeerCheckpoints: Sendable {
    /// What the peer saves, captured under its lock.
    struct Snapshot: Sendable {
        var parameters: ParameterSet
        var metadata: [String: String]
        var round: Int
    }

    /// What a checkpoint holds.
    struct Loaded: Sendable {
        var parameters: ParameterSet
        var metadata: [String: String]
    }

    let directory: String
    let path: String

    /// Opens (creating it when needed) the state directory and removes stale temporaries.
    /// - Throws: `NodeError` when the directory cannot be created.
    init(directory: String, logger: Logger) throws {
        self.directory = directory
        self.path = (directory as NSString).appendingPathComponent("model.safetensors")
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw NodeError("cannot create --state-dir \(directory): \(error); pick a writable directory")
        }
        for stale in Self.staleTemporaries(in: directory) {
            try? FileManager.default.removeItem(atPath: (directory as NSString).appendingPathComponent(stale))
            logger.notice("removed a temporary checkpoint left by an interrupted write", metadata: ["file": "\(stale)"])
        }
    }

    /// Names of temporary checkpoint files in `directory` (left by a writer that was killed).
    static func staleTemporaries(in directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix("model.safetensors.tmp") }.sorted()
    }

    /// Writes a checkpoint atomically.
    func write(_ s: Snapshot) throws {
        try SafeTensors.write(s.parameters, metadata: s.metadata, to: path)
    }

    /// The checkpoint, or nil when the directory holds none.
    /// - Throws: when the file exists but is not a valid checkpoint (the message says to move it away).
    func load() throws -> Loaded? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let (params, meta): (ParameterSet, [String: String])
        do {
            (params, meta) = try SafeTensors.read(path: path)
        } catch {
            throw NodeError("checkpoint \(path) cannot be read: \(error); move it away to start fresh")
        }
        guard params.allFinite else { throw NodeError("checkpoint \(path) holds NaN or Inf weights; move it away to start fresh") }
        return Loaded(parameters: params, metadata: meta)
    }
}
