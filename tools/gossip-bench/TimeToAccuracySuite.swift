// time-to-accuracy: how long real networks take to reach a held-out accuracy target, and how
// many SGD steps they spend on the way (issue 10, items 4, 7 and 8).
//
// Every row runs real `gossipd` processes on 127.0.0.1, encrypted with a network key the suite
// generates (like `gossipd demo`): a bootstrap (architecture and training settings: the
// dataset's defaults, TrainingDefaults.swift, unless --arch/--lr/... are given) and
//   central   one peer holding the whole training set (shard 0/1): centralized training with
//             the same recipe and the same number of rounds as each gossip peer;
//   sync      --peers peers on shards I/N, the synchronous pairwise exchange (gossipd's default);
//   push-sum  the same with `--averaging push-sum`.
// The suite polls every peer's status (held-out accuracy is evaluated by each peer every
// --eval-every rounds) and records the first poll at which EVERY peer's accuracy is >= the
// target: the wall time since the peers were all ready, the SGD steps of all peers together at
// that poll (`steps_total`) and per peer (`steps_per_peer`: what a deployment with one machine
// per peer waits for; here N peers share the machine's cores). When every peer has finished its
// rounds the suite fetches each model (GetModel, as `gossipctl model` does), evaluates it here
// on the held-out rows (`final_acc_mean`, `final_acc_min`) and reports the largest pairwise
// relative L2 distance between the models (`consensus`). Every process is killed at the end.
//
// Keys: tta_<dataset>[_noniid]_<mode>_<metric>, e.g. `tta_digits_sync_seconds: 12.3`; a row
// that does not reach the target prints `none` for its time and steps.
// --straggler-factor F (item 4): after the row without a straggler, the same row again with the
// last peer paced (--pace-ms) at F times the mean round time measured in that first run; prints
// the other peers' time to target with and without it and `straggler_<mode>_vs_none` (with /
// without; with --repeat R the medians of R runs each, alternating). `straggler_pushsum_vs_none`
// uses the key the issue names.
import ArgumentParser
import Foundation
import GossipML
import GossipNet
import GossipNode
import GossipSecure

struct TimeToAccuracy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "time-to-accuracy",
        abstract: "Real gossipd networks (centralized, sync, push-sum) on 127.0.0.1: wall time and SGD steps until every peer reaches a held-out accuracy target.",
        discussion: "Prints tta_<dataset>[_noniid]_<mode>_{seconds,steps_total,steps_per_peer,final_acc_mean,final_acc_min,consensus,wall_s}; with --straggler-factor also straggler_<mode>_{others_seconds_none,others_seconds,vs_none}. A row that fails to start or misses --timeout prints its error on stderr and makes the suite exit 1.")
    @Option(help: "digits | mnist:DIR | fashion-mnist:DIR | csv:FILE") var dataset: String = "digits"
    @Option(help: "Rows to run, comma-separated: central, sync, push-sum.") var modes: String = "central,sync,push-sum"
    @Option(help: "Peers of the sync and push-sum rows.") var peers: Int = 4
    @Option(help: "Training rounds per peer (default: the dataset's, 60 for digits, 150 for 28x28 images).") var rounds: Int?
    @Option(help: "Held-out accuracy target (default: 0.93 for digits, 0.97 otherwise).") var target: Double?
    @Option(name: .customLong("non-iid"), help: "Label-skewed shards with Dirichlet concentration ALPHA.") var nonIID: Double?
    @Option(name: .customLong("straggler-factor"), help: "Also run each gossip row with its last peer this many times slower (--pace-ms).") var stragglerFactor: Double?
    @Option(name: .customLong("eval-every"), help: "Rounds between each peer's held-out evaluations.") var evalEvery: Int = 1
    @Option(help: "Model architecture (default: the bootstrap's suggestion for the dataset).") var arch: String?
    @Option(help: "Learning rate (default: the dataset's).") var lr: Float?
    @Option(help: "Mini-batch size (default: the dataset's).") var batch: Int?
    @Option(name: .customLong("local-steps"), help: "SGD steps per round (default: the dataset's).") var localSteps: Int?
    @Option(help: "Seed of the initial model, shuffling and sharding.") var seed: UInt64 = 1
    @Option(help: "With --straggler-factor: runs with and without the straggler (alternating); their medians are compared.") var `repeat`: Int = 1
    @Option(help: "Seconds one row may run before it is stopped and reported as failed.") var timeout: Double = 600
    @Option(help: "The gossipd binary (default: next to gossip-bench).") var gossipd: String?
    @Option(name: .customLong("peer-arg"), parsing: .unconditionalSingleValue, help: "Extra argument for every peer (repeatable), e.g. --peer-arg=--compression --peer-arg=zlib.") var peerArgs: [String] = []

    func validate() throws {
        let known: Set<String> = ["central", "sync", "push-sum"]
        let chosen = modes.split(separator: ",").map(String.init)
        guard !chosen.isEmpty, Set(chosen).isSubset(of: known) else {
            throw ValidationError("--modes '\(modes)': use a comma-separated subset of central,sync,push-sum")
        }
        guard peers >= 2 && peers <= 32 else { throw ValidationError("--peers must be within 2...32") }
        if let rounds, rounds < 1 { throw ValidationError("--rounds must be >= 1") }
        if let target, !(target > 0 && target <= 1) { throw ValidationError("--target must be within (0, 1]") }
        if let nonIID, !(nonIID > 0) { throw ValidationError("--non-iid must be positive") }
        if let f = stragglerFactor, !(f >= 1 && f <= 100) { throw ValidationError("--straggler-factor must be within 1...100") }
        guard (1...15).contains(`repeat`) else { throw ValidationError("--repeat must be within 1...15") }
        guard evalEvery >= 1, timeout > 0 else { throw ValidationError("--eval-every must be >= 1 and --timeout positive") }
        if let lr, !(lr > 0) { throw ValidationError("--lr must be positive") }
        if let batch, batch < 1 { throw ValidationError("--batch must be >= 1") }
        if let localSteps, localSteps < 1 { throw ValidationError("--local-steps must be >= 1") }
        do { _ = try DatasetSource(parsing: dataset) } catch { throw ValidationError("--dataset: \(error)") }
    }

    func run() throws {
        let source = try DatasetSource(parsing: dataset)
        let exe = gossipd ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("gossipd").path
        guard FileManager.default.isExecutableFile(atPath: exe) else { throw fail("no gossipd at \(exe); build it (swift build) or give --gossipd PATH") }
        var o = TTAOptions(source: source, gossipd: exe)
        o.rounds = rounds
        o.target = target
        o.nonIID = nonIID
        o.evalEvery = evalEvery
        o.arch = arch
        o.lr = lr
        o.batch = batch
        o.localSteps = localSteps
        o.seed = seed
        o.timeout = timeout
        o.peerArgs = peerArgs
        let ok = try runTimeToAccuracySuite(o, modes: modes.split(separator: ",").map(String.init), peers: peers,
                                            stragglerFactor: stragglerFactor, repeats: `repeat`)
        if !ok { throw ExitCode.failure }
    }
}

