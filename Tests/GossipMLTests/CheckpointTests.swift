// Exact resume (issue 8, defect 7): a trainer saved after N steps and restored into a fresh
// trainer continues bit-identically; hostile or mismatched checkpoints are refused; leftover
// temporary files are cleaned up.

import Foundation
import Testing
@testable import GossipML

@Suite struct CheckpointTests {
    static let arch = try! MLPArchitecture(parsing: "16,12,3")

    /// 50 rows of 4x4 "images", 3 classes; batch 8 leaves a remainder, so epochs reshuffle.
    static func data(seed: UInt64 = 5) throws -> Dataset {
        var rng = SeededGenerator(seed: seed)
        let rows = 50
        let labels = (0..<rows).map { UInt8($0 % 3) }
        let feats = (0..<(rows * 16)).map { i in rng.nextFloat() + Float(labels[i / 16]) * 0.3 }
        return try Dataset(name: "ckpt", features: feats, labels: labels, featureCount: 16, classCount: 3)
    }

    /// Momentum, weight decay, a cosine schedule, input noise and shifts: every piece of state
    /// matters for the next step.
    static let config = SGDConfig(learningRate: 0.1, momentum: 0.9, weightDecay: 1e-3, batchSize: 8,
                                  inputNoise: 0.05, decaySteps: 100, finalLearningRateFraction: 0.1, maxShift: 1)

    static func tempDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gossip-ckpt-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func bytes(_ p: ParameterSet) -> [UInt8] { p.storage.withUnsafeBytes { Array($0) } }

    @Test(arguments: [(1, 30), (13, 29), (37, 23), (48, 11)])
    func resumedTrainerContinuesBitIdentically(_ n: Int, _ m: Int) throws {
        let data = try Self.data()
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/model.safetensors"

        let uninterrupted = try Trainer(architecture: Self.arch, parameters: Self.arch.makeParameters(seed: 1), data: data,
                                        config: Self.config, seed: 42)
        uninterrupted.train(steps: n + m)

        let first = try Trainer(architecture: Self.arch, parameters: Self.arch.makeParameters(seed: 1), data: data,
                                config: Self.config, seed: 42)
        first.train(steps: n)
        try CheckpointStore.write(TrainerCheckpoint(trainer: first, metadata: ["arch": Self.arch.description, "round": "7"]), to: path)

        // A fresh trainer with another seed and other weights: everything must come from the file.
        let ckpt = try CheckpointStore.read(path: path)
        #expect(ckpt.metadata == ["arch": Self.arch.description, "round": "7"])
        let resumed = try Trainer(architecture: Self.arch, parameters: Self.arch.makeParameters(seed: 99), data: data,
                                  config: Self.config, seed: 7)
        if n % 2 == 0 {
            try resumed.setParameters(ckpt.parameters)
            try resumed.restoreState(ckpt.state)
        } else {
            try resumed.restore(from: ckpt)
        }
        #expect(resumed.stepsDone == n && resumed.samplesSeen == first.samplesSeen && resumed.epochsDone == first.epochsDone)
        resumed.train(steps: m)

        let got = Self.bytes(resumed.parameters), want = Self.bytes(uninterrupted.parameters)
        let firstDifference = zip(got, want).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(got.count == want.count && firstDifference == nil,
                "resumed after \(n) steps and \(m) more differs from \(n + m) uninterrupted steps at byte \(firstDifference ?? -1)")
        let sameState = resumed.exportState() == uninterrupted.exportState()
        #expect(sameState, "trainer state after resume differs from the uninterrupted trainer's")
        #expect(resumed.stepsDone == n + m && resumed.epochsDone == uninterrupted.epochsDone)
    }

    /// What the old checkpoint did (weights only) is not enough: the control for the test above.
    @Test func weightsAloneDoNotResumeExactly() throws {
        let data = try Self.data()
        let a = try Trainer(architecture: Self.arch, parameters: Self.arch.makeParameters(seed: 1), data: data, config: Self.config, seed: 42)
        a.train(steps: 20)
        let b = try Trainer(architecture: Self.arch, parameters: a.parameters, data: data, config: Self.config, seed: 42)
        a.train(steps: 10)
        b.train(steps: 10)
        #expect(Self.bytes(a.parameters) != Self.bytes(b.parameters))
    }

    @Test func modelTensorsKeepTheirNamesForPlainReaders() throws {
        let data = try Self.data()
        let t = try Trainer(architecture: Self.arch, parameters: Self.arch.makeParameters(seed: 1), data: data, config: Self.config, seed: 1)
        t.train(steps: 3)
        let bytes = try TrainerCheckpoint(trainer: t, metadata: ["arch": Self.arch.description]).encode()
        let (all, meta) = try SafeTensors.decode(bytes)
        for s in t.parameters.specs {
            #expect(all.tensor(named: s.name).map(Array.init) == Array(t.parameters.storage[s.range]))
            #expect(all.spec(named: "optimizer.momentum." + s.name)?.shape == s.shape)
        }
        #expect(all.spec(named: "trainer.data_order")?.shape == [50, 2])
        #expect(meta["trainer.format"] == "gossip-trainer-v1" && meta["trainer.step"] == "3" && meta["arch"] == "16,12,3")
        #expect(try TrainerCheckpoint.decode(bytes) == TrainerCheckpoint(trainer: t, metadata: ["arch": Self.arch.description]))
    }

