// The executables when their reader goes away (`gossipd demo | head -3`): they must not die
// of SIGPIPE or trap on EPIPE. CLIs exit 0 quietly; the daemon keeps running without output.
// Also: Cluster.run itself must not hang on a child that writes a lot to stderr.
import Foundation
import GossipWire
import Testing

/// What a child did after its stdout reader closed the pipe.
private struct ClosedPipeRun {
    var lines: [String]
    var reason: Process.TerminationReason
    var status: Int32
    var stderr: String
}

/// Starts `exe args` with stdout into a pipe, reads `lines` lines, closes the read end and
/// waits (up to `timeout` s) for the child to exit. stderr goes to a file.
private func runClosingStdout(_ exe: String, _ args: [String], afterLines lines: Int, dir: String,
                              timeout: Double = 300) throws -> ClosedPipeRun {
    let errPath = "\(dir)/stderr-\(UInt32.random(in: 0...UInt32.max)).txt"
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    let errHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
    let out = Pipe()
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    p.standardOutput = out
    p.standardError = errHandle
    p.standardInput = FileHandle.nullDevice
    try p.run()
    try? errHandle.close()
    defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) }; p.waitUntilExit() }

    // Read until `lines` complete lines arrived (or the child closed stdout).
    var text = ""
    let reader = out.fileHandleForReading
    while text.filter({ $0 == "\n" }).count < lines {
        let chunk = reader.availableData
        if chunk.isEmpty { break }
        text += String(decoding: chunk, as: UTF8.self)
    }
    try reader.close()     // the reader goes away, like `head` after its lines

    let until = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < until { Thread.sleep(forTimeInterval: 0.05) }
    if p.isRunning {
        throw TimedOut(description: "\(exe) \(args.joined(separator: " ")) still runs \(timeout) s after its stdout closed")
    }
    return ClosedPipeRun(lines: text.split(separator: "\n").prefix(lines).map(String.init), reason: p.terminationReason,
                         status: p.terminationStatus,
                         stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
}

@Suite(.serialized)
struct ClosedPipeTests {
    /// `gossipd demo | head -3`: the demo finishes its run (it owns child processes) and exits 0,
    /// printing nothing more; before, the first write after the close trapped in FileHandle.write.
    @Test func demoSurvivesAClosedStdout() throws {
        let c = try Cluster("demo-epipe")
        defer { c.shutdown() }
        let r = try runClosingStdout(Cluster.binary("gossipd"),
                                     ["demo", "--peers", "2", "--arch", "64,16,10", "--rounds", "4", "--local-steps", "2",
                                      "--pace-ms", "0", "--keep-bootstrap"],
                                     afterLines: 3, dir: c.dir)
        #expect(r.lines.count == 3 && r.lines[0].hasPrefix("gossip demo:"), "\(r.lines)")
        #expect(r.reason == .exit, "gossipd demo died of signal \(r.status); stderr:\n\(r.stderr)")
        #expect(r.status == 0, "gossipd demo exited \(r.status); stderr:\n\(r.stderr)")
        #expect(!r.stderr.contains("Fatal error"), "stderr:\n\(r.stderr)")
    }

    /// `framedump BIG | head -3` exits 0 at once, quietly (before: killed by SIGPIPE, status 141
    /// in a shell).
    @Test func framedumpStopsQuietlyOnAClosedStdout() throws {
        let c = try Cluster("framedump-epipe")
        defer { c.shutdown() }
        // 20,000 Ping frames: far more output than a pipe buffers (64 KiB).
        var stream: [UInt8] = []
        for i in 0..<20_000 {
            let payload = ByteSlice(ByteStorage(copying: [UInt8](repeating: UInt8(i & 0xff), count: 8)))
            stream += try OutboundMessage(body: .pingRequest(payload), requestID: UInt32(i + 1)).serialized()
        }
        let path = "\(c.dir)/pings.bin"
        try Data(stream).write(to: URL(fileURLWithPath: path))
        let r = try runClosingStdout(Cluster.binary("framedump"), [path], afterLines: 3, dir: c.dir, timeout: 60)
        #expect(r.lines.first == "@0 Ping request id=1 flags=END|C len=32 raw=8/8", "\(r.lines)")
        #expect(r.reason == .exit, "framedump died of signal \(r.status); stderr:\n\(r.stderr)")
        #expect(r.status == 0, "framedump exited \(r.status); stderr:\n\(r.stderr)")
        #expect(r.stderr.isEmpty, "stderr:\n\(r.stderr)")

        // A real capture, verbose with hex (about 90 KB of text, more than a pipe holds).
        let capture = Cluster.repoRoot + "/Tests/GossipInspectTests/Fixtures/gossipd-network.pcap"
        let v = try runClosingStdout(Cluster.binary("framedump"), ["-V", "-x", capture], afterLines: 3, dir: c.dir, timeout: 60)
        #expect(v.lines.first?.hasPrefix("@0 127.0.0.1:") == true, "\(v.lines)")
        #expect(v.reason == .exit && v.status == 0, "framedump on a capture: \(v.reason) \(v.status); stderr:\n\(v.stderr)")
        #expect(v.stderr.isEmpty, "stderr:\n\(v.stderr)")
    }

    /// Cluster.run reads stdout and stderr at once: a child writing 1 MB to stderr before its
    /// stdout ends used to deadlock it (stdout read to the end first; stderr's pipe full).
    @Test func runDoesNotHangOnALargeStderr() throws {
        let (status, out, err) = try Cluster.run("/bin/sh", ["-c", "head -c 1000000 /dev/zero | tr '\\0' x >&2; echo done"],
                                                 timeout: 60)
        #expect(status == 0)
        #expect(out == "done\n")
        #expect(err.count == 1_000_000)
    }
}
