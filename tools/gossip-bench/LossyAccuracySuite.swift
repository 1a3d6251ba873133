// lossy-accuracy: what a lossy wire encoding (SPEC §6.5, `--wire-dtype`) costs in final
// held-out accuracy, measured as the issue asks (4 peers, the synchronous exchange, each
// encoding against f32) and with the statistics the question needs.
//
// One run of a 4-peer network varies by about 0.7 points of accuracy on digits from seed to
// seed and from one run to the next (the pairings are random and timing-driven), so one run
// per encoding cannot tell a 0.2-point difference. The suite runs --seeds seeds; for each seed
// every encoding runs once (the order rotates with the seed, so load from elsewhere hits all
// alike), each a real network of the time-to-accuracy suite's sync row (TTANetwork: bootstrap +
// peers as processes, encrypted, --rounds of the dataset's recipe) with `--wire-dtype E` for
// every peer. --settle-s after the last peer's last round (the peers keep averaging, a lossy
// peer in F32: SPEC §6.5, the exact finish) the final models are fetched with GetModel and
// evaluated here on the held-out rows.
//
// Prints, per encoding E: lossy_acc_<dataset>_<E>_mean (percent, the mean over seeds of the
// peers' mean final accuracy) and _consensus (median over seeds of the largest pairwise
// relative L2 distance between the final models); per lossy E:
// lossy_acc_<dataset>_<E>_vs_f32_points (mean paired difference E - f32, in points) and
// _vs_f32_se (its standard error). With --each, every run's figures too.
import ArgumentParser
import Foundation
import GossipML
import GossipNode

