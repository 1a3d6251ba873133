// Training suites of gossip-bench: throughput vs numpy and memcpy, accuracy runs, export.

import ArgumentParser
import Foundation
import GossipML


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
func runTrainSuite(arch archText: String, batch: Int, seconds: Double) throws {
    do {
        let arch = try MLPArchitecture(parsing: archText)
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
        out("arch: \(arch) batch: \(batch) threads: 1")
        out(String(format: "train_samples_per_s: %.0f", sps))
        if let np = runNumpyBench(arch: arch.description, batch: batch, seconds: seconds) {
            out(String(format: "numpy_samples_per_s: %.0f", np))
            out(String(format: "train_vs_numpy: %.3f", sps / np))
        } else {
            out("numpy_samples_per_s: unavailable")
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
        out(String(format: "average_bytes: %.0f", bytes))
        out(String(format: "average_MB_per_s: %.0f", avgMB))
        out(String(format: "memcpy_MB_per_s: %.0f", cpyMB))
        out(String(format: "average_vs_memcpy: %.3f", avgMB / cpyMB))
        if !a.allFinite { throw fail("averaging produced non-finite values") }
    } catch let e as ExitCode {
        throw e
    } catch {
        throw fail("\(error)")
    }
}

/// SGD hyperparameters from bench options (shared by train-accuracy and gossip-sim).
/// `--schedule cosine` sets `decaySteps` to `totalSteps`; `step` and `none` leave it 0.
func sgdConfig(_ o: TrainingOptions, isDigits: Bool, totalSteps: Int,
               defaults: SGDConfig = SGDConfig(), defaultSchedule: String = "step") -> (SGDConfig, String) {
    let schedule = o.schedule ?? defaultSchedule   // validated by TrainingOptions
    let config = SGDConfig(learningRate: o.lr ?? defaults.learningRate,
                           momentum: o.momentum ?? defaults.momentum,
                           weightDecay: o.weightDecay ?? defaults.weightDecay,
                           batchSize: o.batch ?? defaults.batchSize,
                           inputNoise: o.noise ?? (isDigits ? defaults.inputNoise : 0),
                           decaySteps: schedule == "cosine" ? totalSteps : 0,
                           finalLearningRateFraction: o.minLrFrac ?? defaults.finalLearningRateFraction,
                           maxShift: o.shift ?? (isDigits ? defaults.maxShift : 0))
    return (config, schedule)
}

/// Loads `source`; with `--holdout N` the test set is replaced by the last N training rows
/// (validation, for choosing hyperparameters without looking at the test rows) and the
/// training set by the rows before them.
func loadSplit(_ source: DatasetSource, holdout: Int?) throws -> DatasetSplit {
    let split = try source.load()
    guard let n = holdout else { return split }
    guard n > 0, n < split.train.count else {
        throw MLError(.invalidArgument, "--holdout \(n): give a row count between 1 and \(split.train.count - 1)")
    }
    let k = split.train.count - n
    var pre = split.preprocessing
    pre["split"] = "validation: train=0..<\(k) validation=\(k)..<\(split.train.count) of the training rows"
    return DatasetSplit(train: split.train.subset(Array(0..<k)), test: split.train.subset(Array(k..<split.train.count)),
                        preprocessing: pre)
}

/// Digits defaults of train-accuracy (see `gossip-bench train-accuracy --help`).
let digitsCentralDefaults = SGDConfig(learningRate: 0.05, momentum: 0.9, weightDecay: 1e-4, batchSize: 64,
                                      inputNoise: 0.4, maxShift: 0)

/// Trains centrally; prints test accuracy about 12 times. Schedules: `step` (x0.1 after
/// 75% of the epochs, applied here), `cosine` (applied by the Trainer), `none`.
func trainCentrally(source: DatasetSource, options o: TrainingOptions, epochs epochsOption: Int?) throws
    -> (arch: MLPArchitecture, params: ParameterSet, eval: Evaluation, split: DatasetSplit, seconds: Double, steps: Int) {
    let t0 = now()
    let split = try loadSplit(source, holdout: o.holdout)
    let defaultArch = split.train.featureCount == 64 ? "64,256,128,10" : "\(split.train.featureCount),256,128,\(split.train.classCount)"
    let arch = try MLPArchitecture(parsing: o.arch ?? defaultArch)
    let isDigits = source == .digits
    // Digits defaults (chosen on --holdout 300 validation): cosine over 300 epochs, noise 0.4.
    let epochs = epochsOption ?? (isDigits ? 300 : 12)
    let batch = min(o.batch ?? 64, split.train.count)
    let stepsPerEpoch = max(1, split.train.count / max(batch, 1))
    var (config, schedule) = sgdConfig(o, isDigits: isDigits, totalSteps: epochs * stepsPerEpoch,
                                       defaults: digitsCentralDefaults,
                                       defaultSchedule: isDigits ? "cosine" : "step")
    let seed = o.seed
    let trainer = try Trainer(architecture: arch, parameters: arch.makeParameters(seed: seed),
                              data: split.train, config: config, seed: seed &+ 1)
    let loadTime = now() - t0
    out(String(format: "dataset: %@ train %d test %d (load %.2f s) arch %@ epochs %d lr %g batch %d noise %g shift %d schedule %@ wd %g",
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
            out(String(format: "epoch %3d  train_loss %.4f  test_loss %.4f  test_accuracy %.4f  t %.1f s",
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
func runTrainAccuracySuite(_ o: TrainingOptions, epochs: Int?, out file: String?) throws {
    do {
        let source = try DatasetSource(parsing: o.dataset)
        let r = try trainCentrally(source: source, options: o, epochs: epochs)
        out(String(format: "test_accuracy: %.4f", r.eval.accuracy))
        out(String(format: "test_loss: %.4f", Double(r.eval.loss)))
        out(String(format: "wall_s: %.2f", r.seconds))
        if let file {
            try SafeTensors.write(r.params, metadata: metadata(arch: r.arch, split: r.split, eval: r.eval, steps: r.steps, params: r.params), to: file)
            out("wrote: \(file)")
        }
    } catch {
        throw fail("\(error)")
    }
}

/// `gossip-bench export-digits OUT`: brief digits training, export, print `swift_accuracy:`.
func runExportDigitsSuite(_ o: TrainingOptions, epochs: Int, output: String) throws {
    do {
        let r = try trainCentrally(source: .digits, options: o, epochs: epochs)
        try SafeTensors.write(r.params, metadata: metadata(arch: r.arch, split: r.split, eval: r.eval, steps: r.steps, params: r.params), to: output)
        out(String(format: "swift_accuracy: %.6f", r.eval.accuracy))
        out("wrote: \(output)")
    } catch {
        throw fail("\(error)")
    }
}
