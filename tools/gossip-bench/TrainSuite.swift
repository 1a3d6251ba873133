// Training suites of gossip-bench: throughput vs numpy and memcpy, accuracy runs, export.

import Foundation
import GossipML


func fail(_ message: String) -> Int32 {
    FileHandle.standardError.write(Data("gossip-bench: \(message)\n".utf8))
    return 1
}

/// Parses `--key value` options; returns nil (after printing) on a malformed list.
func parseOptions(_ args: [String], allowed: Set<String>) -> (options: [String: String], positional: [String])? {
    var opts: [String: String] = [:]
    var pos: [String] = []
    var i = 0
    while i < args.count {
        let a = args[i]
        if a.hasPrefix("--") {
            let key = String(a.dropFirst(2))
            guard allowed.contains(key), i + 1 < args.count else {
                FileHandle.standardError.write(Data("gossip-bench: unknown or incomplete option '\(a)'\n\(usage)\n".utf8))
                return nil
            }
            opts[key] = args[i + 1]
            i += 2
        } else {
            pos.append(a)
            i += 1
        }
    }
    return (opts, pos)
}

/// Directory holding tools/ scripts: derived from this source file, else the working directory.
func toolsDirectory() -> String {
    let fromSource = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().path
    if FileManager.default.fileExists(atPath: fromSource + "/numpy_train_bench.py") { return fromSource }
    return FileManager.default.currentDirectoryPath + "/tools"
}

