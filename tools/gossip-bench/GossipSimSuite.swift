// gossip-sim: the networked digits setting simulated in one process, to choose node defaults.

import Foundation
import GossipML

/// `gossip-bench gossip-sim`: n Trainers on IID shards (`Dataset.shard(index:of:seed:)`);
/// each round every peer runs `--local-steps` SGD steps (one `train(steps: 1)` call each, as
/// the node does), then the peers are paired by a seeded random perfect matching and each
/// pair is replaced by its `Averaging.weightedAverage` (weights = shard sizes, as on the wire).
/// Prints per-peer held-out accuracy, the mean, and the largest pairwise relative L2 distance.
func runGossipSimSuite(_ args: [String]) -> Int32 {
    guard let (opts, _) = parseOptions(args, allowed: ["dataset", "arch", "peers", "rounds", "local-steps", "lr", "momentum",
                                                       "weight-decay", "batch", "seed", "noise", "shift", "schedule",
                                                       "min-lr-frac", "holdout", "eval-every", "non-iid-alpha"]) else { return 64 }
    do {
        let t0 = now()
        let source = try DatasetSource(parsing: opts["dataset"] ?? "digits")
        let split = try loadSplit(source, opts)
        let defaultArch = split.train.featureCount == 64 ? "64,256,128,10" : "\(split.train.featureCount),256,128,\(split.train.classCount)"
        let arch = try MLPArchitecture(parsing: opts["arch"] ?? defaultArch)
        let n = Int(opts["peers"] ?? "4") ?? 4
        let rounds = Int(opts["rounds"] ?? "60") ?? 60
        let k = Int(opts["local-steps"] ?? "10") ?? 10
        let seed = UInt64(opts["seed"] ?? "1") ?? 1
        let evalEvery = Int(opts["eval-every"] ?? "10") ?? 10
        let alpha = opts["non-iid-alpha"].flatMap(Double.init)
        guard n >= 1, rounds >= 1, k >= 1 else { return fail("--peers, --rounds and --local-steps must be >= 1") }
        let (config, schedule) = try sgdConfig(opts, isDigits: source == .digits, totalSteps: rounds * k,
                                               defaults: digitsGossipDefaults, defaultSchedule: "cosine")
        guard schedule != "step" else { return fail("gossip-sim supports --schedule cosine or none") }
        let initial = arch.makeParameters(seed: seed)
        var trainers: [Trainer] = []
        for i in 0..<n {
            let shard = try split.train.shard(index: i, of: n, seed: seed, nonIIDAlpha: alpha)
            trainers.append(try Trainer(architecture: arch, parameters: initial, data: shard, config: config,
                                        seed: seed &* 1000 &+ UInt64(i) &+ 1))
        }
        print(String(format: "gossip-sim: %@ peers %d rounds %d local-steps %d arch %@ lr %g momentum %g wd %g batch %d noise %g shift %d schedule %@ (decaySteps %d, floor %g) seed %llu",
                     source.description, n, rounds, k, arch.description, Double(config.learningRate), Double(config.momentum),
                     Double(config.weightDecay), config.batchSize, Double(config.inputNoise), config.maxShift, schedule,
                     config.decaySteps, Double(config.finalLearningRateFraction), seed))
        print("shards: " + trainers.map { "\($0.data.count)" }.joined(separator: " ") + " rows; held-out \(split.test.count) rows")
        var rng = SeededGenerator(seed: seed ^ 0x676F_7373_6970)  // "gossip"
        func report(_ round: Int) -> [Double] {
            let accs = trainers.map { evaluate(architecture: arch, parameters: $0.parameters, on: split.test).accuracy }
            print(String(format: "round %3d  peers %@  mean %.4f  t %.1f s", round,
                         accs.map { String(format: "%.4f", $0) }.joined(separator: " "),
                         accs.reduce(0, +) / Double(accs.count), now() - t0))
            return accs
        }
        for r in 1...rounds {
            for t in trainers { for _ in 0..<k { t.train(steps: 1) } }
            var order = Array(0..<n)
            rng.shuffle(&order)
            var i = 0
            while i + 1 < order.count {
                let a = trainers[order[i]], b = trainers[order[i + 1]]
                var avg = a.parameters
                Averaging.weightedAverage(&avg, weight: Double(a.data.count), with: b.parameters, weight: Double(b.data.count))
                a.parameters = avg
                b.parameters = avg
                i += 2
            }
            if r % max(1, evalEvery) == 0 && r != rounds { _ = report(r) }
        }
        let accs = report(rounds)
        var maxDist = 0.0
        for a in trainers { for b in trainers where a !== b {
            maxDist = max(maxDist, Averaging.relativeL2Distance(a.parameters, b.parameters))
        } }
        print(String(format: "per_peer_accuracy: %@", accs.map { String(format: "%.4f", $0) }.joined(separator: " ")))
        print(String(format: "min_peer_accuracy: %.4f", accs.min() ?? 0))
        print(String(format: "mean_peer_accuracy: %.4f", accs.reduce(0, +) / Double(max(accs.count, 1))))
        print(String(format: "max_pairwise_rel_l2: %.3e", maxDist))
        print(String(format: "steps_per_peer: %d  samples_per_peer: %d  wall_s: %.2f", rounds * k, rounds * k * config.batchSize, now() - t0))
        return 0
    } catch {
        return fail("\(error)")
    }
}

/// Defaults of gossip-sim (the recommended node SGD settings for the digits).
let digitsGossipDefaults = SGDConfig(learningRate: 0.05, momentum: 0.9, weightDecay: 1e-4, batchSize: 32,
                                     inputNoise: 0.4, finalLearningRateFraction: 0)
