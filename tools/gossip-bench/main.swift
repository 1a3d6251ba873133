// gossip-bench: benchmark and check suites, one subcommand per suite. Argument parsing and
// output only (swift-argument-parser); each suite lives in its own file (TrainSuite.swift,
// GossipSimSuite.swift, WireSuite.swift, NetSuite.swift, TimeToAccuracySuite.swift) and prints `key: value` lines.
// Exit codes: 0 ok, 1 failure, 64 usage error.

import ArgumentParser
import Foundation
import GossipML
import GossipNet

/// Monotonic time in seconds.
func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// Writes a diagnostic line to stderr.
func warn(_ s: String) { Console.err.line(s) }

/// Writes one result line to stdout (a closed stdout ends the process quietly; see `Console`).
func out(_ s: String) { Console.out.line(s) }

/// Reports a failed suite on stderr; the command then exits 1.
func fail(_ message: String) -> ExitCode {
    warn("gossip-bench: \(message)")
    return ExitCode.failure
}

/// Training settings shared by train-accuracy, gossip-sim and export-digits. An option left
/// out takes the suite's default (see each suite).
struct TrainingOptions: ParsableArguments {
    @Option(help: "digits | mnist:DIR | fashion-mnist:DIR | csv:FILE") var dataset: String = "digits"
    @Option(help: "Model architecture, e.g. 64,256,128,10 (default: chosen for the dataset).") var arch: String?
    @Option(help: "Learning rate.") var lr: Float?
    @Option(help: "SGD momentum.") var momentum: Float?
    @Option(name: .customLong("weight-decay"), help: "Weight decay.") var weightDecay: Float?
    @Option(help: "Mini-batch size.") var batch: Int?
    @Option(help: "Seed of the initialization, shuffling and sharding.") var seed: UInt64 = 1
    @Option(help: "Std of Gaussian noise added to training inputs.") var noise: Float?
    @Option(help: "Random shift of the digits images, in pixels.") var shift: Int?
    @Option(help: "Learning-rate schedule: step (x0.1 after 75% of the epochs), cosine or none.") var schedule: String?
    @Option(name: .customLong("min-lr-frac"), help: "Cosine floor, as a fraction of --lr.") var minLrFrac: Float?
    @Option(help: "Validate on the last N training rows instead of the test rows.") var holdout: Int?

    func validate() throws {
        if let schedule, !["step", "cosine", "none"].contains(schedule) {
            throw ValidationError("--schedule '\(schedule)': use step, cosine or none")
        }
        if let holdout, holdout <= 0 { throw ValidationError("--holdout must be a positive row count") }
        if let batch, batch <= 0 { throw ValidationError("--batch must be positive") }
    }
}

struct GossipBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gossip-bench",
        abstract: "Benchmark and check suites; each prints `key: value` lines.",
        discussion: "Exit codes: 0 ok, 1 failure, 64 usage error.",
        subcommands: [Train.self, TrainAccuracy.self, GossipSim.self, ExportDigits.self, Wire.self, Net.self, SecureEcho.self, TimeToAccuracy.self, PeersFrozen.self, External.self, Link.self, MembershipSimCommand.self, MembershipScale.self, LossyAccuracy.self])
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Single-thread training samples/s vs numpy; averaging vs memcpy.")
    @Option(help: "Model architecture.") var arch: String = "784,256,128,10"
    @Option(help: "Mini-batch size.") var batch: Int = 64
    @Option(help: "Seconds to train (and to run the numpy reference).") var seconds: Double = 3

    func run() throws {
        guard batch > 0, seconds > 0 else { throw ValidationError("--batch and --seconds must be positive") }
        try runTrainSuite(arch: arch, batch: batch, seconds: seconds)
    }
}

struct TrainAccuracy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-accuracy",
        abstract: "Train centrally and report test accuracy (test_accuracy, test_loss, wall_s).")
    @OptionGroup var training: TrainingOptions
    @Option(help: "Epochs (default: 300 for digits, 12 otherwise).") var epochs: Int?
    @Option(help: "Also write the model as safetensors to FILE.") var out: String?

    func run() throws {
        if training.holdout != nil && out != nil { throw fail("--holdout models are not exported; drop --out") }
        try runTrainAccuracySuite(training, epochs: epochs, out: out)
    }
}

struct GossipSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gossip-sim",
        abstract: "N peers on shards in one process: K local steps, then random pairwise averaging.",
        discussion: "--schedule cosine (the default) spans rounds x local-steps steps; step is not supported.")
    @OptionGroup var training: TrainingOptions
    @Option(help: "Number of peers.") var peers: Int = 4
    @Option(help: "Rounds.") var rounds: Int = 60
    @Option(name: .customLong("local-steps"), help: "SGD steps per peer per round.") var localSteps: Int = 10
    @Option(name: .customLong("eval-every"), help: "Rounds between held-out evaluations.") var evalEvery: Int = 10
    @Option(name: .customLong("non-iid-alpha"), help: "Label-skewed shards with Dirichlet concentration ALPHA.") var nonIIDAlpha: Double?

    func run() throws {
        guard peers >= 1, rounds >= 1, localSteps >= 1 else {
            throw ValidationError("--peers, --rounds and --local-steps must be >= 1")
        }
        try runGossipSimSuite(training, peers: peers, rounds: rounds, localSteps: localSteps,
                              evalEvery: evalEvery, nonIIDAlpha: nonIIDAlpha)
    }
}