/// Runs the numpy reference; returns its samples/s or nil when python3/numpy is unavailable.
func runNumpyBench(arch: String, batch: Int, seconds: Double) -> Double? {
    let script = toolsDirectory() + "/numpy_train_bench.py"
    guard FileManager.default.fileExists(atPath: script) else { return nil }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", script, "--arch", arch, "--batch", "\(batch)", "--seconds", "\(seconds)"]
    var env = ProcessInfo.processInfo.environment
    env["OPENBLAS_NUM_THREADS"] = "1"; env["OMP_NUM_THREADS"] = "1"; env["MKL_NUM_THREADS"] = "1"
    p.environment = env
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    do { try p.run() } catch { return nil }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0, let text = String(data: data, encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("numpy_samples_per_s:") {
        return Double(line.dropFirst("numpy_samples_per_s:".count).trimmingCharacters(in: .whitespaces))
    }
    return nil
}

/// `gossip-bench train`: single-thread training samples/s vs numpy, averaging vs memcpy.
func runTrainSuite(_ args: [String]) -> Int32 {
    guard let (opts, _) = parseOptions(args, allowed: ["arch", "batch", "seconds"]) else { return 64 }
    do {
        let arch = try MLPArchitecture(parsing: opts["arch"] ?? "784,256,128,10")
        let batch = Int(opts["batch"] ?? "64") ?? 64
        let seconds = Double(opts["seconds"] ?? "3") ?? 3
        // Synthetic data: speed, not accuracy.
        var rng = SeededGenerator(seed: 42)
        let rows = 4096
        let feats = (0..<(rows * arch.inputSize)).map { _ in rng.nextFloat() }
        let labels = (0..<rows).map { _ in UInt8(rng.nextInt(below: arch.outputSize)) }
        let data = try Dataset(name: "synthetic", features: feats, labels: labels,
                               featureCount: arch.inputSize, classCount: arch.outputSize)
        let trainer = try Trainer(architecture: arch, parameters: arch.makeParameters(seed: 1), data: data,
                                  config: SGDConfig(learningRate: 0.01, batchSize: batch), seed: 7)
        trainer.train(steps: 20)
        var steps = 0
        let t0 = now()
        while now() - t0 < seconds {
            trainer.train(steps: 20)
            steps += 20
        }
        let dt = now() - t0
        let sps = Double(steps * batch) / dt
        print("arch: \(arch) batch: \(batch) threads: 1")
        print(String(format: "train_samples_per_s: %.0f", sps))
        if let np = runNumpyBench(arch: arch.description, batch: batch, seconds: seconds) {
            print(String(format: "numpy_samples_per_s: %.0f", np))
            print(String(format: "train_vs_numpy: %.3f", sps / np))
        } else {
            print("numpy_samples_per_s: unavailable")
        }

        // Averaging vs memcpy over the model's bytes.
        var a = arch.makeParameters(seed: 2)
        let b = arch.makeParameters(seed: 3)
        let bytes = Double(a.parameterCount * 4)
        var dst = [Float](repeating: 0, count: a.parameterCount)
        func measure(_ body: () -> Void) -> Double {
            for _ in 0..<10 { body() }
            var iters = 0
            let s = now()
            while now() - s < 1.0 {
                for _ in 0..<50 { body() }
                iters += 50
            }
            return Double(iters) * bytes / (now() - s) / 1e6
        }
        let avgMB = measure { Averaging.weightedAverage(&a, weight: 1, with: b, weight: 1) }
        let cpyMB = b.storage.withUnsafeBytes { src in
            dst.withUnsafeMutableBytes { d in
                measure { memcpy(d.baseAddress!, src.baseAddress!, src.count) }
            }
        }
        print(String(format: "average_bytes: %.0f", bytes))
        print(String(format: "average_MB_per_s: %.0f", avgMB))
        print(String(format: "memcpy_MB_per_s: %.0f", cpyMB))
        print(String(format: "average_vs_memcpy: %.3f", avgMB / cpyMB))
        if !a.allFinite { return fail("averaging produced non-finite values") }
        return 0
    } catch {
        return fail("\(error)")
    }
}

/// SGD hyperparameters from bench options (shared by train-accuracy and gossip-sim).
/// `--schedule cosine` sets `decaySteps` to `totalSteps`; `step` and `none` leave it 0.
func sgdConfig(_ opts: [String: String], isDigits: Bool, totalSteps: Int,
               defaults: SGDConfig = SGDConfig(), defaultSchedule: String = "step") throws -> (SGDConfig, String) {
    func num<T: LosslessStringConvertible>(_ key: String, _ d: T) throws -> T {
        guard let t = opts[key] else { return d }
        guard let v = T(t) else { throw MLError(.invalidArgument, "--\(key) '\(t)' is not a number") }
        return v
    }
    let schedule = opts["schedule"] ?? defaultSchedule
    guard ["step", "cosine", "none"].contains(schedule) else {
        throw MLError(.invalidArgument, "--schedule '\(schedule)': use step, cosine or none")
    }
    let config = SGDConfig(learningRate: try num("lr", defaults.learningRate),
                           momentum: try num("momentum", defaults.momentum),
                           weightDecay: try num("weight-decay", defaults.weightDecay),
                           batchSize: try num("batch", defaults.batchSize),
                           inputNoise: try num("noise", isDigits ? defaults.inputNoise : 0),
                           decaySteps: schedule == "cosine" ? totalSteps : 0,
                           finalLearningRateFraction: try num("min-lr-frac", defaults.finalLearningRateFraction),
                           maxShift: try num("shift", isDigits ? defaults.maxShift : 0))
    return (config, schedule)
}

/// Loads `source`; with `--holdout N` the test set is replaced by the last N training rows
/// (validation, for choosing hyperparameters without looking at the test rows) and the
/// training set by the rows before them.
func loadSplit(_ source: DatasetSource, _ opts: [String: String]) throws -> DatasetSplit {
    let split = try source.load()
    guard let h = opts["holdout"] else { return split }
    guard let n = Int(h), n > 0, n < split.train.count else {
        throw MLError(.invalidArgument, "--holdout '\(h)': give a row count between 1 and \(split.train.count - 1)")
    }
    let k = split.train.count - n
    var pre = split.preprocessing
    pre["split"] = "validation: train=0..<\(k) validation=\(k)..<\(split.train.count) of the training rows"
    return DatasetSplit(train: split.train.subset(Array(0..<k)), test: split.train.subset(Array(k..<split.train.count)),
                        preprocessing: pre)
}

/// Digits defaults of train-accuracy (see README of the bench / `usage`).
let digitsCentralDefaults = SGDConfig(learningRate: 0.05, momentum: 0.9, weightDecay: 1e-4, batchSize: 64,
                                      inputNoise: 0.4, maxShift: 0)

/// Trains centrally; prints test accuracy about 12 times. Schedules: `step` (x0.1 after
/// 75% of the epochs, applied here), `cosine` (applied by the Trainer), `none`.
func trainCentrally(source: DatasetSource, arch archText: String?, opts: [String: String]) throws
    -> (arch: MLPArchitecture, params: ParameterSet, eval: Evaluation, split: DatasetSplit, seconds: Double, steps: Int) {
    let t0 = now()
    let split = try loadSplit(source, opts)
    let defaultArch = split.train.featureCount == 64 ? "64,256,128,10" : "\(split.train.featureCount),256,128,\(split.train.classCount)"
    let arch = try MLPArchitecture(parsing: archText ?? defaultArch)
    let isDigits = source == .digits
    // Digits defaults (chosen on --holdout 300 validation): cosine over 300 epochs, noise 0.4.
    let epochs = Int(opts["epochs"] ?? (isDigits ? "300" : "12")) ?? 12
    let batch = min(Int(opts["batch"] ?? "64") ?? 64, split.train.count)
    let stepsPerEpoch = max(1, split.train.count / max(batch, 1))
    var (config, schedule) = try sgdConfig(opts, isDigits: isDigits, totalSteps: epochs * stepsPerEpoch,
                                           defaults: digitsCentralDefaults,
                                           defaultSchedule: isDigits ? "cosine" : "step")
    let seed = UInt64(opts["seed"] ?? "1") ?? 1
    let trainer = try Trainer(architecture: arch, parameters: arch.makeParameters(seed: seed),
                              data: split.train, config: config, seed: seed &+ 1)
    let loadTime = now() - t0
    print(String(format: "dataset: %@ train %d test %d (load %.2f s) arch %@ epochs %d lr %g batch %d noise %g shift %d schedule %@ wd %g",
                 source.description, split.train.count, split.test.count, loadTime, arch.description, epochs,
                 Double(config.learningRate), config.batchSize, Double(config.inputNoise), config.maxShift,
                 schedule, Double(config.weightDecay)))
    let decayAt = Int((Double(epochs) * 0.75).rounded())
    for e in 1...max(epochs, 1) {
        if schedule == "step" && e == decayAt + 1 {
            config.learningRate *= 0.1
            trainer.config = config
        }
        let loss = trainer.train(epochs: 1)
        if e % max(1, epochs / 12) == 0 || e == epochs {
            let ev = evaluate(architecture: arch, parameters: trainer.parameters, on: split.test)
            print(String(format: "epoch %3d  train_loss %.4f  test_loss %.4f  test_accuracy %.4f  t %.1f s",
                         e, Double(loss), Double(ev.loss), ev.accuracy, now() - t0))
        }
    }
    let ev = evaluate(architecture: arch, parameters: trainer.parameters, on: split.test)
    return (arch, trainer.parameters, ev, split, now() - t0, trainer.stepsDone)
}

func metadata(arch: MLPArchitecture, split: DatasetSplit, eval: Evaluation, steps: Int, params: ParameterSet) -> [String: String] {
    var m = split.preprocessing
    m["arch"] = arch.description
    m["activation"] = "relu"
    m["format"] = "gossip-mlp-v1"
    m["test_accuracy"] = String(format: "%.6f", eval.accuracy)
    m["steps"] = "\(steps)"
    m["schema_hash"] = String(format: "%016llx", params.schemaHash)
    return m
}

/// `gossip-bench train-accuracy`: central training, prints `test_accuracy:` and `wall_s:`.
func runTrainAccuracySuite(_ args: [String]) -> Int32 {
    guard let (opts, _) = parseOptions(args, allowed: ["dataset", "arch", "epochs", "lr", "momentum", "weight-decay", "batch", "seed", "out", "noise",
                                                            "shift", "schedule", "min-lr-frac", "holdout"]) else { return 64 }
    do {
        if opts["holdout"] != nil && opts["out"] != nil { return fail("--holdout models are not exported; drop --out") }
        let source = try DatasetSource(parsing: opts["dataset"] ?? "digits")
        let r = try trainCentrally(source: source, arch: opts["arch"], opts: opts)
        print(String(format: "test_accuracy: %.4f", r.eval.accuracy))
        print(String(format: "test_loss: %.4f", Double(r.eval.loss)))
        print(String(format: "wall_s: %.2f", r.seconds))
        if let out = opts["out"] {
            try SafeTensors.write(r.params, metadata: metadata(arch: r.arch, split: r.split, eval: r.eval, steps: r.steps, params: r.params), to: out)
            print("wrote: \(out)")
        }
        return 0
    } catch {
        return fail("\(error)")
    }
}

/// `gossip-bench export-digits OUT`: brief digits training, export, print `swift_accuracy:`.
func runExportDigitsSuite(_ args: [String]) -> Int32 {
    guard let (opts, pos) = parseOptions(args, allowed: ["epochs", "arch", "seed", "noise", "shift", "schedule", "min-lr-frac"]), pos.count == 1 else {
        FileHandle.standardError.write(Data("usage: gossip-bench export-digits OUT.safetensors [--epochs E]\n".utf8))
        return 64
    }
    do {
        var o = opts
        o["epochs"] = opts["epochs"] ?? "20"
        o["schedule"] = opts["schedule"] ?? "step"
        let r = try trainCentrally(source: .digits, arch: opts["arch"], opts: o)
        try SafeTensors.write(r.params, metadata: metadata(arch: r.arch, split: r.split, eval: r.eval, steps: r.steps, params: r.params), to: pos[0])
        print(String(format: "swift_accuracy: %.6f", r.eval.accuracy))
        print("wrote: \(pos[0])")
        return 0
    } catch {
        return fail("\(error)")
    }
}
