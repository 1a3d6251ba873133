// Test harness for end-to-end tests: starts the real gossipd/gossipctl binaries as child
// processes on 127.0.0.1 with OS-picked ports, waits on ready files and status fields (never
// fixed sleeps), and kills everything it started, by pid, in every outcome.
import Foundation
import GossipML
import GossipNet
@testable import GossipNode
import GossipSecure
import GossipWire
import Testing

/// A started daemon.
final class NodeProcess: @unchecked Sendable {
    let process: Process
    let endpoint: Endpoint
    let log: String
    let name: String
    /// The node's control socket (where Stop and TriggerGossip are accepted); nil when the
    /// test started it without one.
    let controlSocket: String?
    init(process: Process, endpoint: Endpoint, log: String, name: String, controlSocket: String? = nil) {
        self.process = process
        self.endpoint = endpoint
        self.log = log
        self.name = name
        self.controlSocket = controlSocket
    }
    /// gossipctl arguments that reach this node's control socket.
    var socketArgs: [String] { ["--socket", controlSocket ?? "(none)"] }
    var pid: Int32 { process.processIdentifier }
    var logTail: String {
        ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").suffix(15).joined(separator: "\n")
    }
}

struct TimedOut: Error, CustomStringConvertible {
    let description: String
}

/// Starts and owns processes; `shutdown()` (also run by deinit) kills all of them.
final class Cluster: @unchecked Sendable {
    let dir: String
    private let lock = NSLock()
    private var processes: [Process] = []
    private var counter = 0
    let client: RPCClient
    /// With `secure`: the network key file every node of this cluster gets (`--network-key`).
    let networkKeyFile: String?
    /// The channel security of this test's own clients (the network key, an ephemeral identity).
    let security: ChannelSecurity?