struct ExportDigits: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-digits",
        abstract: "Train on the bundled digits, export safetensors, print swift_accuracy.")
    @Argument(help: "The safetensors file to write.") var output: String
    @Option(help: "Epochs.") var epochs: Int = 20
    @Option(help: "Model architecture (default: 64,256,128,10).") var arch: String?
    @Option(help: "Seed.") var seed: UInt64 = 1
    @Option(help: "Std of Gaussian input noise.") var noise: Float?
    @Option(help: "Random shift in pixels.") var shift: Int?
    @Option(help: "Learning-rate schedule: step, cosine or none.") var schedule: String = "step"
    @Option(name: .customLong("min-lr-frac"), help: "Cosine floor, as a fraction of the learning rate.") var minLrFrac: Float?

    func run() throws {
        var training = try TrainingOptions.parse([])
        training.arch = arch
        training.seed = seed
        training.noise = noise
        training.shift = shift
        training.schedule = schedule
        training.minLrFrac = minLrFrac
        try training.validate()
        try runExportDigitsSuite(training, epochs: epochs, output: output)
    }
}

struct Wire: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Wire encode/decode throughput vs memcpy; zlib ratio with and without byte-shuffle.")
    @Argument(help: "Float32 weights in the exchanged model.") var floats: Int = 10_000_000

    func run() throws {
        guard floats >= 4 else { throw ValidationError("FLOATS must be at least 4") }
        do { try runWireSuite(floats: floats) } catch { throw fail("wire: \(error)") }
    }
}

struct Net: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "An RPC exchange over sockets vs a plain TCP echo of the same bytes; peak RSS.")
    @Option(help: "Sizes to run, from 1M,10M,100M.") var sizes: String = "1M,10M,100M"
    @Option(help: "Samples per size (default: 11, 7, 5).") var reps: Int?

    func run() throws {
        let chosen = Set(sizes.split(separator: ",").map(String.init))
        guard !chosen.isEmpty, chosen.isSubset(of: ["1M", "10M", "100M"]) else {
            throw ValidationError("--sizes '\(sizes)': use a comma-separated subset of 1M,10M,100M")
        }
        if let reps, reps <= 0 { throw ValidationError("--reps must be positive") }
        do { try runNetSuite(sizes: chosen, reps: reps) } catch { throw fail("net: \(error)") }
    }
}

struct SecureEcho: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secure-echo",
        abstract: "An echo RPC server behind the encrypted channel (SPEC §13) on 127.0.0.1, with a fresh random network key.",
        discussion: "For admission tests and experiments: nobody holds its key, so every connection must be refused. Writes its endpoint to --ready-file once listening, logs each refused connection on stderr, and serves until killed.")
    @Option(name: .customLong("ready-file"), help: "Where to write HOST:PORT once listening.") var readyFile: String

    func run() throws {
        do { try runSecureEcho(readyFile: readyFile) } catch { throw fail("secure-echo: \(error)") }
    }
}

struct PeersFrozen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peers-frozen",
        abstract: "Real gossipd peers on 127.0.0.1: the others' rounds/s while one peer is frozen (SIGSTOP), and bytes per completed exchange vs the model size.",
        discussion: "Prints others_rate_while_frozen (target >= 0.80) and bytes_per_exchange_vs_model (target <= 1.2 each way; SPEC 5.6). --delay-ms 50 makes every link a 100 ms round trip; --baseline repeats the run without Reserve (baseline_ keys).")
    @Option(help: "Peers (peer 0 is the one frozen).") var peers: Int = 4
    @Option(name: .customLong("normal-s"), help: "Seconds measured before the freeze.") var normalSeconds: Double = 25
    @Option(name: .customLong("frozen-s"), help: "Seconds peer 0 stays frozen.") var frozenSeconds: Double = 30
    @Option(name: .customLong("delay-ms"), help: "Delay of a relay in front of every peer, each way, in ms (0: none).") var delayMs: Int = 0
    @Option(help: "Passed to the peers as --averaging (sync | push-sum).") var averaging: String?
    @Option(help: "Model architecture.") var arch: String = "64,256,128,10"
    @Flag(help: "Also run without Reserve (the peers' --no-reserve) and print baseline_ keys.") var baseline = false
    @Option(name: .customLong("pace-ms"), help: "Minimum ms per round of every peer (0: flat out). With fewer cores than peers, a pace that keeps them off the CPU limit keeps a frozen peer's CPU share from flattering the others' rate.") var paceMs: Int = 0

    func run() throws {
        guard peers >= 2, normalSeconds > 0, frozenSeconds > 0, delayMs >= 0, paceMs >= 0 else {
            throw ValidationError("--peers must be >= 2, --normal-s and --frozen-s positive, --delay-ms and --pace-ms >= 0")
        }
        var o = PeersFrozenOptions()
        o.peers = peers
        o.normalSeconds = normalSeconds
        o.frozenSeconds = frozenSeconds
        o.delayMs = delayMs
        o.averaging = averaging
        o.arch = arch
        o.baseline = baseline
        o.paceMs = paceMs
        do { try runPeersFrozenSuite(o) } catch { throw fail("peers-frozen: \(error)") }
    }
}

struct External: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "external",
        abstract: "One ModelPull plus one ModelPush of a 10M-parameter model through a real external peer's control socket, vs writing and reading the same safetensors file (SPEC 5.12).",
        discussion: "Prints external_roundtrip_10M_ms, external_baseline_write_read_10M_ms, external_roundtrip_vs_baseline (target <= 4) and external_roundtrip_inline_10M_ms (the model through the socket).")
    @Option(help: "Runs of each; the best is printed.") var reps: Int = 5

    func run() throws {
        guard reps > 0 else { throw ValidationError("--reps must be positive") }
        do { try runExternalSuite(reps: reps) } catch { throw fail("external: \(error)") }
    }
}

Console.setUp(onClosedStdout: .exit)
GossipBench.main()
