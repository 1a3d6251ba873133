// `gossipd demo`: a whole local network as real child processes on 127.0.0.1 — a bootstrap
// and N peers on the bundled digits dataset by default — with live progress, the bootstrap
// killed halfway to show the network trains on without it, and a final report of every
// peer's accuracy and the consensus distance. The network is encrypted: the demo writes a
// network key into its work directory and gives it to every child; each child keeps its
// identity and control socket in its state directory, and the final stop goes over the
// control sockets. Every child it starts is stopped at the end.
import Foundation
import GossipML
import GossipNet
import GossipSecure
import GossipWire

/// Options of the demo.
public struct DemoOptions: Sendable {
    public var peers = 4
    public var dataset: DatasetSource = .digits
    /// Training settings; nil picks the dataset's default (see `TrainingDefaults`).
    public var architecture: String?
    public var rounds: Int?
    public var localSteps: Int?
    public var learningRate: Float?
    public var batch: Int?
    public var inputNoise: Float?
    public var pace: Duration?
    public var nonIIDAlpha: Double?
    public var seed: UInt64 = 1
    public var killBootstrap = true
    /// Relative L2 distance under which the demo calls the peers converged.
    public var consensusTarget = 0.01
    public var logLevel = "warning"
    /// Where to write the SVG of every peer's curves when the demo ends (nil: no plot).
    public var plot: String?
    public init() {}
}

/// The demo's result, for tests.
public struct DemoResult: Sendable {
    public var accuracies: [Double]
    public var consensusDistance: Double
    /// The peers' metrics logs (`--metrics-file`), in the work directory.
    public var metricsFiles: [String] = []
}

/// The demo's `--plot` file cannot be written (gossipd exits 73).
public struct DemoPlotError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// Runs the demo. `executable` is the gossipd binary to start children from.
public final class Demo: @unchecked Sendable {
    let options: DemoOptions
    let executable: String
    let out: (String) -> Void
    private let lock = NSLock()
    private var children: [Process] = []
    private let workDir: String

