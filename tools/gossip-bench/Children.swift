// Child gossipd processes of the suites that run real networks (peers-frozen,
// time-to-accuracy): start one with its output in a log file, and wait for its ready file.
import Foundation

/// Starts `executable args` with stdout and stderr in `log` (created anew) and no stdin.
func spawnLogged(_ executable: String, _ args: [String], log: String) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    guard FileManager.default.createFile(atPath: log, contents: nil) else { throw BenchError("cannot create \(log)") }
    let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
    p.standardOutput = fh
    p.standardError = fh
    p.standardInput = FileHandle.nullDevice
    try p.run()
    try? fh.close()   // the child has its own copy
    return p
}

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
