// Child gossipd processes of the suites that run real networks (peers-frozen,
// time-to-accuracy): started with GossipNode's spawnLogged (output in a log file); wait for the ready file.
import Foundation
import GossipNode

/// The first line a child wrote to its ready file (`HOST:PORT`), waiting until the monotonic
/// time `until`. Throws, with the end of its log, when the child exits first or time runs out.
func waitReadyFile(_ path: String, what: String, process p: Process, log: String, until: Double) throws -> String {
    while now() < until {
        if let s = try? String(contentsOfFile: path, encoding: .utf8), !s.isEmpty { return s.trimmingCharacters(in: .whitespacesAndNewlines) }
        if !p.isRunning {
            let tail = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").suffix(3).joined(separator: " | ")
            throw BenchError("\(what) exited with status \(p.terminationStatus) before it was ready: \(tail)")
        }
        Thread.sleep(forTimeInterval: 0.02)
    }
    throw BenchError("\(what) was not ready in time; see \(log)")
}
