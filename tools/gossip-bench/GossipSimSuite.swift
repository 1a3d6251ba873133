// gossip-sim: the networked digits setting simulated in one process, to choose node defaults.

import ArgumentParser
import Foundation
import GossipML

/// `gossip-bench gossip-sim`: n Trainers on IID shards (`Dataset.shard(index:of:seed:)`);
/// each round every peer runs `--local-steps` SGD steps (one `train(steps: 1)` call each, as
/// the node does), then the peers are paired by a seeded random perfect matching and each
/// pair is replaced by its `Averaging.weightedAverage` (weights = shard sizes, as on the wire).
/// Prints per-peer held-out accuracy, the mean, and the largest pairwise relative L2 distance.
func runGossipSimSuite(_ o: TrainingOptions, peers n: Int, rounds: Int, localSteps k: Int, evalEvery: Int,
                       nonIIDAlpha alpha: Double?) throws {
    do {
        let t0 = now()
        let source = try DatasetSource(parsing: o.dataset)
        let split = try loadSplit(source, holdout: o.holdout)
        let defaultArch = split.train.featureCount == 64 ? "64,256,128,10" : "\(split.train.featureCount),256,128,\(split.train.classCount)"
        let arch = try MLPArchitecture(parsing: o.arch ?? defaultArch)
        let seed = o.seed
        let (config, schedule) = sgdConfig(o, isDigits: source == .digits, totalSteps: rounds * k,
                                           defaults: digitsGossipDefaults, defaultSchedule: "cosine")
        guard schedule != "step" else { throw ValidationError("gossip-sim supports --schedule cosine or none") }
        let initial = arch.makeParameters(seed: seed)
        var trainers: [Trainer] = []
        for i in 0..<n {
            let shard = try split.train.shard(index: i, of: n, seed: seed, nonIIDAlpha: alpha)
            trainers.append(try Trainer(architecture: arch, parameters: initial, data: shard, config: config,
                                        seed: seed &* 1000 &+ UInt64(i) &+ 1))
        }
        out(String(format: "gossip-sim: %@ peers %d rounds %d local-steps %d arch %@ lr %g momentum %g wd %g batch %d noise %g shift %d schedule %@ (decaySteps %d, floor %g) seed %llu",
                     source.description, n, rounds, k, arch.description, Double(config.learningRate), Double(config.momentum),
                     Double(config.weightDecay), config.batchSize, Double(config.inputNoise), config.maxShift, schedule,
                     config.decaySteps, Double(config.finalLearningRateFraction), seed))
        out("shards: " + trainers.map { "\($0.data.count)" }.joined(separator: " ") + " rows; held-out \(split.test.count) rows")
        var rng = SeededGenerator(seed: seed ^ 0x676F_7373_6970)  // "gossip"
        func report(_ round: Int) -> [Double] {
            let accs = trainers.map { evaluate(architecture: arch, parameters: $0.parameters, on: split.test).accuracy }
            out(String(format: "round %3d  peers %@  mean %.4f  t %.1f s", round,
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
        out(String(format: "per_peer_accuracy: %@", accs.map { String(format: "%.4f", $0) }.joined(separator: " ")))
        out(String(format: "min_peer_accuracy: %.4f", accs.min() ?? 0))
        out(String(format: "mean_peer_accuracy: %.4f", accs.reduce(0, +) / Double(max(accs.count, 1))))
        out(String(format: "max_pairwise_rel_l2: %.3e", maxDist))
        out(String(format: "steps_per_peer: %d  samples_per_peer: %d  wall_s: %.2f", rounds * k, rounds * k * config.batchSize, now() - t0))
    } catch let e as ValidationError {
        throw e
    } catch {
        throw fail("\(error)")
    }
}

/// Defaults of gossip-sim (the recommended node SGD settings for the digits).
let digitsGossipDefaults = SGDConfig(learningRate: 0.05, momentum: 0.9, weightDecay: 1e-4, batchSize: 32,
                                     inputNoise: 0.4, finalLearningRateFraction: 0)
