// End-to-end: `gossipctl watch` against a real bootstrap and four training peers, with stdout
// a pipe (plain blocks, no escape codes). It must list all five nodes with their roles from
// one peer's endpoint, and mark the bootstrap DOWN once it is killed while the peers stay up.
import Foundation
import GossipNet
@testable import GossipNode
import Testing

/// A running `gossipctl watch` whose stdout is collected as it comes.
private final class WatchProcess: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ args: [String]) throws {
        process.executableURL = URL(fileURLWithPath: Cluster.binary("gossipctl"))
        process.arguments = ["watch"] + args
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let reader = out.fileHandleForReading
        DispatchQueue.global().async {
            while true {
                let chunk = reader.availableData
                if chunk.isEmpty { break }
                self.lock.withLock { self.data.append(chunk) }
            }
            try? reader.close()
            self.done.signal()
        }
    }

    var output: String { lock.withLock { String(decoding: data, as: UTF8.self) } }

    /// The last complete block (blocks end with an empty line).
    var lastBlock: [String]? {
        let blocks = output.components(separatedBy: "\n\n").dropLast()   // the last piece may be partial
        return blocks.last.map { $0.split(separator: "\n").map(String.init) }
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        _ = done.wait(timeout: .now() + 10)
    }
}

@Suite(.serialized)
struct WatchCLITests {
    /// The row of `endpoint` in a block.
    private func row(_ block: [String], _ endpoint: NodeProcess) -> String? {
        block.first { $0.hasPrefix(endpoint.endpoint.description + " ") }
    }

    @Test func watchListsEveryNodeAndMarksTheKilledBootstrap() throws {
        let c = try Cluster("watch")
        defer { c.shutdown() }
        let boot = try c.bootstrap()
        var peers: [NodeProcess] = []
        for i in 0..<4 {
            peers.append(try c.peer(["--bootstrap", boot.endpoint.description], shard: "\(i)/4"))
        }
        try c.wait("every peer knows the other three", nodes: peers) {
            try peers.allSatisfy { try c.status($0).peers.count == 3 }
        }
        let t0 = Date()
        func mark(_ what: String) { print("watch test: \(what) at \(String(format: "%.1f", Date().timeIntervalSince(t0))) s") }
        let w = try WatchProcess(["--endpoint", peers[0].endpoint.description, "--interval", "0.5", "--count", "600", "--timeout", "5", "--poll-timeout", "1"])
        defer { w.stop() }
        func up(_ line: String?) -> Bool { line?.hasSuffix("s ago") == true }
        try c.wait("watch lists the bootstrap and 4 peers, all up (output so far:\n\(w.output.suffix(3000)))", timeout: 60, nodes: peers) {
            guard let block = w.lastBlock else { return false }
            guard let bl = row(block, boot), bl.contains(" bootstrap "), up(bl) else { return false }
            return peers.allSatisfy { p in row(block, p).map { $0.contains(" peer ") && up($0) } ?? false }
        }
        mark("all five listed")
        let before = try #require(w.lastBlock)
        #expect(before[0].contains("5 nodes, 5 up, 0 down"), "\(before)")
        kill(boot.pid, SIGKILL)
        boot.process.waitUntilExit()
        try c.wait("watch marks the bootstrap DOWN and keeps the peers up (output so far:\n\(w.output.suffix(3000)))", timeout: 60, nodes: peers) {
            guard let block = w.lastBlock, let bl = row(block, boot) else { return false }
            return bl.contains(" bootstrap ") && bl.contains("DOWN ") && peers.allSatisfy { up(row(block, $0)) }
        }
        mark("bootstrap marked down")
        let after = try #require(w.lastBlock)
        // A hung peer (SIGSTOP: its socket accepts, nothing answers) is marked DOWN within
        // --poll-timeout while the others stay up and fresh; it comes back with SIGCONT.
        let hung = peers[3]
        kill(hung.pid, SIGSTOP)
        defer { kill(hung.pid, SIGCONT) }
        try c.wait("watch marks the stopped peer DOWN, the others up (output so far:\n\(w.output.suffix(3000)))", timeout: 30, nodes: peers) {
            guard let block = w.lastBlock, let hl = row(block, hung) else { return false }
            return hl.contains("DOWN ") && peers.dropLast().allSatisfy { row(block, $0)?.hasSuffix("0s ago") == true }
        }
        mark("stopped peer marked down")
        kill(hung.pid, SIGCONT)
        try c.wait("watch shows the continued peer up again", timeout: 30, nodes: peers) {
            guard let block = w.lastBlock else { return false }
            return up(row(block, hung))
        }
        mark("continued peer up again")
        #expect(after[0].contains("5 nodes, 4 up, 1 down"), "\(after)")
        #expect(after.contains { $0.hasPrefix("max pairwise distance ") && $0.contains("over 4 peers") }, "\(after)")
        #expect(!w.output.contains("\u{1B}"), "no escape codes when stdout is a pipe")
        // Ctrl-C exits 0.
        kill(w.process.processIdentifier, SIGINT)
        try c.wait("watch exits on SIGINT (it would run 300 s more with --count 600)", timeout: 15) { !w.process.isRunning }
        #expect(w.process.terminationReason == .exit && w.process.terminationStatus == 0)

        // JSON, from another peer, with the bootstrap already dead: it is still found (a
        // peer names its bootstrap) and reported down, never seen.
        mark("watch exited on SIGINT")
        let (rc, out, err) = try c.ctl(["watch", "--endpoint", peers[2].endpoint.description, "--count", "2",
                                        "--interval", "0.2", "--timeout", "5", "-o", "json"])
        #expect(rc == 0, "\(err)")
        let lines = out.split(separator: "\n")
        #expect(lines.count == 2, "\(out)")
        let last = try #require(try JSONSerialization.jsonObject(with: Data((lines.last ?? "").utf8)) as? [String: Any])
        let nodes = try #require(last["nodes"] as? [[String: Any]])
        #expect(nodes.count == 5, "\(out)")
        let b = try #require(nodes.first { $0["endpoint"] as? String == boot.endpoint.description })
        #expect(b["up"] as? Bool == false)
        #expect(b["last_seen_seconds"] is NSNull)
        #expect(nodes.filter { $0["role"] as? String == "peer" && $0["up"] as? Bool == true }.count == 4)
        mark("json run done")
        let d = try #require(last["distance"] as? [String: Any], "\(out)")
        #expect(d["peers"] as? Int == 4)
        #expect((d["max_relative_l2"] as? Double ?? -1) >= 0)
    }