    /// Rewrites one piece of a valid checkpoint and expects `decode` to refuse it.
    typealias Edit = @Sendable (inout ParameterSet, inout [String: String]) -> Void

    static func tampered(_ edit: Edit) throws -> [UInt8] {
        let t = try Trainer(architecture: arch, parameters: arch.makeParameters(seed: 1), data: try data(), config: config, seed: 1)
        t.train(steps: 9)
        let bytes = try TrainerCheckpoint(trainer: t, metadata: [:]).encode()
        var (set, meta) = try SafeTensors.decode(bytes)
        edit(&set, &meta)
        return try SafeTensors.encode(set, metadata: meta)
    }

    static func dropping(_ name: String) -> Edit {
        { set, _ in
            let keep = set.specs.filter { $0.name != name }
            var out = ParameterSet(specs: keep.map { ($0.name, $0.shape) })
            for s in keep { _ = out.setTensor(named: s.name, Array(set.storage[s.range])) }
            set = out
        }
    }

    static func setting(_ name: String, _ index: Int, _ value: Float) -> Edit {
        { set, _ in
            guard let s = set.spec(named: name) else { return }
            set.storage[s.offset + index] = value
        }
    }

    static func meta(_ key: String, _ value: String?) -> Edit {
        { _, m in m[key] = value }
    }

    @Test(arguments: [
        ("no format", meta("trainer.format", nil)),
        ("other format", meta("trainer.format", "gossip-trainer-v0")),
        ("momentum missing", dropping("optimizer.momentum.layers.0.bias")),
        ("order missing", dropping("trainer.data_order")),
        ("NaN momentum", setting("optimizer.momentum.layers.1.weight", 2, .nan)),
        ("Inf weight", setting("layers.0.weight", 0, -.infinity)),
        ("order duplicate", setting("trainer.data_order", 1, 0)),
        ("order fraction", setting("trainer.data_order", 3, 0.5)),
        ("order negative", setting("trainer.data_order", 0, -1)),
        ("rows mismatch", meta("trainer.data_rows", "49")),
        ("rows huge", meta("trainer.data_rows", "9223372036854775807")),
        ("cursor past end", meta("trainer.cursor", "51")),
        ("cursor negative", meta("trainer.cursor", "-1")),
        ("step not a number", meta("trainer.step", "ten")),
        ("rng three words", meta("trainer.rng", "0000000000000001,0000000000000002,0000000000000003")),
        ("rng zero", meta("trainer.rng", "0000000000000000,0000000000000000,0000000000000000,0000000000000000")),
        ("rng not hex", meta("trainer.rng", "000000000000000g,0000000000000000,0000000000000000,0000000000000001")),
        ("batch zero", meta("trainer.batch", "0")),
        ("fingerprint missing", meta("trainer.data_fingerprint", nil)),
    ] as [(String, Edit)])
    func corruptCheckpointsAreRefused(_ name: String, _ edit: Edit) throws {
        let bytes = try Self.tampered(edit)
        do {
            _ = try TrainerCheckpoint.decode(bytes)
            Issue.record("\(name): accepted")
        } catch let e as MLError {
            #expect(e.kind == .invalidSafeTensors, "\(name)")
            #expect(e.message.hasPrefix("checkpoint: "), "\(name): \(e.message)")
        }
    }