/// Settings of one time-to-accuracy invocation.
struct TTAOptions {
    var source: DatasetSource
    var gossipd: String
    var rounds: Int?
    var target: Double?
    var nonIID: Double?
    var evalEvery = 1
    var arch: String?
    var lr: Float?
    var batch: Int?
    var localSteps: Int?
    var seed: UInt64 = 1
    var timeout: Double = 600
    var peerArgs: [String] = []
    /// Seconds the peers keep averaging after the last one finished its rounds, before the
    /// final models are fetched (0: at once).
    var settle: Double = 0
}

/// What one network run measured.
struct TTARow {
    /// Seconds from "every peer ready" until every peer (of `watched`) had accuracy >= target; nil if never.
    var seconds: Double?
    var stepsTotal: Int?
    var stepsPerPeer: Double?
    /// The same for the peers of `others` (all but the straggler), when asked.
    var othersSeconds: Double?
    var finalAccuracies: [Double] = []
    var consensus: Double = .nan
    var wall: Double = 0
    /// Mean seconds per round of the peers over the whole run.
    var roundSeconds: Double = 0
}

/// Runs the rows; returns false when one failed.
func runTimeToAccuracySuite(_ o: TTAOptions, modes: [String], peers: Int, stragglerFactor: Double?, repeats: Int = 1) throws -> Bool {
    let split = try o.source.load()
    let d = TrainingDefaults.forDataset(features: split.train.featureCount, classes: split.train.classCount)
    let rounds = o.rounds ?? d.rounds
    let target = o.target ?? (o.source == .digits ? 0.93 : 0.97)
    let dsKey: String = {
        switch o.source {
        case .digits: return "digits"
        case .mnist: return "mnist"
        case .fashionMNIST: return "fashion_mnist"
        case .csv: return "csv"
        }
    }() + (o.nonIID != nil ? "_noniid" : "")
    out("dataset: \(o.source)")
    out("target: \(target)")
    out("rounds: \(rounds)")
    out("peers: \(peers)")
    if let a = o.nonIID { out("non_iid_alpha: \(a)") }
    var allOK = true
    for mode in modes {
        let n = mode == "central" ? 1 : peers
        let key = "tta_\(dsKey)_\(mode.replacingOccurrences(of: "-", with: ""))"
        let row: TTARow
        do {
            row = try TTANetwork(o, split: split, mode: mode, peers: n, rounds: rounds, target: target).run(stragglerPace: nil)
        } catch {
            warn("gossip-bench time-to-accuracy: row \(mode): \(error)")
            out("\(key)_error: \(String(describing: error).split(separator: "\n").first ?? "")")
            allOK = false
            continue
        }
        printRow(key, row, peers: n)
        guard let f = stragglerFactor, mode != "central" else { continue }
        let skey = "straggler_\(mode.replacingOccurrences(of: "-", with: ""))"
        // The straggler's minimum round time: F times the flat-out mean round time just measured.
        let paceMs = Int((row.roundSeconds * f * 1000).rounded())
        out("\(skey)_round_ms_none: \(ttaFmt(row.roundSeconds * 1000))")
        out("\(skey)_pace_ms: \(paceMs)")
        do {
            // --repeat R: R runs with the straggler and R without (the first: the row above),
            // alternating, so load from elsewhere hits both alike; the medians are compared.
            var none = [row.othersSeconds ?? .infinity], with: [Double] = []
            var slow = TTARow()
            for r in 0..<repeats {
                if r > 0 {
                    let again = try TTANetwork(o, split: split, mode: mode, peers: n, rounds: rounds, target: target).run(stragglerPace: nil)
                    none.append(again.othersSeconds ?? .infinity)
                }
                slow = try TTANetwork(o, split: split, mode: mode, peers: n, rounds: rounds, target: target).run(stragglerPace: paceMs)
                with.append(slow.othersSeconds ?? .infinity)
            }
            func median(_ v: [Double]) -> Double { let s = v.sorted(); return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2 }
            if repeats > 1 {
                out("\(skey)_others_seconds_none_runs: \(none.map(ttaFmt).joined(separator: ","))")
                out("\(skey)_others_seconds_runs: \(with.map(ttaFmt).joined(separator: ","))")
            }
            let a = median(with), b = median(none)
            out("\(skey)_others_seconds_none: \(ttaFmt(b))")
            out("\(skey)_others_seconds: \(ttaFmt(a))")
            out("\(skey)_vs_none: \(a.isFinite && b.isFinite && b > 0 ? ttaFmt(a / b) : "none")")
            out("\(skey)_final_acc_mean: \(ttaFmt(slow.finalAccuracies.reduce(0, +) / Double(max(1, slow.finalAccuracies.count))))")
            out("\(skey)_consensus: \(ttaFmt(slow.consensus))")
        } catch {
            warn("gossip-bench time-to-accuracy: straggler row \(mode): \(error)")
            out("\(skey)_error: \(String(describing: error).split(separator: "\n").first ?? "")")
            allOK = false
        }
    }
    return allOK
}