    /// - Parameter secure: give every node a network key (written to `dir/network.key`).
    init(_ name: String, secure: Bool = false) throws {
        dir = NSTemporaryDirectory() + "gossip-e2e-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        if secure {
            let key = NetworkKey.generate()
            let path = dir + "/network.key"
            try key.write(to: path)
            networkKeyFile = path
            security = ChannelSecurity(networkKey: key, identity: .generate())
        } else {
            networkKeyFile = nil
            security = nil
        }
        client = security.map { RPCClient(security: $0) } ?? RPCClient()
    }

    /// gossipctl arguments for TCP to this cluster's nodes (`--network-key` when secure).
    var keyArgs: [String] { networkKeyFile.map { ["--network-key", $0] } ?? [] }

    deinit { shutdown() }

    /// The directory holding the built executables (next to the test bundle).
    static let binDir: String = {
        var url = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        // .../debug/gossipPackageTests.xctest (a file on Linux) or a bundle on Darwin.
        while !FileManager.default.fileExists(atPath: url.deletingLastPathComponent().appendingPathComponent("gossipd").path),
              url.pathComponents.count > 1 {
            url = url.deletingLastPathComponent()
        }
        return url.deletingLastPathComponent().path
    }()

    static func binary(_ name: String) -> String { binDir + "/" + name }

    /// The repository root (for tools/ scripts).
    static let repoRoot: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }()

    func shutdown() {
        let procs = lock.withLock { () -> [Process] in
            let p = processes
            processes.removeAll()
            return p
        }
        for p in procs where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in procs { p.waitUntilExit() }
        client.close()
        // The test's logs, ready files and state go with it (GOSSIP_KEEP_TEST_DIRS=1 keeps them).
        if ProcessInfo.processInfo.environment["GOSSIP_KEEP_TEST_DIRS"] == nil {
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    private func nextName(_ prefix: String) -> String {
        lock.withLock {
            counter += 1
            return "\(prefix)\(counter)"
        }
    }

    /// Starts `gossipd ARGS --ready-file F` and waits until F names the endpoint. Unless ARGS
    /// name one (or a --state-dir, whose default it then is), the node gets a control socket
    /// `dir/NAME.sock`; in a secure cluster, the network key.
    func start(_ args: [String], name: String? = nil, timeout: Double = 120) throws -> NodeProcess {
        let n = name ?? nextName(args.first ?? "node")
        let log = "\(dir)/\(n).log", ready = "\(dir)/\(n).ready"
        try? FileManager.default.removeItem(atPath: ready)
        FileManager.default.createFile(atPath: log, contents: nil)
        var extra: [String] = []
        var control: String?
        if let i = args.firstIndex(of: "--control-socket"), i + 1 < args.count {
            control = args[i + 1]
        } else if let i = args.firstIndex(of: "--state-dir"), i + 1 < args.count {
            control = args[i + 1] + "/control.sock"
        } else if args.first == "peer" || args.first == "bootstrap" {
            control = "\(dir)/\(n).sock"
            extra += ["--control-socket", control!]
        }
        if let k = networkKeyFile, !args.contains("--network-key"), !args.contains("--insecure") { extra += ["--network-key", k] }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Cluster.binary("gossipd"))
        p.arguments = args + extra + ["--ready-file", ready]
        let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        defer { try? fh.close() }      // the child has its own copy once started
        p.standardOutput = fh
        p.standardError = fh
        p.standardInput = FileHandle.nullDevice
        try p.run()
        lock.withLock { processes.append(p) }
        let until = Date().addingTimeInterval(timeout)
        while Date() < until {
            if let s = try? String(contentsOfFile: ready, encoding: .utf8), s.hasSuffix("\n") {
                let node = NodeProcess(process: p, endpoint: try Endpoint(parsing: s.trimmingCharacters(in: .whitespacesAndNewlines)),
                                       log: log, name: n, controlSocket: control)
                return node
            }
            if !p.isRunning {
                throw TimedOut(description: "\(n) exited (\(p.terminationStatus)) before ready:\n\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw TimedOut(description: "\(n) not ready within \(timeout) s:\n\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
    }

    func bootstrap(arch: String = "64,32,10", seed: Int = 1, extra: [String] = []) throws -> NodeProcess {
        try start(["bootstrap", "--listen", "127.0.0.1:0", "--arch", arch, "--seed", "\(seed)", "--log-level", "info"] + extra)
    }

    /// Training flags for a small, fast model (64,32,10) and for the tuned digits model (64,256,128,10).
    /// (`--input-noise 0` pins the value the tests were written with: an unset option now takes
    /// the dataset's default, 0.4 for digits.)
    static let fast = ["--lr", "0.05", "--batch", "32", "--input-noise", "0"]
    static let tuned = ["--lr", "0.2", "--batch", "128", "--input-noise", "0.4"]

    /// - Parameter converge: without `rounds`, let the peer end by convergence (SPEC §5.9);
    ///   false (the default) passes `--no-converge`, so a test's peers train until it stops them.
    func peer(_ extra: [String], shard: String, rounds: Int? = nil, stateDir: String? = nil,
              training: [String] = Cluster.fast, converge: Bool = false) throws -> NodeProcess {
        var args = ["peer", "--listen", "127.0.0.1:0", "--dataset", "digits", "--shard", shard, "--local-steps", "10",
                    "--eval-every", "2", "--exchange-timeout", "3", "--log-level", "info"] + training
        if let rounds { args += ["--rounds", "\(rounds)"] }
        if rounds == nil, !converge { args.append("--no-converge") }
        if let stateDir { args += ["--state-dir", stateDir, "--checkpoint-every", "3"] }
        return try start(args + extra)
    }

    /// Runs gossipctl and returns (exit status, stdout, stderr).
    func ctl(_ args: [String]) throws -> (Int32, String, String) {
        try Cluster.run(Cluster.binary("gossipctl"), args)
    }

    /// Runs `exe` to completion and returns (exit status, stdout, stderr). Both pipes are read
    /// at once (a child that fills one while we wait on the other would block forever); after
    /// `timeout` seconds the child is killed and `TimedOut` thrown.
    static func run(_ exe: String, _ args: [String], env: [String: String]? = nil,
                    timeout: Double = 300) throws -> (Int32, String, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        if let env { p.environment = env }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        defer {
            try? out.fileHandleForReading.close()
            try? err.fileHandleForReading.close()
        }
        try p.run()
        final class Output: @unchecked Sendable { var data = Data() }
        let o = Output(), e = Output()
        let group = DispatchGroup()
        for (pipe, sink) in [(out, o), (err, e)] {
            DispatchQueue.global().async(group: group) { sink.data = pipe.fileHandleForReading.readDataToEndOfFile() }
        }
        if group.wait(timeout: .now() + timeout) == .timedOut {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            _ = group.wait(timeout: .now() + 10)
            throw TimedOut(description: "\(exe) \(args.joined(separator: " ")) did not finish within \(timeout) s; killed")
        }
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o.data, as: UTF8.self), String(decoding: e.data, as: UTF8.self))
    }

    func status(_ n: NodeProcess) throws -> StatusReport {
        try Control(endpoint: n.endpoint, timeout: .seconds(10), security: security).status()
    }

    /// Polls `condition` until it holds; fails with `what` and the nodes' logs after `timeout`.
    func wait(_ what: String, timeout: Double = 120, nodes: [NodeProcess] = [], _ condition: () throws -> Bool) throws {
        try Cluster.wait(what, timeout: timeout, details: {
            nodes.map { "--- \($0.name) (\($0.endpoint)):\n\($0.logTail)" }.joined(separator: "\n")
        }, condition)
    }

    /// Polls `condition` every `interval` seconds until it holds (an error thrown by it counts
    /// as "not yet"); after `timeout` throws `TimedOut` naming `what`, the last error and
    /// `details()` (the nodes' logs, or whatever else explains the state).
    static func wait(_ what: String, timeout: Double = 120, interval: Double = 0.1, details: () -> String,
                     _ condition: () throws -> Bool) throws {
        let until = Date().addingTimeInterval(timeout)
        var lastError: Error?
        while Date() < until {
            do {
                if try condition() { return }
            } catch { lastError = error }
            Thread.sleep(forTimeInterval: interval)
        }
        throw TimedOut(description: "timed out after \(timeout) s waiting for: \(what) (last error: \(lastError.map { "\($0)" } ?? "none"))\n\(details())")
    }

    /// The current model of a node.
    func model(_ n: NodeProcess) throws -> ParameterSet {
        switch callSync(client, n.endpoint, .getModel, try WireCodec.encode(GetModelRequest(schemaHash: 0)), deadline: .seconds(10)) {
        case .success(let m): return try WireCodec.decodeModel(m.payload, expected: nil).1
        case .failure(let e): throw e
        }
    }

    /// Largest pairwise relative L2 distance between the nodes' models.
    func spread(_ nodes: [NodeProcess]) throws -> Double {
        let models = try nodes.map { try model($0) }
        var worst = 0.0
        for i in 0..<models.count { for j in (i + 1)..<models.count { worst = max(worst, Averaging.relativeL2Distance(models[i], models[j])) } }
        return worst
    }
}

/// The number after `name=` in a log line (`key=value` metadata).
func logField(_ name: String, _ line: String) throws -> Double {
    guard let r = line.range(of: name + "=") else { throw TimedOut(description: "no \(name) in: \(line)") }
    let num = line[r.upperBound...].prefix { "0123456789.e+-".contains($0) }
    guard let v = Double(num) else { throw TimedOut(description: "unreadable \(name) in: \(line)") }
    return v
}

/// A push-sum peer's final mass (SPEC §5.5: `push_sum_mass=` of its last "push-sum final mass"
/// log line) and the line itself.
func pushSumFinalMass(_ n: NodeProcess) throws -> (Double, String) {
    let log = try String(contentsOfFile: n.log, encoding: .utf8)
    guard let line = log.split(separator: "\n").last(where: { $0.contains("push-sum final mass") }) else {
        throw TimedOut(description: "\(n.name) logged no final mass:\n\(n.logTail)")
    }
    return (try logField("push_sum_mass", String(line)), String(line))
}