    public init(options: DemoOptions, executable: String, output: @escaping (String) -> Void = { emitLine($0) }) {
        self.options = options
        self.executable = executable
        self.out = output
        self.workDir = NSTemporaryDirectory() + "gossip-demo-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Kills every child still running (SIGKILL) and waits for them.
    public func killAll() {
        let procs = lock.withLock { children }
        for p in procs where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in procs { p.waitUntilExit() }
    }

    private func spawn(_ args: [String], log: String) throws -> Process {
        let p = try spawnLogged(executable, args, log: log)
        lock.withLock { children.append(p) }
        return p
    }

    private func waitForFile(_ path: String, _ what: String, process: Process, log: String, timeout: Double = 60) throws -> String {
        let until = Date().addingTimeInterval(timeout)
        while Date() < until {
            if let s = try? String(contentsOfFile: path, encoding: .utf8), !s.isEmpty {
                return s.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            if !process.isRunning {
                let tail = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").suffix(5).joined(separator: "\n") ?? ""
                throw NodeError("\(what) exited with status \(process.terminationStatus) before it was ready; its log \(log) ends:\n\(tail)")
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw NodeError("\(what) was not ready after \(Int(timeout)) s; see \(log)")
    }

    /// Runs the whole demo; stops every child before returning or throwing.
    public func run() throws -> DemoResult {
        defer { killAll() }
        if let plot = options.plot {
            // Fail before training, not after it, when the picture could not be written.
            let dir = URL(fileURLWithPath: plot).deletingLastPathComponent().path
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue, access(dir, W_OK) == 0 else {
                throw DemoPlotError(message: "cannot write the plot '\(plot)': its directory \(dir) does not exist or is not writable; give another --plot")
            }
        }
        try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
        let split = try options.dataset.load()
        let d = TrainingDefaults.forDataset(features: split.train.featureCount, classes: split.train.classCount)
        let arch = try MLPArchitecture(parsing: options.architecture ?? d.architecture)
        let rounds = options.rounds ?? d.rounds, localSteps = options.localSteps ?? d.localSteps
        let lr = options.learningRate ?? d.learningRate, batch = options.batch ?? d.batch
        let noise = options.inputNoise ?? d.inputNoise, pace = options.pace ?? d.demoPace
        out("gossip demo: a bootstrap and \(options.peers) peers on 127.0.0.1, dataset \(options.dataset) (\(split.train.count) training rows, \(split.test.count) held out), model \(arch), \(rounds) rounds of \(localSteps) SGD steps (lr \(lr) cosine, batch \(batch))")
        out("logs and checkpoints: \(workDir)")
        // The demo's network is encrypted: one network key for all, each node's identity in its
        // state directory, control requests (the final stop) over each node's control socket.
        let keyPath = workDir + "/network.key"
        let networkKey = NetworkKey.generate()
        try networkKey.write(to: keyPath)
        let channel = ChannelSecurity(networkKey: networkKey, identity: .generate())
        out("network key: \(keyPath) (every connection encrypted: Noise_XXpsk3_25519_AESGCM_SHA256); control sockets in the state directories")

        let bootLog = workDir + "/bootstrap.log", bootReady = workDir + "/bootstrap.ready"
        let boot = try spawn(["bootstrap", "--exit-with-parent", "--listen", "127.0.0.1:0", "--arch", arch.description, "--seed", "\(options.seed)",
                              "--network-key", keyPath, "--state-dir", workDir + "/bootstrap",
                              "--ready-file", bootReady, "--log-level", options.logLevel], log: bootLog)
        let bootEndpoint = try waitForFile(bootReady, "bootstrap", process: boot, log: bootLog)
        out("bootstrap  \(bootEndpoint)")

        var peerProcs: [Process] = []
        var readies: [(String, String)] = []
        let metricsFiles = (0..<options.peers).map { workDir + "/peer\($0).metrics.jsonl" }
        for i in 0..<options.peers {
            let log = workDir + "/peer\(i).log", ready = workDir + "/peer\(i).ready"
            var args = ["peer", "--exit-with-parent", "--listen", "127.0.0.1:0", "--bootstrap", bootEndpoint, "--dataset", options.dataset.description,
                        "--shard", "\(i)/\(options.peers)", "--rounds", "\(rounds)", "--local-steps", "\(localSteps)",
                        "--lr", "\(lr)", "--batch", "\(batch)", "--input-noise", "\(noise)", "--seed", "\(options.seed)",
                        "--pace-ms", "\(Int(pace.seconds * 1000))", "--eval-every", "\(max(1, rounds / 20))",
                        "--state-dir", workDir + "/peer\(i)", "--network-key", keyPath,
                        "--ready-file", ready, "--log-level", options.logLevel, "--metrics-file", metricsFiles[i]]
            if let a = options.nonIIDAlpha { args += ["--non-iid", "\(a)"] }
            peerProcs.append(try spawn(args, log: log))
            readies.append((ready, log))
        }
        var endpoints: [Endpoint] = []
        for (i, (ready, log)) in readies.enumerated() {
            let ep = try waitForFile(ready, "peer \(i)", process: peerProcs[i], log: log)
            endpoints.append(try Endpoint(parsing: ep))
            out("peer \(i)     \(ep)  shard \(i)/\(options.peers)")
        }
        let controls = endpoints.map { Control(endpoint: $0, timeout: .seconds(5), security: channel) }
        let client = RPCClient(security: channel)
        defer { client.close() }

        func fetchModels() -> [ParameterSet]? {
            var models: [ParameterSet] = []
            for ep in endpoints {
                guard case .success(let m) = callSync(client, ep, .getModel, try! WireCodec.encode(GetModelRequest(schemaHash: 0)), deadline: .seconds(5)),
                      let (_, p, _) = try? WireCodec.decodeModel(m.payload, expected: nil) else { return nil }
                models.append(p)
            }
            return models
        }
        func distance() -> Double? {
            guard let models = fetchModels() else { return nil }
            var worst = 0.0
            for i in 0..<models.count { for j in (i + 1)..<models.count { worst = max(worst, Averaging.relativeL2Distance(models[i], models[j])) } }
            return worst
        }

        let start = Date()
        var bootstrapKilled = !options.killBootstrap
        var bootstrapKilledAt: Date?
        var trainingDoneAt: Date?
        var last: [StatusReport] = []
        var spread = Double.infinity
        out("")
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        out(" time  " + (0..<options.peers).map { pad("| peer \($0)", 21) }.joined() + "| spread")
        out("       " + (0..<options.peers).map { _ in "| round  loss    acc " }.joined() + "| (max rel. L2)")
        while true {
            Thread.sleep(forTimeInterval: 0.5)
            var statuses: [StatusReport] = []
            for c in controls {
                guard let s = try? c.status() else { throw NodeError("peer \(c.endpoint) stopped answering; see its log in \(workDir)") }
                statuses.append(s)
            }
            last = statuses
            spread = distance() ?? spread
            let cells = statuses.map { s -> String in
                let acc = s.accuracy.map { String(format: "%5.1f%%", $0 * 100) } ?? "    - "
                let loss = s.loss.map { String(format: "%5.3f", $0) } ?? "  -  "
                return "| " + String(format: "%5d", s.round) + " " + loss + " " + acc + " "
            }
            out(String(format: "%5.1fs ", Date().timeIntervalSince(start)) + cells.joined()
                + (spread.isFinite ? String(format: "| %.2f%%", spread * 100) : "| -"))
            let minRound = statuses.map(\.round).min() ?? 0
            if !bootstrapKilled && minRound >= rounds / 2 {
                kill(boot.processIdentifier, SIGKILL)
                boot.waitUntilExit()
                bootstrapKilled = true
                bootstrapKilledAt = Date()
                out("-- bootstrap killed (SIGKILL) at round \(minRound): the peers train on without it")
            }
            if minRound >= rounds {
                if trainingDoneAt == nil { trainingDoneAt = Date() }
                let accReady = statuses.allSatisfy { $0.accuracy != nil }
                if accReady && spread <= options.consensusTarget { break }
                if Date().timeIntervalSince(trainingDoneAt!) > 20 { break }
            }
            if Date().timeIntervalSince(start) > 600 { throw NodeError("the demo did not finish within 10 minutes; see logs in \(workDir)") }
        }
        // Final accuracy of each peer's current model, evaluated here on the held-out rows.
        let finalModels = fetchModels()
        let accuracies = last.enumerated().map { i, s in
            finalModels.map { evaluate(architecture: arch, parameters: $0[i], on: split.test).accuracy } ?? (s.accuracy ?? 0)
        }
        out("")
        out("final:")
        for (i, s) in last.enumerated() {
            out(String(format: "  peer %d  %@  accuracy %.2f%% on %d held-out rows  round %d  exchanges %d", i, s.endpoint,
                       accuracies[i] * 100, split.test.count, s.round, s.exchanges.done))
        }
        out(String(format: "  consensus distance (largest pairwise relative L2 between peer models): %.3f%%", spread * 100))
        for i in endpoints.indices { try? Control(socketPath: workDir + "/peer\(i)/control.sock", timeout: .seconds(5)).stop() }
        let until = Date().addingTimeInterval(10)
        for p in peerProcs { while p.isRunning && Date() < until { Thread.sleep(forTimeInterval: 0.02) } }
        out("all nodes stopped")
        if let plot = options.plot {
            let marks = bootstrapKilledAt.map { [PlotMarker(time: $0.timeIntervalSince1970, label: "bootstrap killed")] } ?? []
            try writePlot(plot, files: metricsFiles, markers: marks)
        }
        return DemoResult(accuracies: accuracies, consensusDistance: spread, metricsFiles: metricsFiles)
    }

    /// Draws the peers' metrics logs into `path` (SVG).
    private func writePlot(_ path: String, files: [String], markers: [PlotMarker]) throws {
        let r = try SVGPlot.render(files: files, title: "gossip demo: \(options.peers) peers on \(options.dataset)", markers: markers) { out("plot: note: \($0)") }
        do {
            try Data(r.svg.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw DemoPlotError(message: "cannot write the plot '\(path)': \((error as NSError).localizedDescription)")
        }
        out("plot: wrote \(path) (\(r.records) records from \(r.nodes) peers; metrics logs in \(workDir))")
    }
}

/// Starts `executable args` with stdout and stderr in `log` (created anew) and no stdin (the
/// demo's nodes, the benches' children).
public func spawnLogged(_ executable: String, _ args: [String], log: String) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    guard FileManager.default.createFile(atPath: log, contents: nil) else {
        throw NodeError("cannot create the log file \(log)")
    }
    let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
    p.standardOutput = fh
    p.standardError = fh
    p.standardInput = FileHandle.nullDevice
    try p.run()
    try? fh.close()   // the child has its own copy
    return p
}