    @Test func stateForOtherDataOrBatchIsRefusedAndLeavesTheTrainerUntouched() throws {
        let t = try Trainer(architecture: Self.arch, parameters: Self.arch.makeParameters(seed: 1), data: try Self.data(), config: Self.config, seed: 1)
        t.train(steps: 5)
        let state = t.exportState()
        let other = try Trainer(architecture: Self.arch, parameters: Self.arch.makeParameters(seed: 1), data: try Self.data(seed: 6).subset(Array(0..<49)),
                                config: Self.config, seed: 1)
        let before = other.exportState()
        #expect(throws: MLError.self) { try other.restoreState(state) }
        #expect(other.exportState() == before)
        var small = Self.config
        small.batchSize = 4
        let otherBatch = try Trainer(architecture: Self.arch, parameters: Self.arch.makeParameters(seed: 1), data: try Self.data(), config: small, seed: 1)
        #expect(throws: MLError.self) { try otherBatch.restoreState(state) }
        var wrong = state
        wrong.order[0] = wrong.order[1]
        #expect(throws: MLError.self) { try t.restoreState(wrong) }
        wrong = state
        wrong.velocity.removeLast()
        #expect(throws: MLError.self) { try t.restoreState(wrong) }
        #expect(throws: MLError.self) { try TrainerCheckpoint(parameters: t.parameters, state: wrong, metadata: [:]).encode() }
        #expect(throws: MLError.self) { try TrainerCheckpoint(trainer: t, metadata: ["trainer.step": "1"]).encode() }
        // restore(from:) checks weights and state before changing either.
        let untouched = t.exportState(), weights = t.parameters
        var nanWeights = TrainerCheckpoint(trainer: t, metadata: [:])
        nanWeights.parameters.storage[0] = .nan
        nanWeights.state.stepsDone = 1000
        #expect(throws: MLError.self) { try t.restore(from: nanWeights) }
        var badState = TrainerCheckpoint(trainer: t, metadata: [:])
        badState.parameters.storage[0] = 123
        badState.state.cursor = 51
        #expect(throws: MLError.self) { try t.restore(from: badState) }
        let otherArch = try MLPArchitecture(parsing: "16,5,3")
        #expect(throws: MLError.self) {
            try t.restore(from: TrainerCheckpoint(parameters: otherArch.makeParameters(seed: 1), state: untouched, metadata: [:]))
        }
        #expect(t.exportState() == untouched && t.parameters == weights)
    }

    @Test func leftoverTemporaryFilesAreRemovedAndNothingElse() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keep = ["model.safetensors", "notes.tmp-abc", "x.tmp-1", "x.tmp-1-2-3", ".tmp-1-2", "peers.json"]
        let leftovers = ["model.safetensors.tmp-1234-987654321", "model.safetensors.tmp-7-0"]
        for n in keep + leftovers { #expect(FileManager.default.createFile(atPath: dir + "/" + n, contents: Data([1]))) }
        try FileManager.default.createDirectory(atPath: dir + "/sub.tmp-1-2", withIntermediateDirectories: false)
        let removed = try CheckpointStore.removeLeftoverTemporaryFiles(in: dir)
        #expect(removed == leftovers.sorted())
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == (keep + ["sub.tmp-1-2"]).sorted())
        #expect(try CheckpointStore.removeLeftoverTemporaryFiles(in: dir + "/missing") == [])
        #expect(throws: MLError.self) { try CheckpointStore.removeLeftoverTemporaryFiles(in: dir + "/peers.json") }
    }

    @Test func writeIsAtomicAndLeavesNoTemporaryFile() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = try Trainer(architecture: Self.arch, parameters: Self.arch.makeParameters(seed: 1), data: try Self.data(), config: Self.config, seed: 1)
        let path = dir + "/model.safetensors"
        try CheckpointStore.write(TrainerCheckpoint(trainer: t, metadata: [:]), to: path)
        t.train(steps: 2)
        try CheckpointStore.write(TrainerCheckpoint(trainer: t, metadata: [:]), to: path)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["model.safetensors"])
        #expect(try CheckpointStore.read(path: path).state.stepsDone == 2)
        #expect(throws: MLError.self) { try CheckpointStore.read(path: dir + "/missing.safetensors") }
        #expect(throws: MLError.self) { try CheckpointStore.write(TrainerCheckpoint(trainer: t, metadata: [:]), to: dir + "/no/such/dir/m.safetensors") }
        // readForResume takes both: a checkpoint with its state, a plain model file without.
        let full = try CheckpointStore.readForResume(path: path)
        #expect(full.state == t.exportState() && full.parameters == t.parameters && full.metadata.isEmpty)
        try SafeTensors.write(t.parameters, metadata: ["arch": Self.arch.description], to: dir + "/old.safetensors")
        let old = try CheckpointStore.readForResume(path: dir + "/old.safetensors")
        #expect(old.state == nil && old.parameters == t.parameters && old.metadata == ["arch": Self.arch.description])
        var nan = t.parameters
        nan.storage[1] = .nan
        try SafeTensors.write(nan, metadata: [:], to: dir + "/nan.safetensors")
        #expect(throws: MLError.self) { try CheckpointStore.readForResume(path: dir + "/nan.safetensors") }
        var torn = try TrainerCheckpoint(trainer: t, metadata: [:]).encode()
        torn.removeLast(5)
        #expect(FileManager.default.createFile(atPath: dir + "/torn.safetensors", contents: Data(torn)))
        #expect(throws: MLError.self) { try CheckpointStore.readForResume(path: dir + "/torn.safetensors") }
        // A plain model file is not a checkpoint: refused with a message that says so.
        try SafeTensors.write(t.parameters, metadata: ["arch": Self.arch.description], to: dir + "/plain.safetensors")
        do {
            _ = try CheckpointStore.read(path: dir + "/plain.safetensors")
            Issue.record("a plain model file was read as a checkpoint")
        } catch let e as MLError {
            #expect(e.message.contains("plain.safetensors") && e.message.contains("trainer.format"))
        }
    }
}