struct LossyAccuracy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lossy-accuracy",
        abstract: "Final held-out accuracy of real 4-peer networks with each --wire-dtype against f32, over paired seeds.",
        discussion: "Prints lossy_acc_<dataset>_<E>_{mean,consensus} and, for each lossy E, lossy_acc_<dataset>_<E>_vs_f32_{points,se}. A run that fails prints its error on stderr and makes the suite exit 1.")
    @Option(help: "digits | mnist:DIR | fashion-mnist:DIR | csv:FILE") var dataset: String = "digits"
    @Option(help: "Encodings, comma-separated; f32 is always run (the baseline).") var encodings: String = "f32,bf16,fp16,int8"
    @Option(help: "Seeds 1...N; every encoding runs once per seed.") var seeds: Int = 10
    @Option(help: "Peers of each network.") var peers: Int = 4
    @Option(help: "Training rounds per peer (default: the dataset's).") var rounds: Int?
    @Option(name: .customLong("settle-s"), help: "Seconds the peers keep averaging after the last one finished its rounds, before the final models are fetched (every encoding alike; a lossy peer averages in F32 then: SPEC 6.5, the exact finish).") var settle: Double = 2
    @Flag(help: "Print every run's accuracy and consensus too.") var each = false
    @Option(help: "Seconds one run may take.") var timeout: Double = 1200
    @Option(help: "The gossipd binary (default: next to gossip-bench).") var gossipd: String?
    @Option(name: .customLong("peer-arg"), parsing: .unconditionalSingleValue, help: "Extra argument for every peer (repeatable).") var peerArgs: [String] = []

    func validate() throws {
        let known: Set<String> = ["f32", "bf16", "fp16", "int8"]
        let chosen = encodings.split(separator: ",").map(String.init)
        guard !chosen.isEmpty, Set(chosen).isSubset(of: known), Set(chosen).count == chosen.count else {
            throw ValidationError("--encodings '\(encodings)': use distinct values of f32,bf16,fp16,int8")
        }
        guard (1...1000).contains(seeds) else { throw ValidationError("--seeds must be within 1...1000") }
        guard (2...32).contains(peers) else { throw ValidationError("--peers must be within 2...32") }
        if let rounds, rounds < 1 { throw ValidationError("--rounds must be >= 1") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
        guard settle >= 0 && settle <= 600 else { throw ValidationError("--settle-s must be within 0...600") }
        if peerArgs.contains("--wire-dtype") { throw ValidationError("--peer-arg=--wire-dtype: the suite sets each encoding itself (--encodings)") }
        do { _ = try DatasetSource(parsing: dataset) } catch { throw ValidationError("--dataset: \(error)") }
    }

    func run() throws {
        let source = try DatasetSource(parsing: dataset)
        let exe = gossipd ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("gossipd").path
        guard FileManager.default.isExecutableFile(atPath: exe) else { throw fail("no gossipd at \(exe); build it (swift build) or give --gossipd PATH") }
        var encs = encodings.split(separator: ",").map(String.init)
        if !encs.contains("f32") { encs.insert("f32", at: 0) }
        let split = try source.load()
        let d = TrainingDefaults.forDataset(features: split.train.featureCount, classes: split.train.classCount)
        let r = rounds ?? d.rounds
        let dsKey: String = switch source {
        case .digits: "digits"
        case .mnist: "mnist"
        case .fashionMNIST: "fashion_mnist"
        case .csv: "csv"
        }
        out("dataset: \(source)")
        out("rounds: \(r)")
        out("peers: \(peers)")
        out("seeds: \(seeds)")
        // acc[e][s], cons[e][s]: nil where the run failed.
        var acc: [String: [Int: Double]] = [:], cons: [String: [Int: Double]] = [:]
        var allOK = true
        for s in 1...seeds {
            // Rotate the order with the seed: no encoding always runs first (warm caches, load).
            let order = (0..<encs.count).map { encs[($0 + s) % encs.count] }
            for e in order {
                var o = TTAOptions(source: source, gossipd: exe)
                o.rounds = r
                o.seed = UInt64(s)
                o.timeout = timeout
                o.evalEvery = r // the suite evaluates the final models itself
                o.settle = settle
                o.peerArgs = peerArgs + ["--wire-dtype", e]
                do {
                    let row = try TTANetwork(o, split: split, mode: "sync", peers: peers, rounds: r, target: 1).run(stragglerPace: nil)
                    let a = row.finalAccuracies.reduce(0, +) / Double(max(1, row.finalAccuracies.count)) * 100
                    acc[e, default: [:]][s] = a
                    cons[e, default: [:]][s] = row.consensus
                    if each { out("lossy_acc_\(dsKey)_\(e)_seed\(s): \(String(format: "%.3f", a)) consensus \(ttaFmt(row.consensus))") }
                } catch {
                    warn("gossip-bench lossy-accuracy: seed \(s), \(e): \(error)")
                    allOK = false
                }
            }
        }
        for e in encs {
            let v = Array(acc[e, default: [:]].values)
            out("lossy_acc_\(dsKey)_\(e)_mean: \(v.isEmpty ? "none" : String(format: "%.3f", v.reduce(0, +) / Double(v.count)))")
            let c = cons[e, default: [:]].values.sorted()
            out("lossy_acc_\(dsKey)_\(e)_consensus: \(c.isEmpty ? "none" : ttaFmt(c[c.count / 2]))")
        }
        for e in encs where e != "f32" {
            // Paired by seed: the same initial model, shards and shuffling.
            let diffs = (1...seeds).compactMap { s -> Double? in
                guard let a = acc[e]?[s], let b = acc["f32"]?[s] else { return nil }
                return a - b
            }
            guard !diffs.isEmpty else {
                out("lossy_acc_\(dsKey)_\(e)_vs_f32_points: none")
                continue
            }
            let m = diffs.reduce(0, +) / Double(diffs.count)
            out("lossy_acc_\(dsKey)_\(e)_vs_f32_points: \(String(format: "%+.3f", m))")
            if diffs.count > 1 {
                let variance = diffs.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(diffs.count - 1)
                out("lossy_acc_\(dsKey)_\(e)_vs_f32_se: \(String(format: "%.3f", (variance / Double(diffs.count)).squareRoot()))")
            } else {
                out("lossy_acc_\(dsKey)_\(e)_vs_f32_se: none")
            }
        }
        if !allOK { throw ExitCode.failure }
    }
}
