// Tests of the trainer, evaluation, averaging kernels, and sharding.

import Foundation
import Testing
@testable import GossipML

@Suite struct TrainingTests {
    static func blobs(rows: Int, seed: UInt64) throws -> Dataset {
        var rng = SeededGenerator(seed: seed)
        var f: [Float] = [], l: [UInt8] = []
        for _ in 0..<rows {
            let c = rng.nextInt(below: 3)
            l.append(UInt8(c))
            for j in 0..<4 { f.append((j == c ? 2 : 0) + rng.nextFloat() - 0.5) }
        }
        return try Dataset(name: "blobs", features: f, labels: l, featureCount: 4, classCount: 3)
    }

    @Test func trainingLearnsAndIsDeterministic() throws {
        let arch = try MLPArchitecture(parsing: "4,8,3")
        let data = try Self.blobs(rows: 200, seed: 1)
        let before = evaluate(architecture: arch, parameters: arch.makeParameters(seed: 3), on: data)
        func run() throws -> Trainer {
            let t = try Trainer(architecture: arch, parameters: arch.makeParameters(seed: 3), data: data,
                                config: SGDConfig(learningRate: 0.05, batchSize: 16), seed: 11)
            t.train(steps: 150)
            return t
        }
        let t1 = try run(), t2 = try run()
        #expect(t1.parameters.storage.map(\.bitPattern) == t2.parameters.storage.map(\.bitPattern))
        #expect(t1.stepsDone == 150 && t1.samplesSeen == 2400)
        let after = evaluate(architecture: arch, parameters: t1.parameters, on: data)
        #expect(after.loss < before.loss)
        #expect(after.accuracy > 0.95)
        #expect(after.count == 200)
    }