    /// On an encrypted network the watch needs the network key: with it every node is listed
    /// and up; without it the first node does not answer (exit 69).
    @Test func watchAnEncryptedNetwork() throws {
        let c = try Cluster("watch-secure", secure: true)
        defer { c.shutdown() }
        let boot = try c.bootstrap()
        let peers = try (0..<2).map { try c.peer(["--bootstrap", boot.endpoint.description], shard: "\($0)/2") }
        try c.wait("both peers know each other", nodes: peers) { try peers.allSatisfy { try c.status($0).peers.count == 1 } }
        let (rc, out, err) = try c.ctl(["watch", "--endpoint", peers[0].endpoint.description, "--count", "1", "--timeout", "5"] + c.keyArgs)
        #expect(rc == 0, "\(err)")
        #expect(out.contains("3 nodes, 3 up, 0 down"), "\(out)")
        #expect(out.contains("over 2 peers"), "\(out)")
        // `watch | head -3`: the watch ends (exit 0) once its reader is gone, long before --count.
        let cmd = "set -o pipefail; '\(Cluster.binary("gossipctl"))' watch --endpoint \(peers[0].endpoint) --interval 0.2 --count 3000 "
            + c.keyArgs.map { "'\($0)'" }.joined(separator: " ") + " | head -3"
        let (prc, pout, perr) = try Cluster.run("/bin/bash", ["-c", cmd], timeout: 60)
        #expect(prc == 0, "\(perr)")
        #expect(pout.split(separator: "\n").count == 3, "\(pout)")
        let (rc2, _, err2) = try c.ctl(["watch", "--endpoint", peers[0].endpoint.description, "--count", "1", "--timeout", "5"])
        #expect(rc2 == 69, "\(err2)")
        #expect(err2.contains("did not answer"), "\(err2)")
    }

    @Test func watchUsageAndUnreachable() throws {
        let c = try Cluster("watch-usage")
        defer { c.shutdown() }
        let (rc, _, err) = try c.ctl(["watch", "--endpoint", "127.0.0.1:1", "--count", "0"])
        #expect(rc == 64, "\(err)")
        #expect(err.contains("--count must be at least 1"), "\(err)")
        let (rc2, _, err2) = try c.ctl(["watch", "--socket", "/tmp/x.sock"])
        #expect(rc2 == 64, "\(err2)")
        #expect(err2.contains("give --endpoint"), "\(err2)")
        // Nothing listens on port 1: exit 69 with a message saying what to check.
        let (rc3, _, err3) = try c.ctl(["watch", "--endpoint", "127.0.0.1:1", "--count", "1", "--timeout", "3"])
        #expect(rc3 == 69, "\(err3)")
        #expect(err3.contains("127.0.0.1:1 did not answer"), "\(err3)")
    }
}