func ttaFmt(_ v: Double) -> String { v.isFinite ? String(format: "%.4g", v) : "none" }

private func printRow(_ key: String, _ r: TTARow, peers: Int) {
    out("\(key)_seconds: \(r.seconds.map(ttaFmt) ?? "none")")
    out("\(key)_steps_total: \(r.stepsTotal.map(String.init) ?? "none")")
    out("\(key)_steps_per_peer: \(r.stepsPerPeer.map(ttaFmt) ?? "none")")
    let mean = r.finalAccuracies.reduce(0, +) / Double(max(1, r.finalAccuracies.count))
    out("\(key)_final_acc_mean: \(ttaFmt(mean))")
    out("\(key)_final_acc_min: \(ttaFmt(r.finalAccuracies.min() ?? .nan))")
    out("\(key)_consensus: \(peers > 1 ? ttaFmt(r.consensus) : "0")")
    out("\(key)_wall_s: \(ttaFmt(r.wall))")
}

struct TTAError: Error, CustomStringConvertible { let description: String }

/// One network: a bootstrap and `peers` peers as child processes; killed (SIGKILL, by pid)
/// when `run` returns or throws.
final class TTANetwork {
    let o: TTAOptions
    let split: DatasetSplit
    let mode: String
    let peers: Int
    let rounds: Int
    let target: Double
    let dir: String
    private var children: [Process] = []

    init(_ o: TTAOptions, split: DatasetSplit, mode: String, peers: Int, rounds: Int, target: Double) {
        self.o = o
        self.split = split
        self.mode = mode
        self.peers = peers
        self.rounds = rounds
        self.target = target
        dir = NSTemporaryDirectory() + "gossip-tta-\(getpid())-\(mode)-\(UInt32.random(in: 0...UInt32.max))"
    }

    deinit { killAll() }

    func killAll() {
        for p in children where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in children { p.waitUntilExit() }
        children = []
    }

    private func spawn(_ args: [String], log: String) throws -> Process {
        let p = try spawnLogged(o.gossipd, args, log: log)
        children.append(p)
        return p
    }

    private func waitReady(_ path: String, _ what: String, _ p: Process, _ log: String, deadline: Double) throws -> String {
        try waitReadyFile(path, what: what, process: p, log: log, until: deadline)
    }