    @Test func cosineScheduleValues() {
        let c = SGDConfig(learningRate: 0.2, decaySteps: 100, finalLearningRateFraction: 0.1)
        #expect(abs(c.learningRate(atStep: 0) - 0.2) < 1e-7)
        #expect(abs(c.learningRate(atStep: 50) - 0.2 * (0.1 + 0.9 * 0.5)) < 1e-6)
        #expect(abs(c.learningRate(atStep: 25) - 0.2 * Float(0.1 + 0.9 * 0.5 * (1 + cos(Double.pi / 4)))) < 1e-6)
        #expect(abs(c.learningRate(atStep: 100) - 0.02) < 1e-7)
        #expect(abs(c.learningRate(atStep: 1000) - 0.02) < 1e-7)
        for t in 0..<100 { #expect(c.learningRate(atStep: t + 1) <= c.learningRate(atStep: t)) }
        let flat = SGDConfig(learningRate: 0.3)
        #expect(flat.decaySteps == 0 && flat.learningRate(atStep: 12345) == 0.3)
    }

    @Test func trainerAppliesScheduleByStepCount() throws {
        // Floor 0: after decaySteps the rate is 0, so further steps leave the weights unchanged.
        let arch = try MLPArchitecture(parsing: "4,8,3")
        let data = try Self.blobs(rows: 64, seed: 4)
        let t = try Trainer(architecture: arch, parameters: arch.makeParameters(seed: 1), data: data,
                            config: SGDConfig(learningRate: 0.1, batchSize: 16, decaySteps: 20), seed: 2)
        t.train(steps: 20)
        let w = t.parameters.storage
        t.train(steps: 5)
        #expect(t.parameters.storage == w)
        #expect(t.stepsDone == 25)
    }

    @Test func shiftImageMovesPixelsWithZeroFill() {
        let src: [Float] = [1, 2, 3,
                            4, 5, 6,
                            7, 8, 9]
        func shifted(_ dx: Int, _ dy: Int) -> [Float] {
            var dst = [Float](repeating: -1, count: 9)
            src.withUnsafeBufferPointer { s in
                dst.withUnsafeMutableBufferPointer { d in
                    Trainer.shiftImage(s.baseAddress!, into: d.baseAddress!, side: 3, dx: dx, dy: dy)
                }
            }
            return dst
        }
        #expect(shifted(0, 0) == src)
        #expect(shifted(1, 0) == [0, 1, 2, 0, 4, 5, 0, 7, 8])
        #expect(shifted(-1, 0) == [2, 3, 0, 5, 6, 0, 8, 9, 0])
        #expect(shifted(0, 1) == [0, 0, 0, 1, 2, 3, 4, 5, 6])
        #expect(shifted(1, -1) == [0, 4, 5, 0, 7, 8, 0, 0, 0])
    }

    @Test func shiftAugmentationIsSeededAndChecked() throws {
        let arch = try MLPArchitecture(parsing: "4,8,3")  // 4 features = 2x2 images
        let data = try Self.blobs(rows: 64, seed: 6)
        func run(_ shift: Int, seed: UInt64 = 3) throws -> [Float] {
            let t = try Trainer(architecture: arch, parameters: arch.makeParameters(seed: 1), data: data,
                                config: SGDConfig(learningRate: 0.05, batchSize: 16, maxShift: shift), seed: seed)
            t.train(steps: 12)
            #expect(t.parameters.allFinite)
            return t.parameters.storage
        }
        #expect(try run(1) == (try run(1)))
        #expect(try run(1) != (try run(0)))
        #expect(try run(1) != (try run(1, seed: 4)))
        let odd = try Dataset(name: "odd", features: [0, 1, 2, 3, 4, 5], labels: [0, 1], featureCount: 3, classCount: 2)
        let a3 = try MLPArchitecture(parsing: "3,2")
        #expect(throws: MLError.self) {
            try Trainer(architecture: a3, parameters: a3.makeParameters(seed: 1), data: odd,
                        config: SGDConfig(maxShift: 1), seed: 1)
        }
        #expect(throws: MLError.self) {
            try Trainer(architecture: arch, parameters: arch.makeParameters(seed: 1), data: data,
                        config: SGDConfig(maxShift: -1), seed: 1)
        }
    }

    @Test func trainerRejectsMismatchedInputs() throws {
        let arch = try MLPArchitecture(parsing: "5,3")
        let data = try Self.blobs(rows: 10, seed: 1)
        #expect(throws: MLError.self) {
            try Trainer(architecture: arch, parameters: arch.makeParameters(seed: 1), data: data, config: SGDConfig(), seed: 1)
        }
        let good = try MLPArchitecture(parsing: "4,3")
        let t = try Trainer(architecture: good, parameters: good.makeParameters(seed: 1), data: data, config: SGDConfig(), seed: 1)
        #expect(throws: MLError.self) { try t.setParameters(arch.makeParameters(seed: 1)) }
        t.withParameters { $0.storage[0] = 42 }
        #expect(t.parameters.storage[0] == 42)
    }

    @Test func averagingMatchesScalarReference() {
        for n in [0, 1, 15, 16, 17, 100, 1001] {
            var a = ParameterSet(specs: [("x", [n])]), b = a
            var rng = SeededGenerator(seed: UInt64(n))
            for i in 0..<n { a.storage[i] = rng.nextFloat() * 4 - 2; b.storage[i] = rng.nextFloat() * 4 - 2 }
            let a0 = a
            Averaging.weightedAverage(&a, weight: 3, with: b, weight: 1)
            for i in 0..<n {  // the exact rule of SPEC §5.3: ca = 0.75, cb = 0.25, unfused
                let ref = Float(Double(Float(Double(a0.storage[i]) * 0.75)) + Double(Float(Double(b.storage[i]) * 0.25)))
                #expect(a.storage[i].bitPattern == ref.bitPattern)
            }
            var dd = 0.0, nn = 0.0
            for i in 0..<n {
                dd += pow(Double(a0.storage[i]) - Double(b.storage[i]), 2)
                nn += pow(Double(a0.storage[i]), 2)
            }
            let ref = dd.squareRoot() / max(nn.squareRoot(), 1e-30)
            #expect(abs(Averaging.relativeL2Distance(a0, b) - ref) <= 1e-5 * max(ref, 1e-30))
        }
        let z = ParameterSet(specs: [("x", [4])])
        #expect(Averaging.relativeL2Distance(z, z) == 0)
    }

    @Test func iidShardsPartitionRowsReproducibly() throws {
        let data = try Self.blobs(rows: 103, seed: 2)
        for n in [1, 3, 7] {
            var all: [Int] = []
            for i in 0..<n {
                let s = try data.shardIndices(index: i, of: n, seed: 5, nonIIDAlpha: nil)
                #expect(s == (try data.shardIndices(index: i, of: n, seed: 5, nonIIDAlpha: nil)))
                #expect(abs(s.count - 103 / n) <= 1)
                all += s
            }
            #expect(all.sorted() == Array(0..<103))
        }
        #expect(try data.shardIndices(index: 0, of: 3, seed: 5, nonIIDAlpha: nil)
                != data.shardIndices(index: 0, of: 3, seed: 6, nonIIDAlpha: nil))
        #expect(throws: MLError.self) { try data.shardIndices(index: 3, of: 3, seed: 0, nonIIDAlpha: nil) }
        #expect(throws: MLError.self) { try data.shardIndices(index: 0, of: 0, seed: 0, nonIIDAlpha: nil) }
        #expect(throws: MLError.self) { try data.shardIndices(index: 0, of: 2, seed: 0, nonIIDAlpha: 0) }
        #expect(try data.shard(index: 1, of: 3, seed: 5).count == 34)
    }

    @Test func nonIIDShardsPartitionRowsAndSkewLabels() throws {
        let data = try Self.blobs(rows: 300, seed: 3)
        for alpha in [0.1, 1.0, 100.0] {
            var all: [Int] = []
            for i in 0..<5 {
                let s = try data.shardIndices(index: i, of: 5, seed: 9, nonIIDAlpha: alpha)
                #expect(s == (try data.shardIndices(index: i, of: 5, seed: 9, nonIIDAlpha: alpha)))
                all += s
            }
            #expect(all.sorted() == Array(0..<300))
        }
        // Small alpha: some shard is dominated by one class.
        var maxFrac = 0.0
        for i in 0..<5 {
            let s = try data.shard(index: i, of: 5, seed: 9, nonIIDAlpha: 0.1)
            guard s.count > 10 else { continue }
            let counts = (0..<3).map { c in s.labels.filter { $0 == c }.count }
            maxFrac = max(maxFrac, Double(counts.max()!) / Double(s.count))
        }
        #expect(maxFrac > 0.6)
    }
}

@Test func scheduleOffsetContinuesTheCosine() throws {
    let arch = try MLPArchitecture(parsing: "6,4,2")
    let data = try Dataset(name: "t", features: (0..<48).map { Float($0 % 7) / 7 }, labels: [0, 1, 0, 1, 0, 1, 0, 1],
                           featureCount: 6, classCount: 2)
    var c = SGDConfig(learningRate: 0.2, batchSize: 4, decaySteps: 100, finalLearningRateFraction: 0)
    #expect(c.learningRate(atStep: 0) == 0.2)
    #expect(abs(c.learningRate(atStep: 50) - 0.1) < 1e-6)
    // A trainer resumed at step 100 of a 100-step cosine trains at rate 0: weights stay put.
    c.scheduleOffset = 100
    let start = arch.makeParameters(seed: 4)
    let resumed = try Trainer(architecture: arch, parameters: start, data: data, config: c, seed: 1)
    resumed.train(steps: 3)
    #expect(resumed.parameters == start)
    // Without the offset the same trainer moves.
    c.scheduleOffset = 0
    let fresh = try Trainer(architecture: arch, parameters: start, data: data, config: c, seed: 1)
    fresh.train(steps: 3)
    #expect(fresh.parameters != start)
}