    /// Runs the network to the end of its rounds. With `stragglerPace`, the last peer gets
    /// `--pace-ms stragglerPace` and `othersSeconds` counts the other peers only.
    func run(stragglerPace: Int?) throws -> TTARow {
        defer {
            killAll()
            try? FileManager.default.removeItem(atPath: dir)
        }
        let t0 = now()
        let deadline = t0 + o.timeout
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let keyPath = dir + "/network.key"
        let key = NetworkKey.generate()
        try key.write(to: keyPath)
        let security = ChannelSecurity(networkKey: key, identity: .generate())

        var bootArgs = ["bootstrap", "--exit-with-parent", "--listen", "127.0.0.1:0", "--seed", "\(o.seed)", "--network-key", keyPath,
                        "--ready-file", dir + "/boot.ready", "--log-level", "warning"]
        if let a = o.arch { bootArgs += ["--arch", a] } else { bootArgs += ["--dataset", o.source.description] }
        let boot = try spawn(bootArgs, log: dir + "/boot.log")
        let bootEP = try waitReady(dir + "/boot.ready", "bootstrap", boot, dir + "/boot.log", deadline: deadline)

        var procs: [Process] = []
        for i in 0..<peers {
            var args = ["peer", "--exit-with-parent", "--listen", "127.0.0.1:0", "--bootstrap", bootEP, "--dataset", o.source.description,
                        "--shard", "\(i)/\(peers)", "--rounds", "\(rounds)", "--seed", "\(o.seed)", "--eval-every", "\(o.evalEvery)",
                        "--network-key", keyPath, "--ready-file", dir + "/peer\(i).ready", "--log-level", "warning"]
            if let v = o.lr { args += ["--lr", "\(v)"] }
            if let v = o.batch { args += ["--batch", "\(v)"] }
            if let v = o.localSteps { args += ["--local-steps", "\(v)"] }
            if let a = o.nonIID, peers > 1 { args += ["--non-iid", "\(a)"] }
            if mode == "push-sum" { args += ["--averaging", "push-sum"] }
            if let pace = stragglerPace, i == peers - 1 { args += ["--pace-ms", "\(pace)"] }
            args += o.peerArgs
            procs.append(try spawn(args, log: dir + "/peer\(i).log"))
        }
        var controls: [Control] = []
        for i in 0..<peers {
            let ep = try waitReady(dir + "/peer\(i).ready", "peer \(i)", procs[i], dir + "/peer\(i).log", deadline: deadline)
            controls.append(Control(endpoint: try Endpoint(parsing: ep), timeout: .seconds(10), security: security))
        }
        let start = now()
        let others = stragglerPace == nil ? Array(0..<peers) : Array(0..<(peers - 1))
        var row = TTARow()
        while true {
            guard now() < deadline else { throw TTAError(description: "the \(mode) row did not finish \(rounds) rounds within --timeout \(Int(o.timeout)) s; logs in \(dir)") }
            var statuses: [StatusReport] = []
            for (i, c) in controls.enumerated() {
                do { statuses.append(try c.status()) } catch {
                    throw TTAError(description: "peer \(i) stopped answering (\(error)); exit status \(procs[i].isRunning ? "running" : "\(procs[i].terminationStatus)")")
                }
            }
            let t = now() - start
            func reached(_ idx: [Int]) -> Bool { idx.allSatisfy { (statuses[$0].accuracy ?? 0) >= target } }
            if row.seconds == nil && reached(Array(0..<peers)) {
                row.seconds = t
                let steps = statuses.map(\.step).reduce(0, +)
                row.stepsTotal = steps
                row.stepsPerPeer = Double(steps) / Double(peers)
            }
            if row.othersSeconds == nil && reached(others) { row.othersSeconds = t }
            if statuses.allSatisfy({ $0.round >= rounds }) {
                row.roundSeconds = t / Double(rounds)
                break
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        if o.settle > 0 { Thread.sleep(forTimeInterval: o.settle) }
        // Final models, evaluated here on the held-out rows.
        var models: [ParameterSet] = []
        for (i, c) in controls.enumerated() {
            let path = dir + "/final\(i).safetensors"
            do { _ = try c.exportModel(to: path) } catch { throw TTAError(description: "peer \(i): GetModel failed: \(error)") }
            let (p, meta) = try SafeTensors.read(path: path)
            let a = try MLPArchitecture(parsing: meta["arch"] ?? "")
            models.append(p)
            row.finalAccuracies.append(evaluate(architecture: a, parameters: p, on: split.test).accuracy)
        }
        var worst = 0.0
        for i in 0..<models.count { for j in (i + 1)..<models.count { worst = max(worst, Averaging.relativeL2Distance(models[i], models[j])) } }
        row.consensus = worst
        row.wall = now() - start
        return row
    }
}
